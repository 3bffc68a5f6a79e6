"""Candidates scored on a Ray cluster, each in the project's sandbox on its worker node.

Ray is the scheduler, not the sandbox: the task runs ``ProcessSandbox(limits).score`` on
the worker, which starts the same locked-down child there, recomputes costs and checks
answers on that node's trusted side, and observes and records that node's isolation (and
refuses weaker isolation than the limits ask, unless allowed). The outcome that comes back
is the local one's, failures included. The datasets go into the object store once per
driver; the gold answers reach the worker process (trusted code), never the candidate.
A worker killed mid-candidate is retried by Ray; the candidate's child dies with its pipes.
"""

from __future__ import annotations

from typing import Any, Sequence

import ray

from mlflow_autotts.cluster.runtime import MAX_RETRIES, DataRefs, connect, fetch, resolve
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.sandbox.interface import Sandbox
from mlflow_autotts.sandbox.limits import Isolation, SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateOutcome
from mlflow_autotts.sandbox.process import ProcessSandbox


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _score(limits: SandboxLimits, source: str, refs: list[ray.ObjectRef], betas: list, seeds: list,
           class_name: str | None, params: dict | None, full_actions: bool) -> CandidateOutcome:
    datasets = resolve(refs[0])
    return ProcessSandbox(limits).score(source, datasets, betas, seeds, class_name=class_name, params=params,
                                        full_actions=full_actions)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _isolation(limits: SandboxLimits) -> Isolation:
    return ProcessSandbox(limits).isolation()


class RaySandbox(Sandbox):
    """``Sandbox`` whose candidates run on the Ray cluster ``runtime.connect`` joins."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), workers: int | None = None):
        self.limits = limits
        self.cpus = connect(workers)
        self.data_refs = DataRefs()

    def parallelism(self) -> int:
        return self.cpus

    def score(self, source: str, datasets: Sequence[TrajectorySet], betas: Sequence[float | None],
              seeds: Sequence[int], *, class_name: str | None = None, params: dict[str, Any] | None = None,
              full_actions: bool = False) -> CandidateOutcome:
        ref = self.data_refs.ref(list(datasets))
        return fetch(_score.remote(self.limits, source, [ref], list(betas), list(seeds), class_name, params,
                                   full_actions))

    def isolation(self) -> Isolation:
        """The isolation on a worker node (every outcome records its own node's)."""
        return fetch(_isolation.remote(self.limits))
