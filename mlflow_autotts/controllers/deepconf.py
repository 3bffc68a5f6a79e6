"""DeepConf's online mode (Fu et al., "Deep Think with Confidence", arXiv 2508.15260).

DeepConf reads the model's confidence in its own tokens: a branch whose lowest
group confidence (``signals(i)["group_confidence"]``, see ``live/signals.py``; over the
intervals the episode has shown, i.e. its probed ones) is low is likely wrong, so it is
stopped as soon as that happens, and the finished ones vote with their confidence as
weight. On the episode API:

1. *Warm-up*: ``n_warmup`` branches are probed to their end, interval by interval in rounds.
   The threshold is the ``100 - eta`` percentile of their lowest group confidences: keep the
   top ``eta`` % (DeepConf-low is ``eta=10``, DeepConf-high ``eta=90``).
2. *Online*: further branches are advanced one interval per round, ``width`` open at once
   (so a live episode's lookahead generates them in one batch), and abandoned as soon as an
   interval's group confidence falls below the threshold.
3. *Vote*: finished branches whose lowest group confidence reaches the threshold (warm-up
   ones included; online ones always do) vote with that lowest group confidence as weight,
   as DeepConf's online code does: the vote then weighs exactly what the filter measured,
   and the paper finds a branch's lowest window separates right from wrong traces better
   than its mean, which a long confident stretch props up. The weighted winner is returned
   once its share of the weight reaches ``tau`` (checked after the warm-up and whenever a
   branch finishes), or when ``max_branches`` are opened and settled.

Without signals (``episode.signals`` absent, e.g. the published AIME replay data), or when
no warm-up branch has a value (every one ended within its first interval), there is no
threshold: nothing is pruned and every finished branch votes with weight 1, so the
controller is plurality voting with consensus stopping. A branch without values among
others that have them (it ended in its first interval) is not pruned and votes with the
threshold as weight, the least a kept branch has. Data with only ``confidence`` (interval
means) uses those as groups of one interval.

β sets the budget, every knob a monotone function of it (``deepconf_schedule``); explicit
parameters override the schedule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

from mlflow_autotts.controllers.base import CONFIDENCE, GROUP_CONFIDENCE, MAX_BRANCHES, Controller, Episode
from mlflow_autotts.controllers.registry import register_controller
from mlflow_autotts.errors import ControllerError


@dataclass(frozen=True)
class DeepConfSchedule:
    """DeepConf's knobs at one β (see ``deepconf_schedule``)."""

    n_warmup: int
    """Branches probed to their end to set the threshold."""
    max_branches: int
    """Most branches opened, warm-up included."""
    eta: float
    """Percent of warm-up branches whose confidence passes the threshold (10: DeepConf-low, 90: -high)."""
    width: int
    """Online branches open at once, each advanced one interval per round."""
    tau: float
    """Share of the vote weight the top answer needs to stop."""


def deepconf_schedule(beta: float) -> DeepConfSchedule:
    """The knobs as monotone functions of β: more warm-up, branches, width and kept
    confidence range (DeepConf-low at β=0 to DeepConf-high at β=1) as β grows."""
    b = max(0.0, min(1.0, float(beta)))
    return DeepConfSchedule(
        n_warmup=max(2, round(2 + 6 * b)),
        max_branches=min(MAX_BRANCHES, round(8 + 56 * b)),
        eta=round(10 + 80 * b, 4),
        width=max(2, round(2 + 6 * b)),
        tau=0.95,
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` with linear interpolation (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return min(max(s[lo] + (s[hi] - s[lo]) * (pos - lo), s[lo]), s[hi])


class WeightedVote:
    """Votes with weights; the winner is the heaviest answer (first seen among equals)."""

    __slots__ = ("weights", "total")

    def __init__(self) -> None:
        self.weights: dict[str, float] = {}
        self.total = 0.0

    def add(self, answer: str, weight: float) -> None:
        self.weights[answer] = self.weights.get(answer, 0.0) + weight
        self.total += weight

    @property
    def winner(self) -> str | None:
        return max(self.weights, key=self.weights.__getitem__) if self.weights else None

    def share(self) -> float:
        """The winner's share of the weight (0 without votes or weight)."""
        return self.weights[self.winner] / self.total if self.total > 0 else 0.0


def lowest_confidence(signals: Callable[[int], dict] | None, i: int) -> float | None:
    """Branch ``i``'s lowest group confidence so far; None without values."""
    if signals is None:
        return None
    sig = signals(i)
    vals = sig.get(GROUP_CONFIDENCE)
    if vals is None:
        vals = sig.get(CONFIDENCE)
    vals = [v for v in vals or () if v == v]  # NaN: no value
    return min(vals) if vals else None


@register_controller
class DeepConf(Controller):
    """DeepConf online: a confidence threshold from warm-up branches prunes later ones;
    confidence-weighted voting with consensus stopping (see the module docstring)."""

    name = "deepconf"

    def __init__(self, beta: float = 0.5, n_warmup: int | None = None, max_branches: int | None = None,
                 eta: float | None = None, width: int | None = None, tau: float | None = None):
        given = {"n_warmup": n_warmup, "max_branches": max_branches, "eta": eta, "width": width, "tau": tau}
        given = {k: _check(k, v) for k, v in given.items() if v is not None}
        super().__init__(beta, **given)
        s = replace(deepconf_schedule(self.beta), **given)
        self.schedule = replace(s, n_warmup=min(s.n_warmup, s.max_branches))

    def describe(self) -> dict[str, Any]:
        return asdict(self.schedule)

    def solve(self, episode: Episode) -> str | None:
        s = self.schedule
        signals = getattr(episode, "signals", None)  # absent without signal data
        warm = warm_up(episode, s.n_warmup)
        if not warm:
            return None
        lowest = {i: lowest_confidence(signals, i) for i, _ in warm}
        known = [x for x in lowest.values() if x is not None]
        threshold = percentile(known, 100.0 - s.eta) if known else None
        vote = WeightedVote()
        for i, answer in warm:
            low = lowest[i]
            if threshold is None or low is None or low >= threshold:
                vote.add(answer, vote_weight(low, threshold))
        if vote.share() >= s.tau:
            return vote.winner

        def settle(i: int, answer: str, done: bool) -> bool:
            """Record an online step of branch ``i``; True while it stays open."""
            if done:  # every interval it showed passed the threshold
                vote.add(answer, vote_weight(lowest.get(i), threshold))
                return False
            if threshold is None:
                return True
            lowest[i] = low = lowest_confidence(signals, i)
            return low is None or low >= threshold  # below: abandoned

        probe_more = episode.probe_more
        active: list[int] = []
        opened, exhausted = len(warm), False
        while True:
            still = []
            for i in active:  # one interval each, in opening order
                answer, done = probe_more(i)
                if settle(i, answer, done):
                    still.append(i)
                elif done and vote.share() >= s.tau:
                    return vote.winner
            active = still
            while len(active) < s.width and opened < s.max_branches and not exhausted:
                try:
                    answer, i, done = episode.probe_new()
                except ValueError:
                    exhausted = True
                    break
                opened += 1
                if settle(i, answer, done):
                    active.append(i)
                elif done and vote.share() >= s.tau:
                    return vote.winner
            if not active:
                return vote.winner


def warm_up(episode: Episode, n: int) -> list[tuple[int, str]]:
    """Open ``n`` branches and probe them to their end in rounds (every unfinished branch one
    interval per round, in opening order): ``(branch, final answer)`` in opening order."""
    finals: dict[int, str] = {}
    running: list[int] = []
    for _ in range(n):
        try:
            answer, i, done = episode.probe_new()
        except ValueError:
            break
        if done:
            finals[i] = answer
        else:
            running.append(i)
    while running:
        still = []
        for i in running:
            answer, done = episode.probe_more(i)
            if done:
                finals[i] = answer
            else:
                still.append(i)
        running = still
    return sorted(finals.items())


def vote_weight(low: float | None, threshold: float | None) -> float:
    """A kept branch's vote weight: 1 without a threshold, else its lowest group confidence
    (the threshold, the least a kept branch has, when it has no value); never negative."""
    if threshold is None:
        return 1.0
    return max(threshold if low is None else low, 0.0)


def _check(name: str, value: Any) -> Any:
    """A parameter value, or a ``ControllerError`` naming what is wrong with it."""
    if name in ("eta", "tau"):
        hi = 100.0 if name == "eta" else 1.0
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 < value <= hi
        if not ok:
            raise ControllerError(f"controller 'deepconf': parameter {name} must be a number in (0, {hi:g}], "
                                  f"got {value!r}")
        return float(value)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1
            or (isinstance(value, float) and not value.is_integer())):
        raise ControllerError(f"controller 'deepconf': parameter {name} must be a positive integer, got {value!r}")
    return int(value)
