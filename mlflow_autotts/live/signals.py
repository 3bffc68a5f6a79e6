"""DeepConf confidence signals: the one definition live generation and collection share.

DeepConf (Fu et al., "Deep Think with Confidence", arXiv 2508.15260) scores a reasoning
trace with the model's own top-k logprobs. A token's *confidence* is minus the mean of its
top-k logprobs: high when the distribution is peaked, i.e. the model is sure. A mean over a
whole trace hides the stretch where the reasoning breaks down, so DeepConf averages over a
sliding window of consecutive tokens (the *group confidence*) and keeps the lowest window
of the trace: that minimum is the signal that predicts a bad trace, and DeepConf uses it
both to stop a trace early and to weight its vote.

An episode reveals a branch interval by interval, so each interval ``k`` carries two values
(``episode.signals(i)``): ``confidence``, the mean token confidence over the interval's
tokens, and ``group_confidence``, the lowest mean over the windows that *end* inside the
interval. A window may start in an earlier interval, so an interval's value is the minimum
of per-token window means that do not depend on where the intervals cut, and the minimum
over a branch's intervals is the minimum over all its windows. A window ending at token
``t`` holds the last ``window`` tokens up to ``t``, or all tokens so far while fewer exist.
The paper's window is 2048 tokens; ours is a parameter, because our intervals are 500
tokens: a 2048-token window would mostly measure the three intervals before the one being
decided on, and a branch shorter than 2048 tokens would have no full window at all.

Window means come from prefix sums added left to right from a branch's first token: the
same additions whether the branch is scored as it grows (``TokenConfidences``, live) or at
once (``branch_interval_signals``, collection), so both give bit-identical floats. Pure
Python: nothing here imports numpy, vLLM or torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import overload

from mlflow_autotts.controllers.base import CONFIDENCE, GROUP_CONFIDENCE

LOGPROB_FLOOR = -9999.0
"""Logprobs below this (``-inf``, and NaN) count as this value: vLLM's OpenAI server sends
-9999.0 for ``-inf``, so both backends give the same confidence, and no infinity reaches the
prefix sums (where ``inf - inf`` would turn every later window into NaN)."""


def token_confidence(top_logprobs: Sequence[float]) -> float:
    """Minus the mean of one generated token's top-k logprobs (0.0 without logprobs)."""
    if not top_logprobs:
        return 0.0
    total = 0.0
    for lp in top_logprobs:
        total += lp if lp >= LOGPROB_FLOOR else LOGPROB_FLOOR
    return 0.0 - total / len(top_logprobs)


class TokenConfidences(Sequence[float]):
    """One branch's per-token confidences with running prefix sums, appended as tokens are
    generated, so the signals of an interval cost O(interval) however long the branch is."""

    __slots__ = ("_values", "_sums")

    def __init__(self, values: Iterable[float] = ()):
        self._values: list[float] = []
        self._sums: list[float] = [0.0]
        self.extend(values)

    def append(self, value: float) -> None:
        self.extend((value,))

    def extend(self, values: Iterable[float]) -> None:
        vals = _finite(values, len(self._values))
        self._values.extend(vals)
        sums = accumulate(vals, initial=self._sums[-1])
        next(sums)
        self._sums.extend(sums)

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, i: int) -> float: ...
    @overload
    def __getitem__(self, i: slice) -> list[float]: ...
    def __getitem__(self, i):
        return self._values[i]

    def __repr__(self) -> str:
        return f"TokenConfidences({len(self)} tokens)"


def interval_signals(conf: Sequence[float], interval: int, k: int, window: int) -> dict[str, float]:
    """``{CONFIDENCE, GROUP_CONFIDENCE}`` of interval ``k`` (1-based) of a branch whose
    per-token confidences are ``conf`` (see the module docstring).

    O(interval) when ``conf`` is a ``TokenConfidences``; a plain sequence is summed up to
    the interval's end first. ``ValueError`` when the interval has no token yet.
    """
    _check_sizes(interval, window)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"interval number k must be an int >= 1, got {k!r}")
    n = len(conf)
    lo = (k - 1) * interval
    if lo >= n:
        raise ValueError(f"interval {k} has no tokens: the branch has {n} tokens ({interval} per interval)")
    hi = min(lo + interval, n)
    sums = conf._sums if isinstance(conf, TokenConfidences) else _prefix(conf, hi)
    return _signals(sums, lo, hi, window)


def branch_interval_signals(conf: Sequence[float], interval: int, window: int) -> dict[str, list[float]]:
    """Both signals of every interval of a branch at once (the last one may be partial), in
    O(len(conf)): ``{name: [value of interval 1, 2, …]}``, as collection stores them."""
    _check_sizes(interval, window)
    n = len(conf)
    sums = conf._sums if isinstance(conf, TokenConfidences) else _prefix(conf, n)
    out: dict[str, list[float]] = {CONFIDENCE: [], GROUP_CONFIDENCE: []}
    for lo in range(0, n, interval):
        for name, value in _signals(sums, lo, min(lo + interval, n), window).items():
            out[name].append(value)
    return out


def _signals(sums: Sequence[float], lo: int, hi: int, window: int) -> dict[str, float]:
    """The signals of tokens ``lo..hi-1`` (``lo < hi``) from prefix sums ``sums``."""
    lowest = math.inf
    for end in range(lo + 1, hi + 1):  # the window ending at token end-1 covers [start, end)
        start = end - window if end > window else 0
        mean = (sums[end] - sums[start]) / (end - start)
        if mean < lowest:
            lowest = mean
    return {CONFIDENCE: (sums[hi] - sums[lo]) / (hi - lo), GROUP_CONFIDENCE: lowest}


def _prefix(conf: Sequence[float], upto: int) -> list[float]:
    """Prefix sums of ``conf[:upto]``, added left to right as ``TokenConfidences`` adds them."""
    return list(accumulate(_finite(conf[:upto], 0), initial=0.0))


def _finite(values: Iterable[float], start: int) -> list[float]:
    out = [float(v) for v in values]
    for t, v in enumerate(out):
        if not math.isfinite(v):
            raise ValueError(f"token confidence {start + t} is {v!r}: confidences must be finite numbers")
    return out


def _check_sizes(interval: int, window: int) -> None:
    for name, value in (("interval", interval), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1 (tokens), got {value!r}")


__all__ = [
    "CONFIDENCE",
    "GROUP_CONFIDENCE",
    "LOGPROB_FLOOR",
    "TokenConfidences",
    "branch_interval_signals",
    "interval_signals",
    "token_confidence",
]
