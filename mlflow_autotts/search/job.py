"""The search application, composed in one place and without MLflow.

``run(config, recorder)`` is the whole of a search run (see docs/architecture.md, "The
flow"): split the data, measure the references the goal is set by, build the explorer,
scorer and loop, search until a budget is spent, re-score the finalists on validation and
choose the winner. Each step is handed only the settings part it needs. Whatever is kept
of it goes to a ``JobRecorder``: MLflow in production (``tracking.search_job``), a fake in
tests, nothing (``NullJobRecorder``) for experiments. The recorder decides how things are
kept; it decides nothing about how the search runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Protocol, Sequence

from mlflow_autotts.cluster.choice import chunk_executor, sandbox
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.search.archive import Archive
from mlflow_autotts.search.config import SearchConfig, SelectionConfig
from mlflow_autotts.search.explorers import EXPLORERS, make_explorer
from mlflow_autotts.search.loop import NullRecorder, Recorder, Scorer, SearchOutcome, run_search, search_limits
from mlflow_autotts.search.references import BUDGET_SHARE_OF_CMC, CMC_BUDGET_BETA, References, measure_references
from mlflow_autotts.search.selection import Selection, select
from mlflow_autotts.search.split import split_problems
from mlflow_autotts.search.types import Candidate, Explorer


@dataclass
class SearchJobResult:
    """What a search run leaves: its id with the recorder, the search and the selection."""

    run_id: str
    outcome: SearchOutcome
    selection: Selection
    challenger_version: str | None
    """The registered version of the winner (None: no winner, or nothing registered)."""


class JobRecorder(Protocol):
    """Where a search run is kept, step by step (``tracking.search_job.MlflowJobRecorder``).

    ``open`` is entered around the whole run (start or resume it; an error inside marks it
    failed); ``candidates`` is the per-candidate ``search.loop.Recorder`` of that run."""

    def open(self, config: SearchConfig) -> ContextManager[str]:
        """Start (or resume) the run of ``config``; yields its id."""
        ...

    def data(self, search_sets: Sequence[TrajectorySet], validation_sets: Sequence[TrajectorySet]) -> None:
        """The split the run searches and validates on."""
        ...

    def references(self, references: References) -> None:
        """SC@64 and CMC on the search split: the goal."""
        ...

    def exploring(self, explorer: Explorer) -> None:
        """The explorer is built and about to propose (e.g. trace an LLM explorer's calls)."""
        ...

    def candidates(self) -> Recorder:
        """The recorder of each candidate (and of the loop's progress)."""
        ...

    def searched(self, outcome: SearchOutcome) -> None:
        """The loop stopped: why, and the isolation the candidates ran under."""
        ...

    def selected(self, outcome: SearchOutcome, selection: Selection, references: References) -> str | None:
        """The selection on validation; registers the winner, returning its version (or None)."""
        ...


class NullJobRecorder:
    """Keeps nothing: a search run without MLflow (benchmarks, experiments)."""

    def open(self, config: SearchConfig) -> ContextManager[str]:
        return contextlib.nullcontext("")

    def data(self, search_sets: Sequence[TrajectorySet], validation_sets: Sequence[TrajectorySet]) -> None:
        pass

    def references(self, references: References) -> None:
        pass

    def exploring(self, explorer: Explorer) -> None:
        pass

    def candidates(self) -> Recorder:
        return NullRecorder()

    def searched(self, outcome: SearchOutcome) -> None:
        pass

    def selected(self, outcome: SearchOutcome, selection: Selection, references: References) -> str | None:
        return None


def run(config: SearchConfig, recorder: JobRecorder, progress: bool = True) -> SearchJobResult:
    """A whole search run of ``config``, kept by ``recorder``; resuming is the recorder's
    (its ``candidates().recorded()`` gives the candidates already scored)."""
    search_sets, validation_sets = split_data(config.data, config.selection)
    with recorder.open(config) as run_id:
        recorder.data(search_sets, validation_sets)
        chunks = chunk_executor(config.executor, config.pool)
        refs = measure_references(search_sets, config.betas, config.scoring.search_shuffles, config.pool, chunks)
        recorder.references(refs)
        explorer = make_explorer(config.exploration, refs)
        recorder.exploring(explorer)
        scorer = Scorer(config.scoring, config.betas, search_sets,
                        sandbox(config.executor, search_limits(config.scoring), config.pool))
        outcome = run_search(config.budget, explorer, scorer, recorder.candidates(), archive_factory(explorer, refs),
                             workers=config.workers, progress_bar=progress)
        recorder.searched(outcome)
        selection = select(config.selection, outcome.archive, validation_sets, config.betas,
                           seed=config.exploration.seed, workers=config.pool, executor=chunks,
                           sandbox=sandbox(config.executor, search_limits(config.scoring, scale=5), config.pool))
        version = recorder.selected(outcome, selection, refs)
    return SearchJobResult(run_id, outcome, selection, version)


def split_data(data: Sequence[str], config: SelectionConfig) -> tuple[list[TrajectorySet], list[TrajectorySet]]:
    """(search, validation) datasets of ``data``: a fixed-seed split, or ``config.validation`` whole."""
    loaded = load_datasets(list(data))
    if config.validation:
        return loaded, load_datasets(list(config.validation))
    pairs = [split_problems(ts, config.split_seed, fold=config.split_fold) for ts in loaded]
    return [s for s, _ in pairs], [v for _, v in pairs]


def archive_factory(explorer: Explorer, references: References) -> Callable[[list[Candidate]], Archive]:
    """How the loop rebuilds the archive: the explorer's own when it has one, else one ranked
    by the references' goal."""
    if hasattr(explorer, "archive"):
        return explorer.archive
    return lambda cands: Archive.from_candidates(cands, target_accuracy=references.sc64_accuracy,
                                                 budget_tokens=references.token_budget,
                                                 reference=references.cmc_points)


__all__ = ["run", "JobRecorder", "NullJobRecorder", "SearchJobResult", "split_data", "archive_factory",
           "BUDGET_SHARE_OF_CMC", "CMC_BUDGET_BETA", "EXPLORERS", "References", "make_explorer",
           "measure_references"]
