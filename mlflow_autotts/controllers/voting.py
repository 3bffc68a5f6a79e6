"""Voting primitives shared by controllers: plurality, tallies, Beta-majority confidence.

Plurality follows ``collections.Counter(answers).most_common(1)``: the largest count wins
and, among equal counts, the answer that *first appeared* earliest (Counter keeps
insertion order and its sort is stable).
"""

from __future__ import annotations

from typing import Iterable, Sequence

_CONF_SIZE = 0
_CONF: list[list[float]] = []


def _grow_conf_table(n: int) -> None:
    """Tabulate ``1 - BetaCDF(0.5; a + 1, b + 1)`` for a, b < n with scipy.

    One vectorised call replaces thousands of scalar ``beta.cdf`` calls (the reference
    evaluator's hot spot) and yields the very same floats.
    """
    global _CONF_SIZE, _CONF
    import numpy as np
    from scipy.special import betainc  # the same floats as scipy.stats.beta.cdf; imports ~3x faster

    size = max(n, 2 * _CONF_SIZE, 130)
    a = np.arange(size)
    table = 1.0 - betainc(a[:, None] + 1, a[None, :] + 1, 0.5)
    _CONF = table.tolist()
    _CONF[0] = [0.0] * size  # no votes: no confidence
    _CONF_SIZE = size


def confidence_table(size: int) -> list[list[float]]:
    """The tabulated ``beta_confidence`` values for counts below ``size`` (rows: top1)."""
    if size > _CONF_SIZE:
        _grow_conf_table(size)
    return [row[:size] for row in _CONF[:size]]


def install_confidence_table(table: list[list[float]]) -> None:
    """Use ``table`` (from ``confidence_table``) and never grow it: for processes that must
    not load scipy (the sandbox). Larger counts then raise ``ValueError``."""
    global _CONF, _CONF_SIZE, _grow_conf_table
    size = len(table)

    def _fixed(n: int) -> None:
        raise ValueError(f"beta_confidence supports vote counts below {size} here")

    _CONF, _CONF_SIZE, _grow_conf_table = table, size, _fixed


def beta_confidence(top1: int, top2: int) -> float:
    """Posterior probability that the leading answer is the true majority (ASC's rule).

    ``1 - BetaCDF(0.5; top1 + 1, top2 + 1)``; 0 when there are no votes.
    """
    if top1 <= 0:
        return 0.0
    if top1 >= _CONF_SIZE or top2 >= _CONF_SIZE:
        _grow_conf_table(max(top1, top2) + 1)
    return _CONF[top1][top2]


def beta_confidence_of_weights(top1: float, top2: float) -> float:
    """``beta_confidence`` of vote counts that need not be whole (weighted votes), by bilinear
    interpolation between the four surrounding whole-count values.

    Weighted votes rounded to whole counts make a threshold step from one count to the
    next, so thresholds between two steps select the same rule; interpolating keeps the
    confidence continuous in the weights while reading only the table (no scipy, so it also
    runs in the sandbox). Equal to ``beta_confidence`` at whole counts."""
    if top1 <= 0:
        return 0.0
    top2 = max(0.0, top2)
    a, b = int(top1), int(top2)
    fa, fb = top1 - a, top2 - b
    low = (1.0 - fa) * beta_confidence(a, b) + fa * beta_confidence(a + 1, b)
    if not fb:
        return low
    high = (1.0 - fa) * beta_confidence(a, b + 1) + fa * beta_confidence(a + 1, b + 1)
    return (1.0 - fb) * low + fb * high


def plurality(answers: Iterable[str]) -> str | None:
    """The most frequent answer (first appearance breaks ties); None if there are none."""
    counts: dict[str, int] = {}
    get = counts.get
    for a in answers:
        counts[a] = get(a, 0) + 1
    if not counts:
        return None
    return max(counts, key=counts.__getitem__)


def vote_stats(answers: Sequence[str]) -> tuple[str | None, int, int]:
    """(winner, top1, top2) of ``answers``: the plurality and the two largest counts."""
    t = Tally()
    for a in answers:
        t.add(a)
    return t.winner, t.top1, t.top2


class Tally:
    """An incremental vote count with the plurality and two largest counts kept current.

    Adding a vote is O(1), so a controller can ask for the winner and confidence of a
    growing pool every round without recounting it.
    """

    __slots__ = ("counts", "_rank", "winner", "top1", "top2", "n")

    def __init__(self, answers: Iterable[str] = ()):
        self.counts: dict[str, int] = {}
        self._rank: dict[str, int] = {}
        self.winner: str | None = None
        self.top1 = 0
        self.top2 = 0
        self.n = 0
        for a in answers:
            self.add(a)

    def add(self, answer: str) -> None:
        counts = self.counts
        c = counts.get(answer, 0) + 1
        counts[answer] = c
        self.n += 1
        if c == 1:
            self._rank[answer] = len(self._rank)
        winner = self.winner
        if answer == winner:
            self.top1 = c
        elif winner is None or c > self.top1 or (c == self.top1 and self._rank[answer] < self._rank[winner]):
            self.top2 = self.top1
            self.winner = answer
            self.top1 = c
        elif c > self.top2:
            self.top2 = c

    def confidence(self) -> float:
        """``beta_confidence(top1, top2)`` of the current counts."""
        return beta_confidence(self.top1, self.top2)

    def __len__(self) -> int:
        return self.n
