"""Uncertainty over problems: a paired, stratified bootstrap of replay results.

With 10–30 problems per dataset, a controller's accuracy moves by points when a handful
of problems change, so a selection that trusts one number picks luck. Here every
controller configuration is reduced to per-problem means over shuffles (share correct,
tokens); a resample draws, for every dataset, its problems with replacement, and the *same*
draw is applied to every configuration (paired: a gain over SC@64 or CMC is measured on
the same problems), then averaged the way reports are (``mean_over_datasets``: per dataset,
then over datasets, each weighted equally).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class ProblemTable:
    """One controller configuration: per dataset, per problem, means over shuffles."""

    accuracy: Mapping[str, np.ndarray]
    """dataset -> share answered correctly per problem, in percent."""
    tokens: Mapping[str, np.ndarray]
    """dataset -> mean tokens per problem."""

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, int, bool, int]], sizes: Mapping[str, int]) -> "ProblemTable":
        """From episodes ``(dataset, problem, correct, tokens)``; every problem of every
        dataset in ``sizes`` must have the same number of episodes (one per shuffle)."""
        hits = {d: np.zeros(n) for d, n in sizes.items()}
        toks = {d: np.zeros(n) for d, n in sizes.items()}
        count = {d: np.zeros(n) for d, n in sizes.items()}
        for data, problem, correct, tokens in rows:
            if data not in sizes:
                raise ValueError(f"episode of unknown dataset {data!r}; expected one of {', '.join(sizes)}")
            hits[data][problem] += bool(correct)
            toks[data][problem] += tokens
            count[data][problem] += 1
        for d, c in count.items():
            if c.size and (c.min() == 0 or c.min() != c.max()):
                raise ValueError(f"dataset {d!r}: problems have {int(c.min())}..{int(c.max())} episodes; "
                                 "expected the same number (one per shuffle) for every problem")
        return cls({d: 100.0 * hits[d] / count[d] for d in sizes}, {d: toks[d] / count[d] for d in sizes})

    def point(self) -> tuple[float, float]:
        """(accuracy %, mean tokens), averaged per dataset then over datasets."""
        return (float(np.mean([a.mean() for a in self.accuracy.values()])),
                float(np.mean([t.mean() for t in self.tokens.values()])))


class Resampler:
    """Fixed bootstrap draws over the problems of some datasets, shared by every table."""

    def __init__(self, sizes: Mapping[str, int], resamples: int = DEFAULT_RESAMPLES, seed: int = 0):
        if resamples < 1:
            raise ValueError(f"resamples must be >= 1, got {resamples}")
        rng = np.random.default_rng(seed)
        self.sizes = dict(sizes)
        self.resamples = resamples
        # weights[d][b, p]: share of resample b's draws of dataset d that fell on problem p
        self.weights = {}
        for d, n in self.sizes.items():
            draws = rng.integers(0, n, size=(resamples, n))
            w = np.zeros((resamples, n))
            np.add.at(w, (np.arange(resamples)[:, None], draws), 1.0 / n)
            self.weights[d] = w

    def means(self, table: ProblemTable) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy %, mean tokens) per resample, shape (resamples,) each."""
        acc = np.mean([self.weights[d] @ table.accuracy[d] for d in self.sizes], axis=0)
        tok = np.mean([self.weights[d] @ table.tokens[d] for d in self.sizes], axis=0)
        return acc, tok


def lower_bound(samples: np.ndarray | list[float], confidence: float) -> float:
    """One-sided lower confidence bound: the (1 - confidence) quantile of the samples."""
    return float(np.quantile(np.asarray(samples, dtype=float), 1.0 - confidence))


def interval(samples: np.ndarray | list[float], confidence: float = 0.9) -> tuple[float, float]:
    """Two-sided percentile interval holding ``confidence`` of the samples."""
    s = np.asarray(samples, dtype=float)
    tail = (1.0 - confidence) / 2
    return float(np.quantile(s, tail)), float(np.quantile(s, 1.0 - tail))


def simultaneous_lower_bounds(samples: np.ndarray, estimates: np.ndarray, confidence: float) -> np.ndarray:
    """Lower bounds that hold for every row at once with ``confidence`` (bootstrap max-t).

    ``samples`` is (rows, resamples), ``estimates`` the rows' point estimates. Each row's
    shortfalls below its estimate are scaled by its bootstrap sd, and the ``confidence``
    quantile of their maximum over rows is one critical value for all: picking the
    best-looking of many rows then keeps its bound's meaning, which per-row bounds lose.
    One row gets ``lower_bound``'s percentile bound; a row that never varies keeps its
    estimate."""
    d = np.asarray(samples, dtype=float)
    est = np.asarray(estimates, dtype=float)
    sd = d.std(axis=1, ddof=1) if d.shape[1] > 1 else np.zeros(len(d))
    varies = sd > 0
    if not varies.any():
        return est.copy()
    z = (est[varies, None] - d[varies]) / sd[varies, None]
    q = float(np.quantile(z.max(axis=0), confidence))
    return est - q * sd


__all__ = ["ProblemTable", "Resampler", "lower_bound", "interval", "simultaneous_lower_bounds", "DEFAULT_RESAMPLES"]
