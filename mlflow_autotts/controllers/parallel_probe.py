"""Parallel-Probe: many branches advanced in lockstep, off-track ones pruned, stable winner returned."""

from __future__ import annotations

from mlflow_autotts.controllers.base import Controller, Episode
from mlflow_autotts.controllers.baselines import _positive_int
from mlflow_autotts.controllers.registry import register_controller
from mlflow_autotts.controllers.voting import plurality


@register_controller
class ParallelProbe(Controller):
    """Open ``chains`` branches; each step advance every live branch ``burst`` intervals.

    The winner is the plurality of the latest answers of unpruned branches. After
    ``warm_up`` steps, a branch that disagrees with the winner ``patience`` steps in a row
    is pruned. Returns once the winner has held for ``T`` steps, or when nothing is left
    to advance.
    """

    name = "parallel_probe"
    uses_beta = False

    def __init__(self, beta: float = 0.5, chains: int = 64, T: int = 40, patience: int = 7,
                 warm_up: int = 15, burst: int = 1, max_steps: int = 100):
        self.chains = _positive_int(self.name, "chains", chains)
        self.T = _positive_int(self.name, "T", T)
        self.patience = _positive_int(self.name, "patience", patience)
        self.warm_up = int(warm_up)
        self.burst = _positive_int(self.name, "burst", burst)
        self.max_steps = _positive_int(self.name, "max_steps", max_steps)
        super().__init__(beta, chains=self.chains, T=self.T, patience=self.patience,
                         warm_up=self.warm_up, burst=self.burst, max_steps=self.max_steps)

    def solve(self, episode: Episode) -> str | None:
        probe_new, probe_more = episode.probe_new, episode.probe_more
        index: list[int] = []
        latest: list[str] = []
        finished: list[bool] = []
        for _ in range(self.chains):
            try:
                answer, i, done = probe_new()
            except ValueError:
                break
            index.append(i)
            latest.append(answer)
            finished.append(done)
        n = len(index)
        if n == 0:
            return None
        pruned = [False] * n
        off_track = [0] * n
        unresolved = sum(1 for f in finished if not f)
        burst, warm_up, patience, T = self.burst, self.warm_up, self.patience, self.T
        stable = 0
        prev: str | None = None
        for step in range(self.max_steps):
            for k in range(n):
                if finished[k] or pruned[k]:
                    continue
                i = index[k]
                for _ in range(burst):
                    answer, done = probe_more(i)
                    if done:
                        finished[k] = True
                        unresolved -= 1
                        break
                latest[k] = answer
            active = [k for k in range(n) if not pruned[k]]
            if not active:
                return prev
            winner = plurality([latest[k] for k in active])
            if step >= warm_up and len(active) > 1:
                to_prune = []
                for k in active:
                    if finished[k]:
                        continue
                    if latest[k] != winner:
                        off_track[k] += 1
                        if off_track[k] >= patience:
                            to_prune.append(k)
                    else:
                        off_track[k] = 0
                if to_prune:
                    for k in to_prune:
                        pruned[k] = True
                    unresolved -= len(to_prune)
                    active = [k for k in active if not pruned[k]]
                    if not active:
                        return prev
                    winner = plurality([latest[k] for k in active])
            stable = stable + 1 if winner == prev else 0
            prev = winner
            if stable >= T or unresolved == 0:
                return winner
        return prev
