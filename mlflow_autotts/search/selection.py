"""Choosing the winner on data the explorer never saw.

The best ``finalists`` candidates (by their search-split objective) are re-scored in the
sandbox on the validation data with the full shuffles; SC@64 and CMC are replayed
in-process on the same data. The winner is the (candidate, β) with the fewest mean
tokens among those whose validation accuracy (mean over datasets) is at least SC@64's plus
``select_margin`` (without the margin if none reaches that); ties go to higher accuracy.
When none reaches SC@64 at all, the most accurate point is chosen and the selection says so.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.controllers.reference import SC64
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.replay.results import EvalResult, by_beta, mean_over_datasets
from mlflow_autotts.replay.runner import EvalConfig, evaluate_many
from mlflow_autotts.sandbox.interface import Sandbox
from mlflow_autotts.sandbox.outcome import CandidateOutcome
from mlflow_autotts.sandbox.parent import ProcessSandbox
from mlflow_autotts.search.archive import Archive
from mlflow_autotts.search.config import SearchConfig
from mlflow_autotts.search.loop import search_limits
from mlflow_autotts.search.types import Candidate

COMPARISON_BETAS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Point:
    """A controller at one β, averaged over the validation datasets."""

    label: str
    beta: float | None
    accuracy: float
    mean_tokens: float
    per_data: dict[str, tuple[float, float]] = field(default_factory=dict)
    """dataset -> (accuracy, mean tokens)."""


@dataclass
class Selection:
    winner: Candidate | None
    winner_point: Point | None
    reached_sc64: bool
    sc64: Point
    baselines: list[Point]
    """CMC at several β, ASC and ESC on the validation data, for the comparison table."""
    finalists: dict[str, list[Point]]
    """candidate id -> its validation points by β."""
    failures: dict[str, str] = field(default_factory=dict)
    """Finalists whose validation run failed."""


def mean_points(label: str, results: Sequence[EvalResult]) -> list[Point]:
    """Per-(dataset, β) results averaged over datasets: one point per β, by β (None first)."""
    return [Point(label, beta, *mean_over_datasets(rs), {r.data: (r.accuracy, r.mean_tokens) for r in rs})
            for beta, rs in by_beta(results).items()]


def pick(points: Sequence[Point], threshold: float) -> tuple[Point | None, bool]:
    """The cheapest point at or above ``threshold`` (ties: more accurate), else the most accurate."""
    ok = [p for p in points if p.accuracy >= threshold]
    if ok:
        return min(ok, key=lambda p: (p.mean_tokens, -p.accuracy)), True
    if not points:
        return None, False
    return max(points, key=lambda p: (p.accuracy, -p.mean_tokens)), False


def baselines(validation: Sequence[TrajectorySet], shuffles: int, workers: int | None,
              progress: bool = False) -> tuple[Point, list[Point]]:
    """SC@64 and the comparison baselines on the validation data (trusted, in-process)."""
    specs = [SC64, ControllerSpec("asc"), ControllerSpec("esc")] + [
        ControllerSpec("cmc", b) for b in COMPARISON_BETAS]
    results = evaluate_many(specs, validation, EvalConfig(shuffles=shuffles, workers=workers, progress=progress),
                            keep_episodes=False)
    n = len(validation)
    groups = [results[i * n:(i + 1) * n] for i in range(len(specs))]
    sc64 = mean_points("sc@64", groups[0])[0]
    rest = mean_points("asc", groups[1]) + mean_points("esc", groups[2])
    for g in groups[3:]:
        rest += mean_points("cmc", g)
    return sc64, rest


def select(config: SearchConfig, archive: Archive, validation: Sequence[TrajectorySet],
           progress: bool = False, sandbox: Sandbox | None = None) -> Selection:
    """Re-score the finalists on ``validation`` in ``sandbox`` (default: a process sandbox
    with five times the search's per-candidate time) and pick the winner."""
    sc64, base = baselines(validation, config.final_shuffles, config.workers or None, progress)
    ranked = [archive.candidates[cid] for cid in archive.ranked(distinct=True)][: config.finalists]
    box = sandbox or ProcessSandbox(search_limits(config, scale=5))
    seeds = list(range(config.final_shuffles))
    finalists: dict[str, list[Point]] = {}
    failures: dict[str, str] = {}
    def score(c: Candidate) -> tuple[Candidate, CandidateOutcome]:
        return c, box.score(c.proposal.source, validation, config.betas, seeds, class_name=c.proposal.class_name)

    with ThreadPoolExecutor(max_workers=config.worker_count()) as pool:
        for c, outcome in pool.map(score, ranked):
            if outcome.ok:
                finalists[c.id] = mean_points(c.id, outcome.results)
            else:
                failures[c.id] = str(outcome.failure)
    all_points = [p for pts in finalists.values() for p in pts]
    best, reached = pick(all_points, sc64.accuracy + config.select_margin)
    if not reached and config.select_margin > 0:
        best, reached = pick(all_points, sc64.accuracy)
    winner = archive.candidates[best.label] if best else None
    return Selection(winner, best, reached, sc64, base, finalists, failures)

