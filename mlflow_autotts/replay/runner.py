"""The replay evaluation protocol: shuffles × problems, as work items on an executor.

Run ``s`` visits every problem's branches in ``random.Random(s).shuffle`` order. Work is
cut into chunks of consecutive shuffles for one (controller, dataset) pair, and every
executor solves a chunk with ``solve_chunk``. The default, ``LocalPool``, forks workers
with the datasets already in memory, so nothing large is pickled, and after each
controller has solved one episode here, so what it builds on first use is built once;
``cluster.ray_replay.RayChunks`` runs the same items on a Ray cluster. Small work
(``ReplayConfig.in_process_below``) runs in this process: a pool costs more.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.replay.episode import ReplayEpisode, shuffle_order
from mlflow_autotts.replay.results import EvalResult, shuffle_means
from mlflow_autotts.settings import bounded, check_bounds

EPISODE_COLUMNS = ("dataset", "problem", "shuffle", "answer", "correct", "tokens", "branches_opened", "intervals")
IN_PROCESS_EPISODES = 500
"""Below this many episodes in all, ``evaluate_many`` runs in this process: starting a pool
(fork, warm-up, join, rows pickled back) costs ~0.05-0.15 s, about what 500 episodes of the
slower built-ins (cmc: ~5,000 episodes/s per core) take in process."""


@dataclass(frozen=True)
class ReplayConfig:
    """How to run the replay protocol."""

    shuffles: int = bounded(100, ge=1)
    """Number of runs; run ``s`` uses seed ``first_seed + s``."""
    workers: int | None = bounded(None, ge=1)
    """Worker processes; None means all cores, 1 runs in this process."""
    first_seed: int = 0
    """Seed of the first run."""
    progress: bool = True
    """Show a progress bar on stderr."""
    chunk_shuffles: int | None = None
    """Shuffles per work item; None picks a size that keeps every worker busy."""
    in_process_below: int = bounded(IN_PROCESS_EPISODES, ge=0)
    """Run in this process, without a pool, when there are fewer episodes than this in all:
    starting workers costs more than such work (0: always use the pool when workers > 1)."""

    def __post_init__(self) -> None:
        check_bounds(self, bad=lambda name, why: ValueError(f"{name} {why}"))


# ---------------------------------------------------------------------------- work items
Task = tuple[int, int, range]
"""A work item: (spec index, dataset index, consecutive shuffle seeds)."""
Chunk = tuple[int, int, range, list[tuple]]
"""A finished work item: its task and one row per episode (``solve_chunk``)."""


def solve_chunk(spec: ControllerSpec, controller: Any, ts: TrajectorySet, seeds: range) -> list[tuple]:
    """Solve every problem of ``ts`` for each seed with ``controller`` (built from ``spec``);
    one row per episode, grouped by seed, problems in order. Wherever it runs (this process,
    a forked worker, a Ray worker), this is the one loop that makes the numbers."""
    solve = controller.solve
    rows = []
    for seed in seeds:
        for p, prob in enumerate(ts.problems):
            br = prob.branches
            ep = ReplayEpisode(br, shuffle_order(br.n_branches, seed))
            try:
                answer = solve(ep)
            except Exception as exc:
                raise chunk_failed(spec, ts, p, seed, exc) from None
            rows.append((p, seed, answer, answer == prob.gold_answer, ep.tokens_used, ep.branches_opened, ep.intervals))
    return rows


def chunk_failed(spec: ControllerSpec, ts: TrajectorySet, p: int, seed: int, exc: Exception) -> ControllerError:
    return ControllerError(f"controller {spec.label!r} raised {type(exc).__name__} on "
                           f"{ts.name}, problem {p}, shuffle {seed}: {exc}")


MIN_ITEM_EPISODES_PER_WORKER = 64
"""A work item holds at least this many episodes per worker, so that dispatching never
limits a large cluster. A Ray driver hands out ~850-1,050 items/s (1.0-1.2 ms per item on
this 2-core machine, ``benchmarks/ray_scaling.py``) and the cheapest built-in solves an
episode in ~0.023 ms (asc), so W workers stay fed while an item lasts at least W × 1.2 ms,
i.e. holds at least W × 52 episodes. Locally (W ≤ 64) the ~4-items-per-worker rule
already gives larger items."""


def make_chunks(shuffles: int, first: int, workers: int, jobs: int, size: int | None,
                problems: int = 1) -> list[range]:
    """Shuffle ranges of ``size``; None: about 4 work items per worker overall, each of at
    least ``MIN_ITEM_EPISODES_PER_WORKER × workers`` episodes (``problems`` per shuffle)."""
    if size is None:
        per_job = max(1, (4 * workers + jobs - 1) // jobs)
        floor = -(-MIN_ITEM_EPISODES_PER_WORKER * workers // max(1, problems))
        size = max(1, -(-shuffles // per_job), floor)
    return [range(first + lo, first + min(lo + size, shuffles)) for lo in range(0, shuffles, size)]


class ChunkExecutor(Protocol):
    """Where work items run: the local process pool (``LocalPool``, the default) or a
    cluster (``cluster.ray_replay.RayChunks``). Every executor runs ``solve_chunk``, so
    the numbers do not depend on the choice."""

    def slots(self, requested: int | None) -> int:
        """Work items that can run at once (``requested``: the configured workers, if any)."""

    def run(self, specs: list[ControllerSpec], datasets: list[TrajectorySet], tasks: list[Task],
            workers: int) -> Iterator[Chunk]:
        """Every task's rows, in any order; a controller's error is raised as ``ControllerError``."""


# ---------------------------------------------------------------------------- local pool
_DATASETS: list[TrajectorySet] = []
_SPECS: list[ControllerSpec] = []
_BUILT: dict[int, Any] = {}


def _init_worker(datasets: list[TrajectorySet] | None, specs: list[ControllerSpec] | None) -> None:
    global _DATASETS, _SPECS
    if datasets is not None:
        _DATASETS, _SPECS = datasets, specs or []
    _BUILT.clear()


def _run_chunk(spec_i: int, data_i: int, seeds: range) -> Chunk:
    controller = _BUILT.get(spec_i)
    if controller is None:
        controller = _BUILT[spec_i] = _SPECS[spec_i].build()
    return spec_i, data_i, seeds, solve_chunk(_SPECS[spec_i], controller, _DATASETS[data_i], seeds)


def _warm_up(seed: int) -> None:
    """Solve one episode per spec in this process before the workers are forked.

    Whatever a controller builds lazily on first use (the Beta-confidence table, whose scipy
    import alone takes ~1 s) is then built once here and inherited by every worker, instead
    of once in each of them while they compete for the cores. The answer is discarded: a
    controller keeps no state between episodes, and workers build their own instances."""
    ts = next((t for t in _DATASETS if t.problems), None)
    if ts is None:
        return
    br = ts.problems[0].branches
    for spec in _SPECS:
        try:
            spec.build().solve(ReplayEpisode(br, shuffle_order(br.n_branches, seed)))
        except Exception as exc:
            raise chunk_failed(spec, ts, 0, seed, exc) from None


class LocalPool:
    """This machine's cores: forked workers that inherit the datasets (nothing large is
    pickled), or this process alone for one worker or one task."""

    def slots(self, requested: int | None) -> int:
        return requested or os.cpu_count() or 1

    def run(self, specs: list[ControllerSpec], datasets: list[TrajectorySet], tasks: list[Task],
            workers: int) -> Iterator[Chunk]:
        try:
            if workers == 1 or len(tasks) == 1:
                _init_worker(datasets, specs)
                for t in tasks:
                    yield _run_chunk(*t)
                return
            with _pool(min(workers, len(tasks)), datasets, specs) as pool:
                futures = [pool.submit(_run_chunk, *t) for t in tasks]
                try:
                    for fut in as_completed(futures):
                        yield fut.result()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        finally:
            _init_worker([], [])


def _pool(workers: int, datasets: list[TrajectorySet], specs: list[ControllerSpec]) -> ProcessPoolExecutor:
    if "fork" in mp.get_all_start_methods():
        _init_worker(datasets, specs)  # inherited by the forked workers
        _warm_up(0)
        return ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_init_worker,
                                   initargs=(None, None))
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(datasets, specs))


def episode_flags(keep_episodes: bool | Sequence[bool], n_specs: int) -> list[bool]:
    """``keep_episodes`` (one flag for all specs, or one per spec) as one flag per spec."""
    keep = [keep_episodes] * n_specs if isinstance(keep_episodes, bool) else list(keep_episodes)
    if len(keep) != n_specs:
        raise ValueError(f"keep_episodes has {len(keep)} flags for {n_specs} specs")
    return keep


def evaluate_many(specs: Sequence[ControllerSpec], datasets: Sequence[TrajectorySet],
                  config: ReplayConfig = ReplayConfig(),
                  keep_episodes: bool | Sequence[bool] = True,
                  executor: ChunkExecutor | None = None) -> list[EvalResult]:
    """Every spec on every dataset; results in (spec, dataset) order.

    ``keep_episodes`` is one flag for all specs or one per spec: the per-episode tables
    are built only for the specs that keep them. ``executor`` runs the work items (default:
    ``LocalPool``); work below ``config.in_process_below`` episodes runs in this process
    whatever the executor."""
    from tqdm import tqdm

    specs, datasets = list(specs), list(datasets)
    keep = episode_flags(keep_episodes, len(specs))
    labels = []
    for spec in specs:  # fail fast, in this process, on a bad spec
        built = spec.build()
        labels.append((spec.label, built.config()))
    pool = executor or LocalPool()
    workers = pool.slots(config.workers)
    jobs = [(si, di) for si in range(len(specs)) for di in range(len(datasets))]
    seeds = make_chunks(config.shuffles, config.first_seed, workers, len(jobs), config.chunk_shuffles,
                        min((len(d) for d in datasets), default=1))
    tasks = [(si, di, r) for si, di in jobs for r in seeds]
    total = sum(len(r) * len(datasets[di]) for _, di, r in tasks)
    if total < config.in_process_below:
        pool, workers = LocalPool(), 1
    collected: dict[tuple[int, int], list[tuple[range, list[tuple]]]] = {j: [] for j in jobs}
    with tqdm(total=total, unit="ep", disable=not config.progress, desc="replay", leave=False) as bar:
        for si, di, r, rows in pool.run(specs, datasets, tasks, workers):
            collected[(si, di)].append((r, rows))
            bar.update(len(rows))

    results = []
    for si, di in jobs:
        ts = datasets[di]
        n = len(ts)
        parts = sorted(collected[(si, di)], key=lambda x: x[0].start)
        rows = [row for _, rs in parts for row in rs]
        per_shuffle = [(sum(1 for r in rows[k:k + n] if r[3]), sum(r[4] for r in rows[k:k + n]))
                       for k in range(0, len(rows), n)]  # rows are grouped by shuffle, problems in order
        accuracy, mean_tokens = shuffle_means(per_shuffle, n)
        label, cfg = labels[si]
        beta = cfg.get("beta") if specs[si].controller_class().uses_beta else None
        params = {k: v for k, v in cfg.items() if k != "beta"}
        results.append(EvalResult(
            data=ts.name, controller=label, beta=beta, params=params, shuffles=config.shuffles, n_problems=n,
            accuracy=accuracy, mean_tokens=mean_tokens, episodes=episode_frame(ts.name, rows) if keep[si] else None))
    return results


def episode_frame(dataset: str, rows: list[tuple]) -> Any:
    """The per-episode table (``EPISODE_COLUMNS``) of ``rows`` as ``_run_chunk`` returns them,
    built column by column in one step; answers that are not text are shown by ``repr``."""
    import pandas as pd

    if not rows:
        frame = pd.DataFrame(rows, columns=list(EPISODE_COLUMNS[1:]))
        frame.insert(0, "dataset", dataset)
        return frame
    columns = list(zip(*rows))
    answers = [a if a is None or isinstance(a, str) else repr(a) for a in columns[2]]
    data = {"dataset": [dataset] * len(rows), "problem": columns[0], "shuffle": columns[1], "answer": answers,
            "correct": columns[3], "tokens": columns[4], "branches_opened": columns[5], "intervals": columns[6]}
    return pd.DataFrame({k: list(v) for k, v in data.items()}, columns=list(EPISODE_COLUMNS))


def evaluate(spec: ControllerSpec, datasets: Sequence[TrajectorySet], config: ReplayConfig = ReplayConfig(),
             keep_episodes: bool = True, executor: ChunkExecutor | None = None) -> list[EvalResult]:
    """One controller on each dataset."""
    return evaluate_many([spec], datasets, config, keep_episodes, executor)
