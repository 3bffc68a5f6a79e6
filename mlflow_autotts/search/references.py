"""What a search is measured against: SC@N and CMC's β-curve on the search split.

SC@N is self-consistency over every branch a question has (``SC64`` reads up to 64: SC@64
on the published sets, SC@16 on a 16-branch collection); ``controllers.reference.sc_label``
names it with the data's N. Names of stored metrics, tags and table columns keep ``sc64`` (``vs_sc64``,
``validation.sc64.accuracy``): runs already recorded and the code reading them rely on them.

From these the goal every candidate is ranked by is set (the gain of its β-curve over
CMC's, ``curves.gain_over``), and SC@N's accuracy within ``BUDGET_SHARE_OF_CMC`` of CMC
β=0.5's tokens is the point the final selection asks the winner to reach. A module of its
own because both the explorers (aimed at the goal) and the job (which measures it) use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.controllers.reference import SC64, sc_label
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.replay.results import mean_over_datasets
from mlflow_autotts.replay.runner import ChunkExecutor, ReplayConfig, evaluate_many

CMC_BUDGET_BETA = 0.5
"""The CMC β whose tokens set the budget (always measured, whatever ``betas`` says)."""
BUDGET_SHARE_OF_CMC = 0.8
"""The search chases SC@N's accuracy within this share of CMC β=0.5's tokens."""


@dataclass(frozen=True)
class References:
    """SC@N and the CMC β sweep on the search split (means over datasets)."""

    sc64_accuracy: float
    """SC@N's accuracy (%): the target every candidate is asked to reach."""
    sc64_tokens: float
    """SC@N's mean tokens per problem."""
    cmc_curve: tuple[tuple[float, float, float], ...]
    """(β, accuracy %, mean tokens) of CMC for ``betas`` ∪ {0.5}, β ascending."""
    sc_label: str = "sc@64"
    """SC@N's display name on the search split (``controllers.reference.sc_label``)."""

    @property
    def cmc_points(self) -> tuple[tuple[float, float], ...]:
        """CMC's curve as (mean tokens, accuracy %) points: the objective's reference."""
        return tuple((t, a) for _, a, t in self.cmc_curve)

    @property
    def token_budget(self) -> float:
        """The tokens a candidate should reach the target within."""
        return BUDGET_SHARE_OF_CMC * next(t for b, _, t in self.cmc_curve if b == CMC_BUDGET_BETA)


def measure_references(search_sets: Sequence[TrajectorySet], betas: Sequence[float], shuffles: int,
                       workers: int | None = None, executor: ChunkExecutor | None = None) -> References:
    """SC@N and CMC over ``betas`` ∪ {0.5} on the search split (``shuffles`` per problem, as
    candidates are scored), in one replay run on ``executor`` (default: the local pool)."""
    cmc_betas = sorted(set(betas) | {CMC_BUDGET_BETA})
    results = evaluate_many([SC64] + [ControllerSpec("cmc", b) for b in cmc_betas], search_sets,
                            ReplayConfig(shuffles=shuffles, workers=workers or None, progress=False),
                            keep_episodes=False, executor=executor)
    n = len(search_sets)
    groups = [results[i * n:(i + 1) * n] for i in range(len(results) // n)]
    sc64_accuracy, sc64_tokens = mean_over_datasets(groups[0])
    curve = tuple((b, *mean_over_datasets(g)) for b, g in zip(cmc_betas, groups[1:]))
    return References(sc64_accuracy, sc64_tokens, curve, sc_label(search_sets))


__all__ = ["BUDGET_SHARE_OF_CMC", "CMC_BUDGET_BETA", "References", "measure_references"]
