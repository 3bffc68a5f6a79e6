"""Where work runs: this machine's process pool (the default) or a Ray cluster.

The replay runner takes a ``ChunkExecutor`` and the search a ``Sandbox``; this package
makes either for the executor a user names (``choice``). Ray is the scheduler, never the
sandbox: a candidate scored on Ray still runs in the project's ``ProcessSandbox`` on the
worker node, with the same limits, failures and trusted cost recomputation
(``docs/architecture.md``, "Running on a Ray cluster").
"""
