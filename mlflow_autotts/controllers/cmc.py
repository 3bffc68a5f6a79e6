"""CMC, the AutoTTS paper's discovered Confidence Momentum Controller.

A pool of finished answers gives a Beta-majority confidence; an exponential moving
average of it (the momentum) must be high and not falling before the controller stops.
Branches that keep disagreeing with the pool's winner are abandoned, branches that agree
get extra intervals, and new branches are opened while the confidence trend is flat.
Every knob is a monotone function of the single budget parameter β.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mlflow_autotts.controllers.base import MAX_BRANCHES, Controller, Episode
from mlflow_autotts.controllers.registry import register_controller
from mlflow_autotts.controllers.voting import Tally, beta_confidence, plurality

MAX_ROUNDS = 500


@dataclass(frozen=True)
class CMCSchedule:
    """CMC's knobs at one β (see ``cmc_schedule``)."""

    n_init: int
    """Branches opened before the first round."""
    max_branches: int
    """Most branches ever opened."""
    warm_up: int
    """Rounds before pruning, bursts and stopping are allowed."""
    patience: int
    """Consecutive disagreeing rounds before a branch is abandoned."""
    window: int
    """EMA history length for the confidence trend."""
    alpha: float
    """EMA weight of the newest confidence."""
    conf_thresh: float
    """EMA level needed to stop."""
    slack: float
    """How far the EMA may have fallen over the window and still stop."""
    burst: int
    """Intervals per round for branches that agree with the winner."""
    widen: int
    """Branches opened per widening."""
    trend: float
    """Widen only while the EMA trend is at most this."""
    min_complete: int
    """Finished answers needed before stopping."""


def cmc_schedule(beta: float) -> CMCSchedule:
    """CMC's hyperparameters as the published smooth monotone functions of β."""
    b = max(0.0, min(1.0, float(beta)))
    return CMCSchedule(
        n_init=max(2, round(2 + 6 * b)),
        max_branches=min(MAX_BRANCHES, round(4 + 60 * b)),
        warm_up=max(2, round(2 + 8 * b)),
        patience=max(3, round(3 + 9 * b)),
        window=max(2, round(2 + 6 * b)),
        alpha=round(0.70 - 0.40 * b, 4),
        conf_thresh=round(0.85 + 0.12 * b, 4),
        slack=round(0.04 - 0.03 * b, 4),
        burst=max(1, round(1 + 2 * b)),
        widen=max(1, round(1 + 3 * b)),
        trend=round(0.04 - 0.03 * b, 4),
        min_complete=max(2, round(2 + 3 * b)),
    )


@register_controller
class ConfidenceMomentum(Controller):
    """CMC; β alone sets the budget (higher spends more)."""

    name = "cmc"

    def __init__(self, beta: float = 0.5):
        super().__init__(beta)
        self.schedule = cmc_schedule(self.beta)

    def config(self) -> dict:
        return {"beta": self.beta}

    def describe(self) -> dict:
        return asdict(self.schedule)

    def solve(self, episode: Episode) -> str | None:  # noqa: C901  (one algorithm, kept in one place)
        s = self.schedule
        probe_new, probe_more = episode.probe_new, episode.probe_more
        alpha, keep = s.alpha, 1.0 - s.alpha
        burst, patience, window = s.burst, s.patience, s.window
        index: list[int] = []  # episode branch index of each opened branch k
        latest: list[str] = []  # its latest answer
        finished: list[bool] = []
        abandoned: list[bool] = []
        probes: list[int] = []  # probe_more steps it has received
        disagree: list[int] = []  # consecutive rounds it disagreed with the pool's winner
        live: list[int] = []  # unfinished, unabandoned branches, in opening order
        pool = Tally()  # final answers of finished branches

        def open_branches(count: int, limit: int) -> None:
            for _ in range(count):
                if len(index) >= limit:
                    return
                try:
                    answer, i, done = probe_new()
                except ValueError:
                    return
                k = len(index)
                index.append(i)
                latest.append(answer)
                finished.append(done)
                abandoned.append(False)
                probes.append(0)
                disagree.append(0)
                if done:
                    pool.add(answer)
                else:
                    live.append(k)

        open_branches(s.n_init, s.n_init)
        if not index:
            return None
        max_open = min(s.max_branches, MAX_BRANCHES)
        widen_from = max(1, s.warm_up // 2)
        ema = 0.0
        history: list[float] = []
        for r in range(MAX_ROUNDS):
            winner = pool.winner
            ema = keep * ema + alpha * beta_confidence(pool.top1, pool.top2)
            history.append(ema)
            if len(history) > window:
                del history[0]
            warm = r >= s.warm_up
            aligned = warm and winner is not None
            if aligned:
                stale = []
                for k in live:
                    if latest[k] != winner:
                        disagree[k] += 1
                        if disagree[k] >= patience:
                            stale.append(k)
                    else:
                        disagree[k] = 0
                if stale:
                    stale.sort(key=disagree.__getitem__, reverse=True)
                    for k in stale[: max(0, len(live) - 2)]:
                        abandoned[k] = True
                    live = [k for k in live if not abandoned[k]]
            any_finished = False
            # most-probed first; reverse=True keeps opening order among equals (stable)
            for k in sorted(live, key=probes.__getitem__, reverse=True):
                steps = burst if aligned and latest[k] == winner else 1
                while steps:  # (a plain loop: this is the replay's innermost path)
                    answer, done = probe_more(index[k])
                    probes[k] += 1
                    latest[k] = answer
                    if done:
                        pool.add(answer)
                        finished[k] = True
                        any_finished = True
                        break
                    steps -= 1
            if any_finished:
                live = [k for k in live if not finished[k]]
            ema = keep * ema + alpha * beta_confidence(pool.top1, pool.top2)
            history[-1] = ema
            delta = history[-1] - history[0] if len(history) >= 2 else 0.0
            if warm and pool.n >= s.min_complete and ema >= s.conf_thresh and delta >= -s.slack:
                return pool.winner
            if not live:
                break
            if len(index) < max_open and delta <= s.trend and r >= widen_from and ema < s.conf_thresh:
                open_branches(s.widen, max_open)
        if pool.n:
            return pool.winner
        return plurality([latest[k] for k in range(len(index)) if not abandoned[k]])
