"""Comparing accuracy–tokens curves: the search objective and the dominance check.

A controller swept over β gives points (mean tokens, accuracy %). What a user can get
from it at a token budget ``t`` is its *front* read at ``t``: the best accuracy of a point
within ``t``, and between two front points the straight line joining them (running the
cheaper β on some problems and the dearer on the rest costs and scores in proportion).

The search objective is the **gain over a reference curve** (CMC on the search split):
the mean, over the reference's token span taken uniformly in log tokens, of the
candidate's front minus the reference's front, in accuracy points. It rewards the whole
curve at once: a candidate that beats CMC at low budgets but flattens where CMC keeps
rising loses there what it gained below. Below a candidate's cheapest point its front is
extrapolated downwards by ``BELOW_PENALTY`` points per halving of tokens, so a curve that
cannot get as cheap as the reference is ranked by how close it comes.
"""

from __future__ import annotations

import math
from typing import Sequence

Points = Sequence[tuple[float, float]]
"""(mean tokens, accuracy %) pairs, in any order."""

BELOW_PENALTY = 20.0
"""Accuracy points taken off per halving of tokens below a curve's cheapest point."""
GRID = 65
"""Log-spaced token budgets at which ``gain_over`` compares two fronts."""


def front(points: Points) -> list[tuple[float, float]]:
    """The Pareto front, cheapest first: points that raise the best accuracy so far."""
    out: list[tuple[float, float]] = []
    for tok, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or acc > out[-1][1]:
            out.append((float(tok), float(acc)))
    return out


def accuracy_within(fr: Sequence[tuple[float, float]], tokens: float) -> float:
    """Accuracy the front ``fr`` (from ``front``) reaches within ``tokens`` mean tokens."""
    if not fr:
        return -math.inf
    t0, a0 = fr[0]
    if tokens < t0:
        return a0 - BELOW_PENALTY * math.log2(t0 / max(tokens, 1e-9))
    for (ta, aa), (tb, ab) in zip(fr, fr[1:]):
        if tokens < tb:
            return aa + (tokens - ta) / (tb - ta) * (ab - aa)
    return fr[-1][1]


def tokens_to_reach(fr: Sequence[tuple[float, float]], accuracy: float) -> float:
    """Fewest mean tokens at which the front ``fr`` reaches ``accuracy`` (inf if never)."""
    if not fr:
        return math.inf
    if fr[0][1] >= accuracy:
        return fr[0][0]
    for (ta, aa), (tb, ab) in zip(fr, fr[1:]):
        if ab >= accuracy:
            return ta + (accuracy - aa) / (ab - aa) * (tb - ta)
    return math.inf


def token_span(points: Points) -> tuple[float, float]:
    """(cheapest, dearest) mean tokens of a curve's points."""
    toks = [t for t, _ in points]
    return min(toks), max(toks)


def gain_over(points: Points, reference: Points, span: tuple[float, float] | None = None) -> float:
    """Mean accuracy gain (points) of ``points``' front over ``reference``'s, averaged
    uniformly in log tokens over ``span`` (default: the reference's token span)."""
    if not points:
        return -math.inf
    fa, fr = front(points), front(reference)
    lo, hi = span or token_span(reference)
    if not hi > lo > 0:
        return accuracy_within(fa, hi) - accuracy_within(fr, hi)
    step = math.log(hi / lo) / (GRID - 1)
    total = 0.0
    for i in range(GRID):
        t = lo * math.exp(i * step)
        w = 0.5 if i in (0, GRID - 1) else 1.0  # trapezoid rule
        total += w * (accuracy_within(fa, t) - accuracy_within(fr, t))
    return total / (GRID - 1)


def dominance_margins(points: Points, reference: Points) -> list[float]:
    """For each reference point (t, a): ``1 - tokens_to_reach(points' front, a) / t``, the
    share of tokens saved while reaching at least the same accuracy (negative: more tokens
    or never, -inf). All positive = ``points`` dominates every reference point."""
    fa = front(points)
    out = []
    for t, a in sorted(reference):
        need = tokens_to_reach(fa, a)
        out.append(1.0 - need / t if math.isfinite(need) and t > 0 else -math.inf)
    return out


__all__ = ["BELOW_PENALTY", "front", "accuracy_within", "tokens_to_reach", "token_span", "gain_over",
           "dominance_margins"]
