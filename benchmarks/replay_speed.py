"""Replay speed: loading each published file (JSON and Parquet, best of ``--repeat``), then
cmc β=0.5 on Qwen3-4B/aime24 (30 problems × 100 shuffles = 3,000 episodes) with one
worker and with all cores, then the whole reference matrix (4 files × 9 configurations ×
100 shuffles).

    AUTOTTS_DATA_DIR=../shared/data/autotts-replay python benchmarks/replay_speed.py

The paper's reference evaluator takes about 16 s for the 3,000 episodes on one core of
this machine (per-step trace dictionaries and a scipy ``beta.cdf`` call per check); pass
``--reference-seconds`` to compare against your own measurement of it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.controllers.voting import beta_confidence
from mlflow_autotts.data import read_json, read_parquet, write_parquet
from mlflow_autotts.data.uris import load_datasets, resolve_published
from mlflow_autotts.replay.runner import ReplayConfig, evaluate_many

MODELS = ["Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B"]
MATRIX = [ControllerSpec("sc", None, {"n": 64}), ControllerSpec("asc"), ControllerSpec("esc"),
          ControllerSpec("parallel_probe")] + [ControllerSpec("cmc", b) for b in (0.0, 0.25, 0.5, 0.75, 1.0)]


def best_of(repeat: int, fn, *args) -> tuple[float, Any]:
    """(the fastest of ``repeat`` calls in seconds, the last call's result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def timed(specs, datasets, workers: int, repeat: int) -> tuple[float, list]:
    config = ReplayConfig(workers=workers, progress=False)
    return best_of(repeat, lambda: evaluate_many(specs, datasets, config, keep_episodes=False))


def load_times(repeat: int) -> None:
    """Reading a published file is on every evaluation's path: JSON as published, Parquet
    as ``collect`` writes it."""
    print(f"{'file':<22} {'JSON ms':>8} {'Parquet ms':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for m in MODELS:
            src = resolve_published(f"autotts:{m}/aime24")
            pq = Path(tmp) / f"{m}.parquet"
            write_parquet(read_json(src), pq)
            (tj, _), (tp, _) = best_of(repeat, read_json, src), best_of(repeat, read_parquet, pq)
            print(f"{m + '/aime24':<22} {tj * 1e3:>8.1f} {tp * 1e3:>11.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-seconds", type=float, default=16.0,
                    help="the reference evaluator's time for the 3,000 episodes on one core")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--skip-matrix", action="store_true")
    args = ap.parse_args()

    cores = os.cpu_count() or 1
    load_times(args.repeat)
    beta_confidence(1, 1)  # build the confidence table once, outside the timings
    qwen4b = load_datasets(["autotts:Qwen3-4B/aime24"])
    spec = [ControllerSpec("cmc", 0.5)]
    evaluate_many(spec, qwen4b, ReplayConfig(workers=1, shuffles=2, progress=False), keep_episodes=False)

    episodes = 100 * len(qwen4b[0])
    t1, r1 = timed(spec, qwen4b, 1, args.repeat)
    tn, rn = timed(spec, qwen4b, cores, args.repeat)
    same = (r1[0].accuracy, r1[0].mean_tokens) == (rn[0].accuracy, rn[0].mean_tokens)
    print(f"cmc beta=0.5 on Qwen3-4B/aime24: {episodes} episodes, accuracy {r1[0].accuracy:.2f}%, "
          f"mean tokens {r1[0].mean_tokens:,.0f}")
    print(f"{'workers':>8} {'seconds':>8} {'episodes/s':>11} {'vs reference':>13}")
    for w, t in ((1, t1), (cores, tn)):
        print(f"{w:>8} {t:>8.3f} {episodes / t:>11,.0f} {args.reference_seconds / t:>12.1f}x")
    print(f"identical numbers with 1 and {cores} workers: {same}")

    if not args.skip_matrix:
        datasets = load_datasets([f"autotts:{m}/aime24" for m in MODELS])
        tm, _ = timed(MATRIX, datasets, cores, 1)
        print(f"full matrix ({len(datasets)} files x {len(MATRIX)} configurations x 100 shuffles, "
              f"{cores} workers): {tm:.1f} s")


if __name__ == "__main__":
    main()
