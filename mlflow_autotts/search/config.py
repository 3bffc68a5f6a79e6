"""Search settings: one dataclass tree, the single source of the search's CLI options, YAML
files and MLproject parameters (derived by ``mlflow_autotts.settings``).

``SearchConfig`` holds the run-level settings and four parts, each handed whole to the one
piece of the search that needs it: ``exploration`` (the explorer, ``search/explorers.py``),
``budget`` (when the loop stops), ``scoring`` (how a candidate is scored) and ``selection``
(the split and the final choice). Parts are offered flat: every setting keeps its own name
as option, YAML key, MLproject parameter and logged param.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mlflow_autotts import settings
from mlflow_autotts.cluster.choice import check_executor
from mlflow_autotts.search.explorers import ExplorerConfig, search_config_error

PUBLISHED_AIME24 = tuple(f"autotts:Qwen3-{m}/aime24" for m in ("0.6B", "1.7B", "4B", "8B"))
SEARCH_EXPERIMENT = "autotts-search"
"""The MLflow experiment of searches unless ``--experiment`` names another."""


@dataclass(frozen=True)
class SelectionConfig:
    """How the data is split and the winner chosen on the validation part."""

    validation: tuple[str, ...] = ()
    """Separate validation datasets; empty means a fixed-seed 1/3 split of ``data``."""
    split_seed: int = 0
    """Seed of the search/validation split."""
    split_fold: int = settings.bounded(0, choices=(0, 1, 2))
    """Which third of each dataset's problems is held out for validation (0, 1 or 2): three
    searches with folds 0, 1, 2 are a cross-validation that holds out every problem once."""
    final_shuffles: int = settings.bounded(100, ge=1)
    """Shuffles for finalists on the validation data."""
    finalists: int = settings.bounded(6, ge=1)
    """Candidates re-scored on validation: the best by search objective, near-copies of a
    better one skipped."""
    select_margin: float = settings.bounded(0.0, ge=0, le=100)
    """Points above SC@N's validation accuracy (N: the data's branches per question, 64 on
    the published sets) the *lower confidence bound* of a winner's accuracy must reach (see
    ``select_confidence``)."""
    min_reference_accuracy: float = settings.bounded(10.0, ge=0, le=100)
    """SC@N's validation accuracy (%) below which no winner is declared, nothing registered:
    against a reference that answers (almost) nothing right, every controller "reaches" it
    at about 0% and its token savings mean nothing. 0 turns the check off."""
    select_confidence: float = settings.bounded(0.8, ge=0.5, lt=1)
    """One-sided confidence of the lower bounds the winner is chosen by (a paired bootstrap
    over the validation problems): higher asks for surer gains, at more tokens."""
    bootstrap_resamples: int = settings.bounded(2000, ge=100)
    """Bootstrap resamples of the validation problems behind every lower bound."""

    def __post_init__(self) -> None:
        settings.check_bounds(self, search_config_error)


@dataclass(frozen=True)
class BudgetConfig:
    """When the search stops proposing, and how many it proposes per generation."""

    max_candidates: int = settings.bounded(48, ge=1)
    """Stop after this many candidates (failed ones count)."""
    time_budget_minutes: float = settings.bounded(20.0, gt=0)
    """Stop proposing once this much time has passed since the search started."""
    budget_usd: float | None = settings.bounded(None, gt=0)
    """Stop proposing once the explorer has cost this much (LLM explorers)."""
    budget_tokens: int | None = settings.bounded(None, gt=0)
    """Stop proposing once the explorer has used this many tokens (input + output)."""
    population: int = settings.bounded(8, ge=1)
    """Proposals per generation; the archive is updated between generations, which keeps
    a seeded search reproducible whatever the number of workers."""

    def __post_init__(self) -> None:
        settings.check_bounds(self, search_config_error)


@dataclass(frozen=True)
class ScoringConfig:
    """How one candidate is scored on the search split, and the sandbox it runs in."""

    search_shuffles: int = settings.bounded(20, ge=1)
    """Shuffles per candidate on the search split."""
    candidate_timeout_s: float = 300.0
    """Wall-clock limit of one candidate's sandbox."""
    candidate_memory_mb: int = 1024
    """Memory limit of one candidate's sandbox."""
    allow_weaker_isolation: bool = False
    """Run controller code that is not built in even where the sandbox cannot give its full
    isolation here (e.g. not root, no network namespace); the weaker isolation is recorded."""

    def __post_init__(self) -> None:
        settings.check_bounds(self, search_config_error)


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search run depends on; logged (flat) as the parent run's params."""

    data: tuple[str, ...] = PUBLISHED_AIME24
    """Dataset URIs to search on (split into search/validation unless ``validation`` is set)."""
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    """The split and the final choice."""
    exploration: ExplorerConfig = field(default_factory=ExplorerConfig)
    """The explorer and its options."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """When the search stops."""
    workers: int = settings.bounded(0, ge=0)
    """Candidates scored at once, each in its own sandbox process; 0 means all cores (on
    Ray: all the cluster's CPUs)."""
    executor: str = "local"
    """Where candidates and baselines are scored: ``local`` (this machine's processes) or
    ``ray`` (the cluster at RAY_ADDRESS, else a local Ray instance), each candidate still in
    its sandbox on the worker node."""
    betas: tuple[float, ...] = settings.bounded((0.0, 0.2, 0.4, 0.6, 0.8, 1.0), ge=0, le=1)
    """β sweep each candidate is scored over."""
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    """How a candidate is scored."""
    experiment: str = SEARCH_EXPERIMENT
    """MLflow experiment (each kind of work has its own)."""
    model_name: str = "autotts-controller"
    """Registered model the winner becomes a version of."""
    alias: str = "challenger"
    """Alias set on the winner's version."""
    log_models: bool = True
    """Log every scored candidate as a pyfunc model in its child run."""

    def __post_init__(self) -> None:
        if not self.data:
            raise search_config_error("data", f"needs at least one dataset URI, got {self.data!r}")
        if not self.betas:
            raise search_config_error("betas", f"needs at least one value in [0, 1], got {self.betas!r}")
        settings.check_bounds(self, search_config_error)
        check_executor(self.executor, "search config")

    @property
    def pool(self) -> int | None:
        """``workers`` as pools take it: None for "all cores"."""
        return self.workers or None

    def params(self) -> dict[str, Any]:
        """Flat, string-friendly form for MLflow params."""
        return {k: settings.flat(v) for k, v in settings.to_dict(self).items()}


def build_config(file: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Defaults, then the YAML ``file``, then ``overrides`` (flat setting names, as given on
    a command line or stored by a search run; None or "" = not given)."""
    return settings.build(SearchConfig, file, overrides)


__all__ = ["SearchConfig", "SelectionConfig", "BudgetConfig", "ScoringConfig", "ExplorerConfig", "build_config",
           "PUBLISHED_AIME24"]
