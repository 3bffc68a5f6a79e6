"""The executor a user names (``--executor local|ray``), as the objects the core takes.

Ray is an optional extra and its import costs ~1 s, so its modules are imported only when
it is chosen.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.plugins import Registry
from mlflow_autotts.replay.runner import ChunkExecutor, LocalPool
from mlflow_autotts.sandbox.interface import Sandbox
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.process import ProcessSandbox


@dataclass(frozen=True)
class Executor:
    """Where replay and sandboxed scoring run: the two objects the core takes."""

    chunks: Callable[[int | None], ChunkExecutor]
    """The replay runner's executor; the argument caps a local Ray instance's CPUs."""
    sandbox: Callable[[SandboxLimits, int | None], Sandbox]
    """The sandbox candidates are scored in."""


class ExecutorError(AutoTTSError):
    """An unknown executor, or Ray chosen where it is not installed."""


EXECUTOR_REGISTRY: Registry[Executor] = Registry("executor", error=ExecutorError)


def _ray_modules() -> None:
    if importlib.util.find_spec("ray") is None:
        raise ExecutorError("executor 'ray' needs Ray: pip install 'mlflow-autotts[ray]' "
                            "(on every node of the cluster, with the same version of this package)")


def _ray_chunks(workers: int | None) -> ChunkExecutor:
    _ray_modules()
    from mlflow_autotts.cluster.ray_replay import RayChunks  # Ray's import costs ~1 s: only when chosen

    return RayChunks(workers)


def _ray_sandbox(limits: SandboxLimits, workers: int | None) -> Sandbox:
    _ray_modules()
    from mlflow_autotts.cluster.ray_sandbox import RaySandbox

    return RaySandbox(limits, workers)


EXECUTOR_REGISTRY.add("local", Executor(lambda _workers: LocalPool(), lambda limits, _workers: ProcessSandbox(limits)))
EXECUTOR_REGISTRY.add("ray", Executor(_ray_chunks, _ray_sandbox))
EXECUTORS = tuple(EXECUTOR_REGISTRY.names())
"""``local``: this machine's process pool. ``ray``: the cluster at ``RAY_ADDRESS``, or a
local Ray instance started for the command when it is unset."""


def check_executor(name: str, where: str) -> str:
    """``name`` if it is a known executor, else an error naming ``where`` it was set."""
    EXECUTOR_REGISTRY.get(name, where)
    return name


def chunk_executor(name: str, workers: int | None = None) -> ChunkExecutor:
    """The replay runner's executor for ``name``; ``workers`` caps a local Ray instance's CPUs."""
    return EXECUTOR_REGISTRY.get(name, "chunk_executor").chunks(workers)


def sandbox(name: str, limits: SandboxLimits, workers: int | None = None) -> Sandbox:
    """The sandbox candidates are scored in for ``name``."""
    return EXECUTOR_REGISTRY.get(name, "sandbox").sandbox(limits, workers)
