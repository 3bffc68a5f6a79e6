"""Search throughput: candidates scored per minute by the offline ``evolve`` explorer, each
over the default β sweep on the search split of the four published AIME 2024 files, in
the sandbox, with 1 and with 2 workers (no MLflow: the loop and the sandbox only).

    AUTOTTS_DATA_DIR=../shared/data/autotts-replay python benchmarks/search_throughput.py [--baseline REV]

``--baseline REV`` also measures git revision REV (in a temporary worktree, just before this
tree) and prints both side by side with their ratio: what a change to the sandbox costs.
"""

from __future__ import annotations

import argparse
import time

from revisions import add_options, measure_both

from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts import settings
from mlflow_autotts.search.config import PUBLISHED_AIME24, SearchConfig
from mlflow_autotts.search.evolve import EvolveExplorer
from mlflow_autotts.search.loop import NullRecorder, Scorer, run_search
from mlflow_autotts.search.split import split_problems

WORKERS = (1, 2)


def measure(candidates: int) -> dict[str, float]:
    """Candidates per minute with each number of workers (and how many failed)."""
    search = [split_problems(ts)[0] for ts in load_datasets(list(PUBLISHED_AIME24))]
    out: dict[str, float] = {}
    for workers in WORKERS:
        cfg = settings.build(SearchConfig, None, {"max_candidates": candidates, "population": candidates,
                                                  "workers": workers})
        explorer = EvolveExplorer(seed=0)
        t = time.perf_counter()
        result = _search(cfg, explorer, search)
        dt = time.perf_counter() - t
        out[f"rate{workers}"] = len(result.candidates) / dt * 60
        out[f"seconds{workers}"] = dt
        out[f"failed{workers}"] = sum(not c.ok for c in result.candidates)
    return out


def _search(cfg: SearchConfig, explorer: EvolveExplorer, search: list):
    """One search with this tree's API, or, run at a ``--baseline`` from before the settings
    had parts, with the flat config that revision's loop took."""
    if hasattr(cfg, "budget"):
        return run_search(cfg.budget, explorer, Scorer(cfg.scoring, cfg.betas, search), NullRecorder(),
                          explorer.archive, workers=cfg.workers, progress_bar=False)
    return run_search(cfg, explorer, Scorer(cfg, search), NullRecorder(), explorer.archive, progress_bar=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=12)
    add_options(ap)
    args = ap.parse_args()
    both = measure_both(args, "benchmarks/search_throughput.py", ["--candidates", str(args.candidates)],
                        lambda: measure(args.candidates))
    if both is None:
        return
    now, base = both
    cfg = SearchConfig()
    print(f"{args.candidates} candidates, betas {list(cfg.betas)}, {cfg.scoring.search_shuffles} shuffles, "
          f"search split of {', '.join(PUBLISHED_AIME24)}")
    head = f"{'workers':>8} {'seconds':>8} {'candidates/min':>15} {'failed':>7}"
    print(head + (f" {'baseline s':>10} {'cand/min':>9} {'slowdown':>9}" if base else ""))
    for w in WORKERS:
        row = f"{w:>8} {now[f'seconds{w}']:>8.1f} {now[f'rate{w}']:>15.1f} {now[f'failed{w}']:>7.0f}"
        if base:
            row += f" {base[f'seconds{w}']:>10.1f} {base[f'rate{w}']:>9.1f} {base[f'rate{w}'] / now[f'rate{w}']:>8.2f}x"
        print(row)
    print(f"speed-up with 2 workers: {now['rate2'] / now['rate1']:.2f}x")


if __name__ == "__main__":
    main()
