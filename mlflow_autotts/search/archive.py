"""The search archive: a Pareto front over (accuracy, tokens) plus MAP-Elites cells.

Every scored candidate contributes the points of its β curve (mean accuracy and mean
tokens over datasets at each β). The *front* is the set of points no other point beats on
both. For parent selection each candidate also gets one scalar *objective*:

- with a *reference* curve (CMC's β sweep on the search split; what a search uses): the
  gain of the candidate's whole curve over it (``curves.gain_over``: mean accuracy points
  above the reference across its token span), so the search improves the curve, not one
  point of it;
- with a token *budget* (e.g. 80% of CMC β=0.5's tokens on the search data): the
  accuracy the curve reaches at that budget (linearly interpolated between β points),
  ties broken by the tokens it needs to reach the target accuracy;
- else with a *target* accuracy (e.g. SC@64's on the search data): the fewest tokens at
  which the curve reaches it;
- else the area under the curve's front over log tokens.

Diversity comes from MAP-Elites: candidates are binned into cells by their building
blocks (by default the opening and the stopping rule) and each cell keeps its best, so
one good family cannot crowd out every other.

The archive is a pure function of the candidate list in order (``from_candidates``), so a
resumed search rebuilds exactly the archive it had from what MLflow holds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from mlflow_autotts.search.curves import gain_over
from mlflow_autotts.search.types import Candidate

NO_GENOME_CELL = ("other",)
OVER_BUDGET_PENALTY = 20.0
"""Accuracy points taken off per doubling of tokens beyond the budget (curves that never
get down to the budget are ranked by how close they come)."""


@dataclass(frozen=True)
class Objective:
    """A candidate's rank key: larger is better (compare ``key``)."""

    accuracy_at_budget: float
    """Accuracy the curve reaches at the token budget (-inf without a budget)."""
    tokens_at_target: float
    """Mean tokens where the curve first reaches the target (inf if never, or no target)."""
    best_accuracy: float
    """Highest mean accuracy on the curve."""
    area: float
    """Accuracy-vs-log-tokens area of the curve's front."""
    mode: str = "area"
    """Which of the above leads: ``gain``, ``budget``, ``target`` or ``area``."""
    gain: float = -math.inf
    """Mean accuracy gain (points) of the curve over the reference curve (-inf without one)."""

    @property
    def value(self) -> float:
        """The leading number as a float (what progress metrics show)."""
        return {"gain": self.gain, "budget": self.accuracy_at_budget, "target": -self.tokens_at_target,
                "area": self.area}[self.mode]

    @property
    def reaches(self) -> bool:
        return math.isfinite(self.tokens_at_target)

    @property
    def key(self) -> tuple:
        if self.mode == "gain":
            return (round(self.gain, 9), self.best_accuracy)
        if self.mode == "budget":
            return (round(self.accuracy_at_budget, 9), -self.tokens_at_target, self.best_accuracy)
        if self.mode == "target":
            if self.reaches:
                return (1, -self.tokens_at_target, self.best_accuracy)
            return (0, self.best_accuracy, self.area)
        return (self.area, self.best_accuracy)


def tokens_to_reach(curve: Sequence[tuple[float, float, float]], target: float) -> float:
    """Fewest mean tokens at which a (β, accuracy, tokens) curve reaches ``target`` accuracy.

    Points at or above the target count as they are; between two neighbouring β points
    that straddle it, tokens are interpolated linearly. ``inf`` if never reached.
    """
    best = math.inf
    for _, acc, tok in curve:
        if acc >= target:
            best = min(best, tok)
    for (_, a0, t0), (_, a1, t1) in zip(curve, curve[1:]):
        if (a0 - target) * (a1 - target) < 0:
            best = min(best, t0 + (target - a0) / (a1 - a0) * (t1 - t0))
    return best


def accuracy_at(curve: Sequence[tuple[float, float, float]], budget: float) -> float:
    """Best accuracy a (β, accuracy, tokens) curve reaches within ``budget`` mean tokens.

    Points within budget count as they are; between neighbouring β points that straddle
    the budget, accuracy is interpolated linearly. A curve whose every point costs more
    is scored by its cheapest point, minus ``OVER_BUDGET_PENALTY`` per doubling over.
    """
    if not curve:
        return -math.inf
    best = -math.inf
    for _, acc, tok in curve:
        if tok <= budget:
            best = max(best, acc)
    for (_, a0, t0), (_, a1, t1) in zip(curve, curve[1:]):
        if (t0 - budget) * (t1 - budget) < 0:
            best = max(best, a0 + (budget - t0) / (t1 - t0) * (a1 - a0))
    if best == -math.inf:
        _, acc, tok = min(curve, key=lambda p: p[2])
        best = acc - OVER_BUDGET_PENALTY * math.log2(tok / budget)
    return best


_AREA_SPAN = (1e4, 1e7)


def _front_area(curve: Sequence[tuple[float, float, float]]) -> float:
    """Integral over log10(tokens) in ``_AREA_SPAN`` of the best accuracy reached so far.

    Larger means higher accuracy at fewer tokens; used to rank curves without a target.
    """
    lo, hi = _AREA_SPAN
    pts = sorted((min(max(tok, lo), hi), acc) for _, acc, tok in curve)
    area, best = 0.0, 0.0
    for i, (t, acc) in enumerate(pts):
        best = max(best, acc)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else hi
        area += best * (math.log10(nxt) - math.log10(t))
    return area


def objective(candidate: Candidate, target: float | None = None, budget: float | None = None,
              reference: Sequence[tuple[float, float]] | None = None) -> Objective:
    """The candidate's rank key; ``reference`` ((tokens, accuracy) points) takes precedence,
    then ``budget``, then ``target``."""
    mode = "gain" if reference else "budget" if budget is not None else "target" if target is not None else "area"
    curve = candidate.curve()
    if not curve:
        return Objective(-math.inf, math.inf, -math.inf, -math.inf, mode)
    best = max(acc for _, acc, _ in curve)
    tok = tokens_to_reach(curve, target) if target is not None else math.inf
    at_budget = accuracy_at(curve, budget) if budget is not None else -math.inf
    gain = gain_over([(t, a) for _, a, t in curve], reference) if reference else -math.inf
    return Objective(at_budget, tok, best, _front_area(curve), mode, gain)


def dominates(p: tuple[float, float], q: tuple[float, float]) -> bool:
    """(accuracy, tokens) ``p`` is at least as good as ``q`` on both and better on one."""
    return p[0] >= q[0] and p[1] <= q[1] and (p[0] > q[0] or p[1] < q[1])


@dataclass(frozen=True)
class FrontPoint:
    candidate_id: str
    beta: float
    accuracy: float
    tokens: float


@dataclass
class Archive:
    """Pareto front and MAP-Elites cells over scored candidates.

    ``budget_tokens``, ``target_accuracy`` (+ ``target_margin``) set the objective,
    ``cell_slots`` the genome slots that define a cell. Candidates without a genome (e.g. LLM-written) enter
    the front and the ranking but only the cell ``("other",)``.
    """

    target_accuracy: float | None = None
    """Accuracy (percent, mean over datasets) the objective asks for; None: curve area."""
    target_margin: float = 0.0
    """Points added to the target, to prefer candidates that clear it with headroom."""
    budget_tokens: float | None = None
    """Mean tokens per problem the objective measures accuracy at (e.g. 0.8 × CMC β=0.5's);
    None: rank by tokens to the target."""
    reference: tuple[tuple[float, float], ...] | None = None
    """(mean tokens, accuracy %) of the reference curve (CMC's β sweep); when set the
    objective is the gain over it, whatever the target and budget say."""
    cell_slots: tuple[str, ...] = ("open", "stop")
    """Genome slots whose options define a MAP-Elites cell."""
    candidates: dict[str, Candidate] = field(default_factory=dict)
    objectives: dict[str, Objective] = field(default_factory=dict)
    cells: dict[tuple, str] = field(default_factory=dict)
    """cell -> id of its best candidate."""
    front: list[FrontPoint] = field(default_factory=list)
    offspring: dict[str, int] = field(default_factory=dict)
    """candidate id -> how many later candidates name it as a parent (novelty pressure)."""

    @property
    def target(self) -> float | None:
        return None if self.target_accuracy is None else self.target_accuracy + self.target_margin

    @classmethod
    def from_candidates(cls, candidates: Iterable[Candidate], **kwargs: Any) -> "Archive":
        """The archive those candidates build when added in order (deterministic)."""
        archive = cls(**kwargs)
        for c in candidates:
            archive.add(c)
        return archive

    def cell_of(self, candidate: Candidate) -> tuple:
        genome = candidate.proposal.meta.get("genome") if candidate.proposal.meta else None
        if not isinstance(genome, dict) or not isinstance(genome.get("blocks"), dict):
            return NO_GENOME_CELL
        return tuple(str(genome["blocks"].get(s, "?")) for s in self.cell_slots)

    def add(self, candidate: Candidate) -> bool:
        """Record a candidate; True if it entered the front or took over a cell.

        Failed or unscored candidates are remembered (so explorers do not propose them
        again) but take no place in the front or the cells.
        """
        if candidate.id in self.candidates:
            raise ValueError(f"candidate {candidate.id!r} is already in the archive")
        self.candidates[candidate.id] = candidate
        for parent in candidate.proposal.parents:
            self.offspring[parent] = self.offspring.get(parent, 0) + 1
        if not candidate.ok:
            return False
        obj = self.objectives[candidate.id] = objective(candidate, self.target, self.budget_tokens, self.reference)
        improved = False
        cell = self.cell_of(candidate)
        holder = self.cells.get(cell)
        if holder is None or obj.key > self.objectives[holder].key:
            self.cells[cell] = candidate.id
            improved = True
        for beta, acc, tok in candidate.curve():
            p = (acc, tok)
            if any(dominates((f.accuracy, f.tokens), p) or (f.accuracy, f.tokens) == p for f in self.front):
                continue
            self.front = [f for f in self.front if not dominates(p, (f.accuracy, f.tokens))]
            self.front.append(FrontPoint(candidate.id, beta, acc, tok))
            improved = True
        self.front.sort(key=lambda f: (f.tokens, -f.accuracy))
        return improved

    # ------------------------------------------------------------------------ queries
    def ranked(self, distinct: bool = False) -> list[str]:
        """Scored candidate ids, best objective first (ties: earlier candidate first).

        ``distinct`` drops candidates whose scores equal a better-ranked one's (mutants
        that changed only knobs without effect), e.g. when picking finalists.
        """
        order = {cid: i for i, cid in enumerate(self.candidates)}
        ids = sorted(self.objectives, key=lambda c: (self.objectives[c].key, -order[c]), reverse=True)
        if not distinct:
            return ids
        seen, out = set(), []
        for cid in ids:
            sig = tuple(sorted((s.data, s.beta, s.accuracy, s.mean_tokens) for s in self.candidates[cid].scores))
            if sig not in seen:
                seen.add(sig)
                out.append(cid)
        return out

    def best(self) -> str | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def select_parents(self, rng: random.Random, k: int, tournament: int = 3,
                       elite_share: float = 0.5, eligible: set[str] | None = None) -> list[str]:
        """``k`` parent ids: ``elite_share`` by tournament on the objective, the rest elites
        of MAP-Elites cells, drawn with weight 1 / (1 + children the elite already has), so
        neglected families get their turn (novelty pressure).

        ``eligible`` restricts the choice (e.g. to candidates that carry a genome).
        Returns fewer than ``k`` only if nothing is eligible.
        """
        pool = [c for c in self.objectives if eligible is None or c in eligible]
        if not pool:
            return []
        keys = {c: self.objectives[c].key for c in pool}
        cell_heads = sorted({cid for cid in self.cells.values() if cid in keys}, key=list(self.candidates).index)
        out: list[str] = []
        for _ in range(k):
            if cell_heads and rng.random() >= elite_share:
                weights = [1.0 / (1 + self.offspring.get(c, 0) + out.count(c)) for c in cell_heads]
                out.append(rng.choices(cell_heads, weights)[0])
            else:
                picks = [pool[rng.randrange(len(pool))] for _ in range(max(1, tournament))]
                out.append(max(picks, key=lambda c: keys[c]))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for logging; the archive itself is rebuilt from candidates)."""
        def num(x: float) -> float | None:
            return x if math.isfinite(x) else None
        return {
            "target_accuracy": self.target_accuracy, "target_margin": self.target_margin,
            "budget_tokens": self.budget_tokens,
            "reference": [list(p) for p in self.reference] if self.reference else None,
            "cell_slots": list(self.cell_slots),
            "front": [vars(f) for f in self.front],
            "cells": {"/".join(cell): cid for cell, cid in sorted(self.cells.items())},
            "ranking": [{"id": c, "accuracy_at_budget": num(self.objectives[c].accuracy_at_budget),
                         "tokens_at_target": num(self.objectives[c].tokens_at_target),
                         "best_accuracy": num(self.objectives[c].best_accuracy),
                         "gain_over_reference": num(self.objectives[c].gain)} for c in self.ranked()],
        }
