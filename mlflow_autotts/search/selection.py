"""Choosing the winner on data the explorer never saw, by lower confidence bounds.

The best ``finalists`` candidates (by their search-split objective, near-copies skipped:
``finalists_of``) are re-scored in the
sandbox on the validation data with the full shuffles; SC@N (every branch of a question, up
to 64: ``controllers.reference.sc_label``), ASC, ESC and CMC at ``CMC_BETAS`` are replayed in-process
on the same data. Every configuration is reduced to
per-problem means (``bootstrap.ProblemTable``) and a paired bootstrap over the validation
problems (stratified by dataset) gives, for each finalist:

- at each β, its accuracy gain over SC@N (points) with a one-sided lower bound at
  ``select_confidence``;
- for its whole curve, the gain over CMC's curve (``curves.gain_over``, points) with its
  lower bound, and whether it dominates every CMC β point (at least CMC's accuracy with
  fewer tokens) on the validation data.

The winner is the (finalist, β) with the fewest mean validation tokens among the *sure*
points (accuracy gain over SC@N with a lower bound ≥ ``select_margin``) in the first
non-empty tier: (1) its curve dominates every CMC point and its curve-gain lower bound is
≥ 0; (2) it dominates; (3) its curve-gain lower bound is ≥ 0; (4) the finalist with the
highest curve-gain lower bound; (5) no sure point: accuracy ≥ SC@N's as measured.
Otherwise the point with the highest lower bound over SC@N is chosen (tier 0) and the
selection says it does not reach SC@N.
A lower bound, not a mean, protects against the luck of a few validation problems.

No winner at all when SC@N scores under ``min_reference_accuracy`` on validation
(``Selection.refused`` says so): when the reference answers almost nothing right, every
controller "reaches" it at about 0% and the cheapest one "wins" by saving tokens on
wrong answers. The finalists are still scored, for the table.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.controllers.reference import SC64, sc_label
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.replay.results import EvalResult, by_beta, mean_over_datasets
from mlflow_autotts.replay.runner import ChunkExecutor, ReplayConfig, evaluate_many
from mlflow_autotts.sandbox.interface import Sandbox
from mlflow_autotts.sandbox.outcome import CandidateOutcome
from mlflow_autotts.sandbox.process import ProcessSandbox
from mlflow_autotts.search.archive import Archive
from mlflow_autotts.search.bootstrap import ProblemTable, Resampler, interval
from mlflow_autotts.search.config import ScoringConfig, SelectionConfig
from mlflow_autotts.search.curves import dominance_margins, gain_over
from mlflow_autotts.search.loop import search_limits
from mlflow_autotts.search.references import CMC_BUDGET_BETA
from mlflow_autotts.search.types import Candidate

CMC_BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""CMC's β points a winner's curve must dominate (the evaluate recipe's sweep)."""


@dataclass(frozen=True)
class Point:
    """A controller at one β, averaged over the validation datasets."""

    label: str
    beta: float | None
    accuracy: float
    mean_tokens: float
    per_data: dict[str, tuple[float, float]] = field(default_factory=dict)
    """dataset -> (accuracy, mean tokens)."""
    vs_sc64: tuple[float, float, float] | None = None
    """Accuracy minus SC@N's (points): (lower bound at the selection's confidence, mean,
    upper bound of the two-sided interval at that confidence); finalists only."""


@dataclass(frozen=True)
class CurveStats:
    """A finalist's whole β-curve against CMC's on the validation data."""

    gain_over_cmc: tuple[float, float, float]
    """Mean accuracy gain over CMC's curve across its token span (points): (lower bound,
    estimate, upper bound)."""
    dominance: tuple[float, ...]
    """Per CMC β point (ascending tokens): share of CMC's tokens saved while reaching its
    accuracy (negative: more tokens needed or never reached)."""
    dominance_probability: float
    """Share of bootstrap resamples in which the curve dominates every CMC point."""

    @property
    def dominates(self) -> bool:
        return bool(self.dominance) and min(self.dominance) > 0


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
    curves: dict[str, CurveStats] = field(default_factory=dict)
    """candidate id -> its curve against CMC's."""
    tier: int = 0
    """Which rule chose the winner (1 = strongest; 0 = none reached SC@N; see module doc)."""
    confidence: float = 0.9
    """One-sided confidence of the lower bounds."""
    tables: dict[str, dict[float | None, ProblemTable]] = field(default_factory=dict, repr=False)
    """Per-problem validation tables: finalist id (or ``sc_label``, ``cmc``, ``asc``, ``esc``)
    -> β -> table (for pooling folds of a cross-validation)."""
    sc_label: str = "sc@64"
    """SC@N's name with the validation data's N (``controllers.reference.sc_label``)."""
    refused: str | None = None
    """Why no winner was declared although finalists scored (SC@N under
    ``min_reference_accuracy``); None otherwise."""

    @property
    def winner_curve(self) -> CurveStats | None:
        return self.curves.get(self.winner.id) if self.winner else None


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


def _tables_of_results(results: Sequence[EvalResult], sizes: dict[str, int]) -> dict[float | None, ProblemTable]:
    out = {}
    for beta, rs in by_beta(results).items():
        rows = [(r.data, int(p), bool(c), int(t)) for r in rs
                for p, c, t in zip(r.episodes["problem"], r.episodes["correct"], r.episodes["tokens"])]
        out[beta] = ProblemTable.from_rows(rows, sizes)
    return out


def tables_of_outcome(outcome: CandidateOutcome, sizes: dict[str, int]) -> dict[float, ProblemTable]:
    """Per-β tables of a sandboxed scoring, from the episodes the trusted side re-billed."""
    rows: dict[float, list] = {}
    for e in outcome.episodes:
        rows.setdefault(e.beta, []).append((e.dataset, e.problem, e.correct, e.tokens))
    return {b: ProblemTable.from_rows(r, sizes) for b, r in sorted(rows.items())}


def baselines(validation: Sequence[TrajectorySet], shuffles: int, workers: int | None,
              progress: bool = False, executor: ChunkExecutor | None = None
              ) -> tuple[Point, list[Point], dict[tuple[str, float | None], ProblemTable]]:
    """SC@N and the comparison baselines on the validation data (trusted built-ins, on
    ``executor``), with their per-problem tables keyed by (label, β); SC@N's label is
    ``sc_label(validation)``."""
    specs = [SC64, ControllerSpec("asc"), ControllerSpec("esc")] + [ControllerSpec("cmc", b) for b in CMC_BETAS]
    results = evaluate_many(specs, validation, ReplayConfig(shuffles=shuffles, workers=workers, progress=progress),
                            keep_episodes=True, executor=executor)
    sizes = {ts.name: len(ts) for ts in validation}
    n = len(validation)
    groups = [results[i * n:(i + 1) * n] for i in range(len(specs))]
    labels = [sc_label(validation), "asc", "esc"] + ["cmc"] * len(CMC_BETAS)
    tables: dict[tuple[str, float | None], ProblemTable] = {}
    points: list[Point] = []
    for label, g in zip(labels, groups):
        points += mean_points(label, g)
        for beta, t in _tables_of_results(g, sizes).items():
            tables[(label, beta)] = t
    return points[0], points[1:], tables


def curve_stats(tables: dict[float, ProblemTable], cmc: dict[float, ProblemTable], resampler: Resampler,
                confidence: float) -> CurveStats:
    """A curve's gain over CMC's and its dominance of CMC's points, with bootstrap bounds."""
    mine = {b: resampler.means(t) for b, t in tables.items()}
    ref = {b: resampler.means(t) for b, t in cmc.items()}
    gains, dominated = [], 0
    for k in range(resampler.resamples):
        pts = [(tok[k], acc[k]) for acc, tok in mine.values()]
        rpts = [(tok[k], acc[k]) for acc, tok in ref.values()]
        gains.append(gain_over(pts, rpts))
        dominated += min(dominance_margins(pts, rpts)) > 0
    point_mine = [t.point()[::-1] for t in tables.values()]
    point_ref = [t.point()[::-1] for t in cmc.values()]
    lo, hi = interval(gains, 2 * confidence - 1)  # lo: the one-sided bound at `confidence`
    return CurveStats((lo, gain_over(point_mine, point_ref), hi),
                      tuple(dominance_margins(point_mine, point_ref)), float(dominated) / resampler.resamples)


def choose(points: Sequence[Point], curves: dict[str, CurveStats], margin: float) -> tuple[Point | None, int]:
    """The winner among finalists' points (see the module doc) and the tier that chose it."""
    def lcb(p: Point) -> float:
        return p.vs_sc64[0] if p.vs_sc64 else -math.inf

    def gain_lcb(p: Point) -> float:
        return curves[p.label].gain_over_cmc[0]

    sure = [p for p in points if p.label in curves and lcb(p) >= margin]
    tiers = [
        [p for p in sure if curves[p.label].dominates and gain_lcb(p) >= 0],
        [p for p in sure if curves[p.label].dominates],
        [p for p in sure if gain_lcb(p) >= 0],
    ]
    for i, chosen in enumerate(tiers, start=1):
        if chosen:
            return min(chosen, key=lambda p: (p.mean_tokens, -p.accuracy)), i
    if sure:  # no curve holds against CMC's: the surest curve, at its cheapest sure point
        best = max(gain_lcb(p) for p in sure)
        return min((p for p in sure if gain_lcb(p) == best), key=lambda p: (p.mean_tokens, -p.accuracy)), 4
    reached = [p for p in points if p.label in curves and p.vs_sc64 is not None and p.vs_sc64[1] >= 0]
    if reached:
        return min(reached, key=lambda p: (p.mean_tokens, -p.accuracy)), 5
    if not points:
        return None, 0
    return max(points, key=lambda p: (lcb(p), p.accuracy, -p.mean_tokens)), 0


def _near(a: Candidate, b: Candidate, points: float = 0.25, share: float = 0.03) -> bool:
    """Whether two candidates' search curves agree within ``points`` of accuracy and
    ``share`` of tokens at every β (near-copies share their luck on the search split)."""
    ca, cb = {x[0]: x[1:] for x in a.curve()}, {x[0]: x[1:] for x in b.curve()}
    return ca.keys() == cb.keys() and all(
        abs(ca[k][0] - cb[k][0]) <= points and abs(ca[k][1] - cb[k][1]) <= share * max(ca[k][1], 1.0) for k in ca)


def finalists_of(archive: Archive, n: int) -> list[Candidate]:
    """The ``n`` best candidates by search objective that are not near-copies of a better
    one (``_near``): re-scoring a copy spends validation time on the same luck."""
    out: list[Candidate] = []
    for cid in archive.ranked(distinct=True):
        c = archive.candidates[cid]
        if not any(_near(c, f) for f in out):
            out.append(c)
        if len(out) == n:
            break
    return out


def select(config: SelectionConfig, archive: Archive, validation: Sequence[TrajectorySet], betas: Sequence[float],
           seed: int = 0, workers: int | None = None, progress: bool = False, sandbox: Sandbox | None = None,
           executor: ChunkExecutor | None = None) -> Selection:
    """Re-score the finalists on ``validation`` over ``betas`` in ``sandbox`` (default: a
    process sandbox with five times the default per-candidate time) and pick the winner;
    the baselines run on ``executor`` (default: the local pool), ``workers`` at once (None:
    all cores); ``seed`` seeds the bootstrap (a search passes its explorer's seed)."""
    sc64, base, base_tables = baselines(validation, config.final_shuffles, workers or None, progress, executor)
    sizes = {ts.name: len(ts) for ts in validation}
    resampler = Resampler(sizes, config.bootstrap_resamples, seed=seed)
    conf = config.select_confidence
    sc64_acc, _ = resampler.means(base_tables[(sc64.label, None)])
    cmc_tables = {b: t for (label, b), t in base_tables.items() if label == "cmc"}
    ranked = finalists_of(archive, config.finalists)
    box = sandbox or ProcessSandbox(search_limits(ScoringConfig(), scale=5))
    seeds = list(range(config.final_shuffles))
    finalists: dict[str, list[Point]] = {}
    failures: dict[str, str] = {}
    curves: dict[str, CurveStats] = {}
    all_tables: dict[str, dict[float | None, ProblemTable]] = {}
    for (label, beta), t in base_tables.items():
        all_tables.setdefault(label, {})[beta] = t

    def score(c: Candidate) -> tuple[Candidate, CandidateOutcome]:
        return c, box.score(c.proposal.source, validation, betas, seeds, class_name=c.proposal.class_name)

    with ThreadPoolExecutor(max_workers=workers or box.parallelism()) as pool:
        for c, outcome in pool.map(score, ranked):
            if not outcome.ok:
                failures[c.id] = str(outcome.failure)
                continue
            tables = tables_of_outcome(outcome, sizes)
            pts = []
            for p in mean_points(c.id, outcome.results):
                acc, _ = resampler.means(tables[p.beta])
                diff = acc - sc64_acc
                lo, hi = interval(diff, 2 * conf - 1)  # lo: the one-sided bound at `conf`
                pts.append(Point(p.label, p.beta, p.accuracy, p.mean_tokens, p.per_data,
                                 (lo, p.accuracy - sc64.accuracy, hi)))
            finalists[c.id] = pts
            curves[c.id] = curve_stats(tables, cmc_tables, resampler, conf)
            all_tables[c.id] = tables
    all_points = [p for pts in finalists.values() for p in pts]
    refused = reference_too_weak(sc64, config.min_reference_accuracy) if all_points else None
    best, tier = (None, 0) if refused else choose(all_points, curves, config.select_margin)
    winner = archive.candidates[best.label] if best else None
    return Selection(winner, best, tier > 0, sc64, base, finalists, failures, curves, tier, conf, all_tables,
                     sc64.label, refused)


def reference_too_weak(sc: Point, minimum: float) -> str | None:
    """Why no winner can be declared against ``sc`` (SC@N on validation), or None when its
    accuracy reaches ``minimum`` (%)."""
    if sc.accuracy >= minimum:
        return None
    return (f"{sc.label.upper()} scores {sc.accuracy:.1f}% on validation, under min_reference_accuracy "
            f"({minimum:g}%): a controller that reaches it or saves tokens against it shows nothing; "
            "use questions the model answers right more often")


def cmc_budget_tokens(selection: Selection) -> float | None:
    """CMC β=0.5's mean validation tokens (what the winner's tokens are compared with)."""
    return next((p.mean_tokens for p in selection.baselines if p.label == "cmc" and p.beta == CMC_BUDGET_BETA), None)


__all__ = ["Point", "CurveStats", "Selection", "select", "choose", "baselines", "mean_points", "pick",
           "cmc_budget_tokens", "finalists_of", "reference_too_weak", "CMC_BETAS"]
