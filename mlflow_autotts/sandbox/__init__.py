"""Running untrusted controller code (``docs/architecture.md``, "The trust boundary").

Trusted side: ``interface`` (the ``Sandbox`` the search depends on), ``parent``
(``ProcessSandbox``: batch scoring in replay), ``session`` (``SandboxedController``: a
controller for serving whose episode stays here), ``scoring`` (``score_source`` for
commands that need numbers), ``process`` (one child: spawn, pipes, isolation, death),
``cost`` (cost rules from sealed summaries), ``limits``, ``outcome``.
Child side: ``worker`` (entry point), ``lockdown``, ``oracle``.
Both: ``protocol`` (every message, field and operation) and ``policy`` (the one import
allowlist, also read by the explorer's lint and prompt).

This package imports nothing here: the child imports ``mlflow_autotts.sandbox.worker``
and must not load the trusted side (numpy, scipy, pandas).
"""
