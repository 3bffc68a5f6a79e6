"""The search application without MLflow: what a search run is measured against and driven by.

A search (see docs/architecture.md, "The flow") splits its data into a search part and a
validation part, measures SC@64 and a CMC β sweep on the search part, and from those sets
the goal every candidate is ranked by: the gain of its whole β-curve over CMC's
(``curves.gain_over``). SC@64's accuracy within ``BUDGET_SHARE_OF_CMC`` of CMC β=0.5's
tokens is the point the final selection asks the winner to reach. This module computes those pieces and builds the explorer; the MLflow
parent run that records them lives in ``tracking/search_job.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.controllers.reference import SC64
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.plugins import Registry
from mlflow_autotts.replay.results import mean_over_datasets
from mlflow_autotts.replay.runner import ChunkExecutor, ReplayConfig, evaluate_many
from mlflow_autotts.search.archive import Archive
from mlflow_autotts.search.config import SearchConfig
from mlflow_autotts.search.evolve import EvolveExplorer
from mlflow_autotts.search.llm_explorer import LLMExplorer
from mlflow_autotts.search.split import split_problems
from mlflow_autotts.search.types import Candidate, Explorer

BUDGET_SHARE_OF_CMC = 0.8
"""The search chases SC@64's accuracy within this share of CMC β=0.5's tokens."""
CMC_BUDGET_BETA = 0.5
"""The CMC β whose tokens set the budget (always measured, whatever ``betas`` says)."""


@dataclass(frozen=True)
class References:
    """SC@64 and the CMC β sweep on the search split (means over datasets)."""

    sc64_accuracy: float
    """SC@64's accuracy (%): the target every candidate is asked to reach."""
    sc64_tokens: float
    """SC@64's mean tokens per problem."""
    cmc_curve: tuple[tuple[float, float, float], ...]
    """(β, accuracy %, mean tokens) of CMC for ``betas`` ∪ {0.5}, β ascending."""

    @property
    def cmc_points(self) -> tuple[tuple[float, float], ...]:
        """CMC's curve as (mean tokens, accuracy %) points: the objective's reference."""
        return tuple((t, a) for _, a, t in self.cmc_curve)

    @property
    def token_budget(self) -> float:
        """The tokens a candidate should reach the target within."""
        return BUDGET_SHARE_OF_CMC * next(t for b, _, t in self.cmc_curve if b == CMC_BUDGET_BETA)


def split_data(config: SearchConfig) -> tuple[list[TrajectorySet], list[TrajectorySet]]:
    """(search, validation) datasets: a fixed-seed split, or ``config.validation`` whole."""
    data = load_datasets(list(config.data))
    if config.validation:
        return data, load_datasets(list(config.validation))
    pairs = [split_problems(ts, config.split_seed, fold=config.split_fold) for ts in data]
    return [s for s, _ in pairs], [v for _, v in pairs]


def measure_references(config: SearchConfig, search_sets: Sequence[TrajectorySet],
                       executor: ChunkExecutor | None = None) -> References:
    """SC@64 and CMC over ``betas`` ∪ {0.5} on the search split, in one replay run on
    ``executor`` (default: the local pool)."""
    cmc_betas = sorted(set(config.betas) | {CMC_BUDGET_BETA})
    results = evaluate_many([SC64] + [ControllerSpec("cmc", b) for b in cmc_betas], search_sets,
                            ReplayConfig(shuffles=config.search_shuffles, workers=config.workers or None,
                                       progress=False), keep_episodes=False, executor=executor)
    n = len(search_sets)
    groups = [results[i * n:(i + 1) * n] for i in range(len(results) // n)]
    sc64_accuracy, sc64_tokens = mean_over_datasets(groups[0])
    curve = tuple((b, *mean_over_datasets(g)) for b, g in zip(cmc_betas, groups[1:]))
    return References(sc64_accuracy, sc64_tokens, curve)


ExplorerFactory = Callable[[SearchConfig, References, str], Explorer]
"""Builds an explorer from the settings, the references and what follows ``kind:`` in
``config.explorer`` (e.g. the model of ``openai:MODEL``)."""
EXPLORERS: Registry[ExplorerFactory] = Registry("explorer")


@EXPLORERS.register("evolve")
def _evolve(config: SearchConfig, references: References, _arg: str) -> Explorer:
    return EvolveExplorer(seed=config.seed, target_accuracy=references.sc64_accuracy,
                          budget_tokens=references.token_budget, reference=references.cmc_points)


@EXPLORERS.register("openai")
def _openai(config: SearchConfig, references: References, model: str) -> Explorer:
    return LLMExplorer(model, price_input=config.price_input, price_output=config.price_output, seed=config.seed)


def make_explorer(config: SearchConfig, references: References) -> Explorer:
    """The explorer ``config.explorer`` names (``kind`` or ``kind:argument``), aimed at the
    references' goal."""
    kind, _, arg = config.explorer.partition(":")
    return EXPLORERS.get(kind, "search config: explorer")(config, references, arg)


def archive_factory(explorer: Explorer, references: References) -> Callable[[list[Candidate]], Archive]:
    """How the loop rebuilds the archive: the explorer's own when it has one, else one ranked
    by the references' goal."""
    if hasattr(explorer, "archive"):
        return explorer.archive
    return lambda cands: Archive.from_candidates(cands, target_accuracy=references.sc64_accuracy,
                                                 budget_tokens=references.token_budget,
                                                 reference=references.cmc_points)


__all__ = ["BUDGET_SHARE_OF_CMC", "EXPLORERS", "References", "split_data", "measure_references", "make_explorer",
           "archive_factory"]
