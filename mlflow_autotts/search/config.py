"""Search settings: one dataclass, the single source of the search's CLI options, YAML
files and MLproject parameters (derived by ``mlflow_autotts.settings``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlflow_autotts import settings
from mlflow_autotts.cluster.choice import check_executor
from mlflow_autotts.errors import AutoTTSError

PUBLISHED_AIME24 = tuple(f"autotts:Qwen3-{m}/aime24" for m in ("0.6B", "1.7B", "4B", "8B"))


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search run depends on; logged as the parent run's params."""

    data: tuple[str, ...] = PUBLISHED_AIME24
    """Dataset URIs to search on (split into search/validation unless ``validation`` is set)."""
    validation: tuple[str, ...] = ()
    """Separate validation datasets; empty means a fixed-seed 1/3 split of ``data``."""
    split_seed: int = 0
    """Seed of the search/validation split."""
    split_fold: int = 0
    """Which third of each dataset's problems is held out for validation (0, 1 or 2): three
    searches with folds 0, 1, 2 are a cross-validation that holds out every problem once."""
    explorer: str = "evolve"
    """``evolve`` (offline, no LLM) or ``openai:<model>`` (any OpenAI-compatible endpoint)."""
    seed: int = 0
    """Seed of the explorer's random choices."""
    max_candidates: int = 48
    """Stop after this many candidates (failed ones count)."""
    time_budget_minutes: float = 20.0
    """Stop proposing once this much time has passed since the search started."""
    budget_usd: float | None = None
    """Stop proposing once the explorer has cost this much (LLM explorers)."""
    budget_tokens: int | None = None
    """Stop proposing once the explorer has used this many tokens (input + output)."""
    price_input: float = 0.0
    """Explorer price, USD per million input tokens."""
    price_output: float = 0.0
    """Explorer price, USD per million output tokens."""
    population: int = 8
    """Proposals per generation; the archive is updated between generations, which keeps
    a seeded search reproducible whatever the number of workers."""
    workers: int = 0
    """Candidates scored at once, each in its own sandbox process; 0 means all cores (on
    Ray: all the cluster's CPUs)."""
    executor: str = "local"
    """Where candidates and baselines are scored: ``local`` (this machine's processes) or
    ``ray`` (the cluster at RAY_ADDRESS, else a local Ray instance), each candidate still in
    its sandbox on the worker node."""
    betas: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    """β sweep each candidate is scored over."""
    search_shuffles: int = 20
    """Shuffles per candidate on the search split."""
    final_shuffles: int = 100
    """Shuffles for finalists on the validation data."""
    finalists: int = 6
    """Candidates re-scored on validation: the best by search objective, near-copies of a
    better one skipped."""
    select_margin: float = 0.0
    """Points above SC@64's validation accuracy the *lower confidence bound* of a winner's
    accuracy must reach (see ``select_confidence``)."""
    select_confidence: float = 0.8
    """One-sided confidence of the lower bounds the winner is chosen by (a paired bootstrap
    over the validation problems): higher asks for surer gains, at more tokens."""
    bootstrap_resamples: int = 2000
    """Bootstrap resamples of the validation problems behind every lower bound."""
    candidate_timeout_s: float = 300.0
    """Wall-clock limit of one candidate's sandbox."""
    candidate_memory_mb: int = 1024
    """Memory limit of one candidate's sandbox."""
    allow_weaker_isolation: bool = False
    """Run controller code that is not built in even where the sandbox cannot give its full
    isolation here (e.g. not root, no network namespace); the weaker isolation is recorded."""
    experiment: str = "autotts"
    """MLflow experiment."""
    model_name: str = "autotts-controller"
    """Registered model the winner becomes a version of."""
    alias: str = "challenger"
    """Alias set on the winner's version."""
    log_models: bool = True
    """Log every scored candidate as a pyfunc model in its child run."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> AutoTTSError:
            return AutoTTSError(f"search config: {name} {why}, got {getattr(self, name)!r}")

        if not self.data:
            raise bad("data", "needs at least one dataset URI")
        for name in ("max_candidates", "population", "search_shuffles", "final_shuffles", "finalists"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be >= 1")
        if self.split_fold not in (0, 1, 2):
            raise bad("split_fold", "must be 0, 1 or 2")
        if self.workers < 0:
            raise bad("workers", "must be >= 0")
        check_executor(self.executor, "search config")
        if not self.time_budget_minutes > 0:
            raise bad("time_budget_minutes", "must be > 0")
        for name in ("budget_usd", "budget_tokens"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise bad(name, "must be > 0 when set")
        if not 0.5 <= self.select_confidence < 1.0:
            raise bad("select_confidence", "must be in [0.5, 1)")
        if self.bootstrap_resamples < 100:
            raise bad("bootstrap_resamples", "must be >= 100")
        if not 0.0 <= self.select_margin <= 100.0:
            raise bad("select_margin", "must be in [0, 100]")
        if min(self.price_input, self.price_output) < 0:
            raise AutoTTSError("search config: prices must be >= 0")
        if not self.betas or any(not 0.0 <= b <= 1.0 for b in self.betas):
            raise bad("betas", "must be values in [0, 1]")
        if not (self.explorer == "evolve" or (self.explorer.startswith("openai:") and len(self.explorer) > 7)):
            raise bad("explorer", "must be 'evolve' or 'openai:<model>'")

    def params(self) -> dict[str, Any]:
        """Flat, string-friendly form for MLflow params."""
        return {k: settings.flat(v) for k, v in settings.to_dict(self).items()}


def build_config(file: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Defaults, then the YAML ``file``, then ``overrides`` (values given on a command line;
    None or "" = not given)."""
    return settings.build(SearchConfig, file, overrides)


__all__ = ["SearchConfig", "build_config", "PUBLISHED_AIME24"]
