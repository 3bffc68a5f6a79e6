"""Running untrusted controller code: the policy, the wire protocol, the child (``worker``)
and the trusted parent that spawns it and recomputes every number (``parent``)."""
