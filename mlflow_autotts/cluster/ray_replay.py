"""The replay runner's work items as Ray tasks.

The work items are the local pool's (controller × dataset × shuffle chunk) and every task
runs ``replay.runner.solve_chunk``, so the numbers are the local pool's. The datasets and
specs go into the object store once per ``run``; a worker deserialises them once and builds
each controller once, then solves chunk after chunk. A worker that dies mid-task (killed,
out of memory, its node lost) is retried by Ray (``max_retries``); a task's result depends
only on its work item, so a retried one returns the same rows.
"""

from __future__ import annotations

from typing import Any, Iterator

import ray

from mlflow_autotts.cluster.runtime import MAX_RETRIES, DataRefs, connect, fetch, resolve
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.replay.runner import Chunk, Task, solve_chunk

_BUILT: dict[tuple[str, int], Any] = {}


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _solve(refs: list[ray.ObjectRef], spec_i: int, data_i: int, seeds: range) -> Chunk:
    specs_ref, data_ref = refs  # nested in a list: Ray hands them over unresolved
    specs, datasets = resolve(specs_ref), resolve(data_ref)
    key = (specs_ref.hex(), spec_i)
    controller = _BUILT.get(key)
    if controller is None:
        if len(_BUILT) > 64:
            _BUILT.clear()
        controller = _BUILT[key] = specs[spec_i].build()
    return spec_i, data_i, seeds, solve_chunk(specs[spec_i], controller, datasets[data_i], seeds)


class RayChunks:
    """``ChunkExecutor`` on the Ray cluster ``runtime.connect`` joins."""

    def __init__(self, workers: int | None = None):
        self.cpus = connect(workers)
        self.data_refs = DataRefs()

    def slots(self, requested: int | None) -> int:
        return min(requested, self.cpus) if requested else self.cpus

    def run(self, specs: list[ControllerSpec], datasets: list[TrajectorySet], tasks: list[Task],
            workers: int) -> Iterator[Chunk]:
        refs = [ray.put(specs), self.data_refs.ref(datasets)]
        pending = [_solve.remote(refs, si, di, seeds) for si, di, seeds in tasks]
        try:
            while pending:
                # block for one, then take every other finished one in the same call: one
                # round trip per batch, not per task, keeps the driver off the critical path
                done, pending = ray.wait(pending, num_returns=1)
                if pending:
                    more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                    done += more
                yield from fetch(done)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
