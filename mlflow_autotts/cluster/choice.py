"""The executor a user names (``--executor local|ray``), as the objects the core takes.

Ray is an optional extra and its import costs ~1 s, so its modules are imported only when
it is chosen.
"""

from __future__ import annotations

import importlib.util

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.replay.runner import ChunkExecutor, LocalPool
from mlflow_autotts.sandbox.interface import Sandbox
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.parent import ProcessSandbox

EXECUTORS = ("local", "ray")
"""``local``: this machine's process pool. ``ray``: the cluster at ``RAY_ADDRESS``, or a
local Ray instance started for the command when it is unset."""


class ExecutorError(AutoTTSError):
    """An unknown executor, or Ray chosen where it is not installed."""


def check_executor(name: str, where: str) -> str:
    """``name`` if it is a known executor, else an error naming ``where`` it was set."""
    if name not in EXECUTORS:
        raise ExecutorError(f"{where}: executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    return name


def _ray_modules() -> None:
    if importlib.util.find_spec("ray") is None:
        raise ExecutorError("executor 'ray' needs Ray: pip install 'mlflow-autotts[ray]' "
                            "(on every node of the cluster, with the same version of this package)")


def chunk_executor(name: str, workers: int | None = None) -> ChunkExecutor:
    """The replay runner's executor for ``name``; ``workers`` caps a local Ray instance's CPUs."""
    if check_executor(name, "chunk_executor") == "local":
        return LocalPool()
    _ray_modules()
    from mlflow_autotts.cluster.ray_replay import RayChunks

    return RayChunks(workers)


def sandbox(name: str, limits: SandboxLimits, workers: int | None = None) -> Sandbox:
    """The sandbox candidates are scored in for ``name``."""
    if check_executor(name, "sandbox") == "local":
        return ProcessSandbox(limits)
    _ray_modules()
    from mlflow_autotts.cluster.ray_sandbox import RaySandbox

    return RaySandbox(limits, workers)
