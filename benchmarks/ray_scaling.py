"""Ray against the local process pool: the reference matrix (4 files × 9 configurations ×
100 shuffles) and one search generation (``population`` candidates, sandboxed, default β
sweep on the search split), on the local pool and on a local Ray cluster (``ray start
--head`` on loopback) with 1 and 2 CPUs; then Ray's fixed cost per task.

    AUTOTTS_DATA_DIR=../shared/data/autotts-replay python benchmarks/ray_scaling.py

Every configuration is run once to warm up (pool fork, Ray worker start-up and imports)
and then timed ``--repeat`` times (best kept); numbers are checked to be identical.
Fixed cost per work item: items of no episodes sent through each executor (dispatch,
the worker's lookups, results back), which bounds how many workers one driver can feed.
"""

from __future__ import annotations

import argparse
import os
import time

import ray

from mlflow_autotts.cluster.head import LocalRayHead
from mlflow_autotts.cluster.ray_replay import RayChunks
from mlflow_autotts.cluster.ray_sandbox import RaySandbox
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.replay.runner import MIN_ITEM_EPISODES_PER_WORKER, ReplayConfig, LocalPool, evaluate_many, make_chunks
from mlflow_autotts.sandbox.process import ProcessSandbox
from mlflow_autotts.search.config import PUBLISHED_AIME24, SearchConfig, build_config
from mlflow_autotts.search.evolve import EvolveExplorer
from mlflow_autotts.search.loop import NullRecorder, Scorer, run_search, search_limits
from mlflow_autotts.search.split import split_problems

MATRIX = [ControllerSpec("sc", None, {"n": 64}), ControllerSpec("asc"), ControllerSpec("esc"),
          ControllerSpec("parallel_probe")] + [ControllerSpec("cmc", b) for b in (0.0, 0.25, 0.5, 0.75, 1.0)]


def best_of(repeat: int, fn) -> tuple[float, object]:
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def matrix(datasets, executor, workers: int, chunk: int | None = None):
    cfg = ReplayConfig(workers=workers, progress=False, chunk_shuffles=chunk)
    rs = evaluate_many(MATRIX, datasets, cfg, keep_episodes=False, executor=executor)
    return [(r.data, r.controller, r.beta, r.accuracy, r.mean_tokens) for r in rs]


def generation(search, sandbox, population: int, workers: int):
    cfg = build_config(None, {"max_candidates": population, "population": population, "workers": workers})
    explorer = EvolveExplorer(seed=0)
    out = run_search(cfg.budget, explorer, Scorer(cfg.scoring, cfg.betas, search, sandbox), NullRecorder(), explorer.archive,
                     workers=cfg.workers, progress_bar=False)
    return [(c.id, c.failure, [(s.beta, s.data, s.accuracy, s.mean_tokens) for s in c.scores]) for c in out.candidates]


def n_tasks(datasets, workers: int, chunk: int | None) -> int:
    return len(MATRIX) * len(datasets) * len(make_chunks(100, 0, workers, len(MATRIX) * len(datasets), chunk,
                                                         min(len(d) for d in datasets)))


def empty_items(executor, datasets, workers: int, n: int) -> float:
    """Seconds per work item of no episodes, dispatched and collected by ``executor``."""
    tasks = [(0, 0, range(0))] * n
    list(executor.run(MATRIX[:1], datasets, tasks[:50], workers))  # warm-up
    t = time.perf_counter()
    got = list(executor.run(MATRIX[:1], datasets, tasks, workers))
    assert len(got) == n
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--population", type=int, default=SearchConfig().budget.population)
    ap.add_argument("--empty-items", type=int, default=2000)
    args = ap.parse_args()
    os.environ.pop("RAY_ADDRESS", None)

    datasets = load_datasets([f"autotts:Qwen3-{m}/aime24" for m in ("0.6B", "1.7B", "4B", "8B")])
    search = [split_problems(ts)[0] for ts in load_datasets(list(PUBLISHED_AIME24))]
    limits = search_limits(SearchConfig().scoring)
    rows, overhead = [], []
    reference_m = reference_g = None
    for where, cpus in (("local", 1), ("local", 2), ("ray", 1), ("ray", 2)):
        head = LocalRayHead(cpus).wait_ready() if where == "ray" else None
        try:
            if head:
                os.environ["RAY_ADDRESS"] = head.address
                executor, box = RayChunks(), RaySandbox(limits)
            else:
                executor, box = LocalPool(), ProcessSandbox(limits)
            tm, res_m = best_of(args.repeat, lambda: matrix(datasets, executor, cpus))
            tg, res_g = best_of(1, lambda: generation(search, box, args.population, cpus))
            reference_m = reference_m or res_m
            reference_g = reference_g or res_g
            same = res_m == reference_m and res_g == reference_g
            per_task = empty_items(executor, datasets, cpus, args.empty_items)
            rows.append((where, cpus, tm, tg, same, n_tasks(datasets, cpus, None)))
            overhead.append((where, cpus, per_task))
        finally:
            if head:
                ray.shutdown()
                os.environ.pop("RAY_ADDRESS", None)
                head.stop()

    local = {cpus: (tm, tg) for where, cpus, tm, tg, _, _ in rows if where == "local"}
    print(f"reference matrix: {len(datasets)} files x {len(MATRIX)} configurations x 100 shuffles "
          f"({len(MATRIX) * sum(len(d) for d in datasets) * 100:,} episodes); "
          f"one search generation: {args.population} candidates x {len(SearchConfig().betas)} betas x "
          f"{SearchConfig().scoring.search_shuffles} shuffles on {sum(len(s) for s in search)} problems")
    print(f"{'executor':>9} {'cpus':>5} {'tasks':>6} {'matrix s':>9} {'vs local':>9} {'generation s':>13} "
          f"{'vs local':>9} {'identical':>10}")
    for where, cpus, tm, tg, same, tasks in rows:
        print(f"{where:>9} {cpus:>5} {tasks:>6} {tm:>9.2f} {tm / local[cpus][0]:>8.2f}x {tg:>13.2f} "
              f"{tg / local[cpus][1]:>8.2f}x {str(same):>10}")
    print(f"fixed cost of a work item ({args.empty_items} empty items through the executor; the driver's "
          "dispatch rate bounds how many workers it can feed):")
    for where, cpus, per_task in overhead:
        if (where, cpus) == ("local", 1):
            print("  local 1 cpu: runs in this process, nothing is dispatched")
            continue
        print(f"  {where:>5} {cpus} cpu: {per_task * 1e3:.3f} ms per item, {1 / per_task:,.0f} items/s")
    ray_o = max(o for where, _, o in overhead if where == "ray")
    print(f"100 nodes x 8 CPUs = 800 workers: an item must last >= 800 x {ray_o * 1e3:.2f} ms = {800 * ray_o:.2f} s "
          f"to keep them fed; the default cut puts >= {MIN_ITEM_EPISODES_PER_WORKER} x 800 = "
          f"{MIN_ITEM_EPISODES_PER_WORKER * 800:,} episodes in an item, >= {MIN_ITEM_EPISODES_PER_WORKER * 800 * 0.023e-3:.2f} s "
          "even for the cheapest built-in (asc, ~0.023 ms/episode)")

if __name__ == "__main__":
    main()
