"""``autotts search``'s MLflow side: the ``JobRecorder`` that keeps a search run in MLflow.

The search itself (data split, references, explorer, loop, selection) is composed in
``search/job.py`` and does not log; this module only talks to MLflow: it starts or resumes
the parent run, logs the settings, data, references and selection (with plots), traces an
LLM explorer's calls and registers the challenger (see docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from mlflow_autotts import settings
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.errors import AutoTTSError, first_line
from mlflow_autotts.search import job
from mlflow_autotts.search.config import SearchConfig, build_config
from mlflow_autotts.search.job import SearchJobResult
from mlflow_autotts.search.llm_explorer import LLMExplorer
from mlflow_autotts.search.loop import Recorder, SearchOutcome
from mlflow_autotts.search.references import References
from mlflow_autotts.search.selection import Selection
from mlflow_autotts.search.split import SEARCH_SUFFIX, VALIDATION_SUFFIX
from mlflow_autotts.search.types import Explorer
from mlflow_autotts.tracking.challenger import register_challenger
from mlflow_autotts.tracking.datasets import log_datasets
from mlflow_autotts.tracking.mlflow_utils import (experiment_id, is_generated_name, mark_model_training, param_value,
                                                  params_beside)
from mlflow_autotts.tracking.naming import benchmarks, run_name
from mlflow_autotts.tracking.search_run import CONFIG_FILE, MlflowRecorder, isolation_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient


RUN_NAME_PREFIX = "search"
"""A search run's name until its data is known, and the first part of its name after."""


class MlflowJobRecorder:
    """Keeps a search run in MLflow (implements ``search.job.JobRecorder``): a new parent
    run, the active one under ``mlflow run``, or the run ``resume`` names."""

    def __init__(self, resume: str | None = None):
        self.resume = resume
        self.config: SearchConfig | None = None
        self.run_id = ""
        self._client: "MlflowClient | None" = None
        self._benchmarks = ""

    @property
    def client(self) -> "MlflowClient":
        import mlflow

        if self._client is None:
            self._client = mlflow.tracking.MlflowClient()
        return self._client

    @contextlib.contextmanager
    def open(self, config: SearchConfig) -> Iterator[str]:
        import mlflow

        self.config = config
        with _start_parent(config, self.resume) as run:
            self.run_id = run.info.run_id
            if not self.resume:
                _log_settings(self.client, self.run_id, config)
                mlflow.log_text(json.dumps(settings.to_dict(config), indent=2), CONFIG_FILE)
                mlflow.set_tags({"autotts.command": "search", "autotts.explorer": config.exploration.explorer})
            yield self.run_id

    def data(self, search_sets: Sequence[TrajectorySet], validation_sets: Sequence[TrajectorySet]) -> None:
        _log_data(self.client, self.run_id, search_sets, validation_sets)
        self._benchmarks = benchmarks(ts.provenance.benchmark or ts.name for ts in search_sets)
        self._name(self.config.budget.max_candidates)

    def references(self, references: References) -> None:
        self.client.log_batch(self.run_id, metrics=_metrics({
            "sc64.search.accuracy": references.sc64_accuracy, "sc64.search.mean_tokens": references.sc64_tokens,
            "search.token_budget": references.token_budget}))

    def exploring(self, explorer: Explorer) -> None:
        import mlflow

        if isinstance(explorer, LLMExplorer):
            mlflow.openai.autolog()  # each proposal's chat call becomes a trace of the search run

    def candidates(self) -> Recorder:
        return MlflowRecorder(self.run_id, log_models=self.config.log_models)

    def searched(self, outcome: SearchOutcome) -> None:
        import mlflow

        mlflow.set_tag("autotts.stop_reason", outcome.stop_reason)
        if outcome.isolation is not None:
            self.client.log_batch(self.run_id, tags=isolation_tags(outcome.isolation))
        self._name(len(outcome.candidates))

    def _name(self, candidates: int | None) -> None:
        """Name the run after what it does: ``search-<benchmarks>-<candidates>`` (up to
        ``max_candidates`` while it runs, the number scored once it has); a name given to
        ``mlflow run --run-name`` is kept."""
        current = self.client.get_run(self.run_id).info.run_name
        if is_generated_name(current) or current.startswith(RUN_NAME_PREFIX):
            self.client.update_run(self.run_id, name=run_name(RUN_NAME_PREFIX, self._benchmarks, candidates))

    def selected(self, outcome: SearchOutcome, selection: Selection, references: References) -> str | None:
        return _log_selection(self.config, outcome, selection, references, self.run_id)


def _start_parent(config: SearchConfig, resume: str | None):
    import mlflow

    if resume:
        try:
            run = mlflow.start_run(run_id=resume)
        except Exception as exc:
            raise AutoTTSError(f"cannot resume search run {resume!r}: {first_line(exc)}") from None
        return run
    if os.environ.get("MLFLOW_RUN_ID"):  # under `mlflow run`, in the experiment it chose
        run = mlflow.start_run()
        c = mlflow.tracking.MlflowClient()
        mark_model_training(c, c.get_experiment(run.info.experiment_id))
        return run
    return mlflow.start_run(experiment_id=experiment_id(config.experiment), run_name=RUN_NAME_PREFIX)


def stored_config(run_id: str) -> SearchConfig:
    """The settings a search run was started with (``--resume`` continues with them). The
    file holds the flat settings (as every version wrote it), so older runs load too."""
    import mlflow

    try:
        raw = mlflow.artifacts.load_text(f"runs:/{run_id}/{CONFIG_FILE}")
    except Exception as exc:
        raise AutoTTSError(f"run {run_id!r} is not a search run (no {CONFIG_FILE}): "
                           f"{first_line(exc)}") from None
    return build_config(None, json.loads(raw))


def resumed_config(config: SearchConfig, resume: str | None) -> SearchConfig:
    """The settings of a run: ``config``, or with ``resume`` the stored ones, where only
    how to run (``workers``, ``executor``) is taken from ``config``."""
    if not resume:
        return config
    return replace(stored_config(resume), workers=config.workers, executor=config.executor)


def run_search_job(config: SearchConfig, resume: str | None = None, progress: bool = True) -> SearchJobResult:
    """A search run kept in MLflow: ``search.job.run`` with an ``MlflowJobRecorder`` (what
    ``autotts search`` does)."""
    config = resumed_config(config, resume)
    return job.run(config, MlflowJobRecorder(resume), progress=progress)


def _log_data(client: "MlflowClient", run_id: str, search_sets: Sequence[TrajectorySet],
              validation_sets: Sequence[TrajectorySet]) -> None:
    """The split as dataset inputs: ``search`` (what candidates were scored on) and
    ``validation`` (what the winner was picked on). A split's provenance source carries the
    split suffix; the input's source is the file or URI it came from. Logging again on
    resume adds nothing (same names and digests)."""
    for sets, context, suffix in ((search_sets, "search", SEARCH_SUFFIX),
                                  (validation_sets, "validation", VALIDATION_SUFFIX)):
        log_datasets(run_id, sets, context, client=client,
                     sources=[ts.provenance.source.removesuffix(suffix) for ts in sets])


def _log_settings(client, run_id: str, config: SearchConfig) -> None:
    """The settings as params. Under ``mlflow run`` the run already holds the ``-P`` values as
    MLflow logged them ('' for a parameter not given): a key whose value means the same
    setting is kept, and where it differs the effective value goes to ``<key>.resolved``, as
    evaluate runs do."""
    from mlflow.entities import Param

    wanted = {key: param_value(value) for key, value in config.params().items()}
    new = params_beside(client.get_run(run_id).data.params, wanted,
                        lambda key, logged, _text: _same_setting(key, logged, settings.value(config, key)))
    client.log_batch(run_id, params=[Param(k, v) for k, v in new.items()])


def _same_setting(key: str, logged: str, value: Any) -> bool:
    """Whether a param MLflow logged (e.g. "20" for 20.0) gives the setting ``value``."""
    try:
        return settings.coerce(SearchConfig, key, logged) == value
    except AutoTTSError:
        return False


def _metrics(values: dict[str, float]):
    from mlflow.entities import Metric

    return [Metric(k, float(v), 0, 0) for k, v in values.items() if v is not None and math.isfinite(float(v))]


def selection_rows(selection: Selection) -> list[dict[str, Any]]:
    """The comparison table: finalists (with their bootstrap bounds), SC@N (labelled with the
    data's N; its columns keep the name ``vs_sc64``), CMC at several β, ASC, ESC (validation
    data)."""
    rows = []
    for label, points in [(selection.sc_label, [selection.sc64])] + [(p.label, [p]) for p in selection.baselines] + [
            (cid, pts) for cid, pts in selection.finalists.items()]:
        curve = selection.curves.get(label)
        for p in points:
            row = {"controller": label, "beta": p.beta, "accuracy": p.accuracy, "mean_tokens": p.mean_tokens,
                   "winner": selection.winner_point is p}
            if p.vs_sc64 is not None:
                row.update({"vs_sc64": p.vs_sc64[1], "vs_sc64_lcb": p.vs_sc64[0], "vs_sc64_ucb": p.vs_sc64[2]})
            if curve is not None:
                row.update({"gain_over_cmc": curve.gain_over_cmc[1], "gain_over_cmc_lcb": curve.gain_over_cmc[0],
                            "dominates_cmc": curve.dominates})
            row.update({f"accuracy.{d}": a for d, (a, _) in p.per_data.items()})
            row.update({f"mean_tokens.{d}": t for d, (_, t) in p.per_data.items()})
            rows.append(row)
    return rows


def _seed_marks(outcome: SearchOutcome) -> list[tuple[float, str]]:
    """Where the explorer's seeds end (a vertical line on the progress plot)."""
    seeds = [i + 1 for i, c in enumerate(outcome.candidates) if c.proposal.meta.get("op") == "seed"]
    return [(max(seeds) + 0.5, "last seed")] if seeds else []


def _log_selection(config: SearchConfig, outcome: SearchOutcome, selection: Selection,
                   refs: References, parent_id: str) -> str | None:
    import mlflow

    from mlflow_autotts.tracking import plots

    rows = selection_rows(selection)
    mlflow.log_text(json.dumps(rows, indent=2, default=str), "selection.json")
    mlflow.log_text(json.dumps(outcome.archive.to_dict(), indent=2, default=str), "archive.json")
    # Pareto plot (search split): every candidate's β points, the front, the references
    pts = [plots.Point(c.id, tok, acc, group="candidates", kind="candidate")
           for c in outcome.candidates if c.ok for _, acc, tok in c.curve()]
    front = plots.Curve("Pareto front", [(f.tokens, f.accuracy) for f in outcome.archive.front], group="front")
    cmc = plots.Curve("cmc (β sweep)", [(t, a) for _, a, t in refs.cmc_curve], group="cmc",
                      point_labels=[f"β={b:g}" for b, _, _ in refs.cmc_curve])
    sc64 = [plots.Point(refs.sc_label, refs.sc64_tokens, refs.sc64_accuracy, group=refs.sc_label, kind=refs.sc_label)]
    fig = plots.tradeoff_figure([front, cmc], pts + sc64, title="search split: candidates across β", label_points=False)
    mlflow.log_figure(fig, "pareto.png")
    client = mlflow.tracking.MlflowClient()
    history = sorted(client.get_metric_history(parent_id, "best_objective"), key=lambda m: m.step)
    mlflow.log_figure(plots.progress_figure(
        [m.step for m in history], [m.value for m in history],
        ylabel="best gain over CMC's β-curve (accuracy points)",
        title="search objective: mean accuracy above CMC across its token range (search split)",
        baseline=(0.0, "CMC"), marks=_seed_marks(outcome)), "progress.png")
    sel = selection
    summary = {"validation.sc64.accuracy": sel.sc64.accuracy, "validation.sc64.mean_tokens": sel.sc64.mean_tokens}
    if sel.winner_point is not None:
        summary.update({"validation.winner.accuracy": sel.winner_point.accuracy,
                        "validation.winner.mean_tokens": sel.winner_point.mean_tokens,
                        "validation.winner.selection_tier": sel.tier})
        if sel.winner_point.vs_sc64 is not None:
            summary["validation.winner.vs_sc64_lcb"] = sel.winner_point.vs_sc64[0]
        if sel.winner_curve is not None:
            summary.update({"validation.winner.gain_over_cmc": sel.winner_curve.gain_over_cmc[1],
                            "validation.winner.gain_over_cmc_lcb": sel.winner_curve.gain_over_cmc[0],
                            "validation.winner.dominance_probability": sel.winner_curve.dominance_probability})
    for p in sel.baselines:
        if p.label == "cmc" and p.beta == 0.5:
            summary["validation.cmc_0.5.mean_tokens"] = p.mean_tokens
            summary["validation.cmc_0.5.accuracy"] = p.accuracy
    mlflow.log_metrics(summary)
    if sel.winner is None:
        mlflow.set_tag("autotts.challenger", f"none: {sel.refused or 'no candidate scored'}")
        return None
    return register_challenger(sel, parent_id, config.model_name, config.alias)


__all__ = ["MlflowJobRecorder", "SearchJobResult", "run_search_job", "resumed_config", "stored_config",
           "selection_rows"]
