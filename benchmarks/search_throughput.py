"""Search throughput: candidates scored per minute by the offline ``evolve`` explorer, each
over the default β sweep on the search split of the four published AIME 2024 files, in
the sandbox, with 1 and with 2 workers (no MLflow: the loop and the sandbox only).

    AUTOTTS_DATA_DIR=../shared/data/autotts-replay python benchmarks/search_throughput.py
"""

from __future__ import annotations

import argparse
import time

from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.search.config import PUBLISHED_AIME24, SearchConfig
from mlflow_autotts.search.evolve import EvolveExplorer
from mlflow_autotts.search.loop import NullRecorder, Scorer, run_search
from mlflow_autotts.search.split import split_problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=12)
    args = ap.parse_args()
    search = [split_problems(ts)[0] for ts in load_datasets(list(PUBLISHED_AIME24))]
    base = SearchConfig()
    print(f"{args.candidates} candidates, betas {list(base.betas)}, {base.search_shuffles} shuffles, "
          f"{sum(len(s) for s in search)} search problems")
    print(f"{'workers':>8} {'seconds':>8} {'candidates/min':>15} {'failed':>7}")
    rates = {}
    for workers in (1, 2):
        cfg = SearchConfig(max_candidates=args.candidates, population=args.candidates, workers=workers)
        explorer = EvolveExplorer(seed=0)
        t = time.perf_counter()
        out = run_search(cfg, explorer, Scorer(cfg, search), NullRecorder(), explorer.archive, progress_bar=False)
        dt = time.perf_counter() - t
        rates[workers] = len(out.candidates) / dt * 60
        print(f"{workers:>8} {dt:>8.1f} {rates[workers]:>15.1f} {sum(not c.ok for c in out.candidates):>7}")
    print(f"speed-up with 2 workers: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
