"""``autotts search``'s MLflow parent run: start or resume it, log the settings and the
references, run the search, log the selection and register the challenger.

The search itself (data split, references, explorer, loop, selection) is in ``search/`` and
does not log; this module is where it meets MLflow (see docs/architecture.md).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

from mlflow_autotts import settings
from mlflow_autotts.cluster.choice import chunk_executor, sandbox
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.search.config import SearchConfig, build_config
from mlflow_autotts.search.job import References, archive_factory, make_explorer, measure_references, split_data
from mlflow_autotts.search.loop import Scorer, SearchOutcome, run_search, search_limits
from mlflow_autotts.search.selection import Selection, select
from mlflow_autotts.search.split import SEARCH_SUFFIX, VALIDATION_SUFFIX
from mlflow_autotts.tracking.datasets import log_datasets
from mlflow_autotts.tracking.mlflow_utils import experiment_id, first_line, param_value, params_beside
from mlflow_autotts.tracking.search_run import CONFIG_FILE, MlflowRecorder, isolation_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass
class SearchJobResult:
    run_id: str
    outcome: SearchOutcome
    selection: Selection
    challenger_version: str | None


def _start_parent(config: SearchConfig, resume: str | None):
    import mlflow

    if resume:
        try:
            run = mlflow.start_run(run_id=resume)
        except Exception as exc:
            raise AutoTTSError(f"cannot resume search run {resume!r}: {first_line(exc)}") from None
        return run
    if os.environ.get("MLFLOW_RUN_ID"):
        return mlflow.start_run()  # under `mlflow run`
    return mlflow.start_run(experiment_id=experiment_id(config.experiment), run_name="search")


def stored_config(run_id: str) -> SearchConfig:
    """The settings a search run was started with (``--resume`` continues with them)."""
    import mlflow

    try:
        raw = mlflow.artifacts.load_text(f"runs:/{run_id}/{CONFIG_FILE}")
    except Exception as exc:
        raise AutoTTSError(f"run {run_id!r} is not a search run (no {CONFIG_FILE}): "
                           f"{first_line(exc)}") from None
    return build_config(None, json.loads(raw))


def run_search_job(config: SearchConfig, resume: str | None = None, progress: bool = True) -> SearchJobResult:
    import mlflow

    if resume:
        config = replace(stored_config(resume), workers=config.workers, executor=config.executor)
    search_sets, validation_sets = split_data(config)
    with _start_parent(config, resume) as run:
        parent_id = run.info.run_id
        client = mlflow.tracking.MlflowClient()
        if not resume:
            _log_settings(client, parent_id, config)
            mlflow.log_text(json.dumps(asdict(config), indent=2), CONFIG_FILE)
            mlflow.set_tags({"autotts.command": "search", "autotts.explorer": config.explorer})
        _log_data(client, parent_id, search_sets, validation_sets)
        chunks = chunk_executor(config.executor, config.workers or None)
        refs = measure_references(config, search_sets, chunks)
        client.log_batch(parent_id, metrics=_metrics({"sc64.search.accuracy": refs.sc64_accuracy,
                                                      "sc64.search.mean_tokens": refs.sc64_tokens,
                                                      "search.token_budget": refs.token_budget}))
        explorer = make_explorer(config, refs)
        if config.explorer.startswith("openai:"):
            mlflow.openai.autolog()
        recorder = MlflowRecorder(config, parent_id, log_models=config.log_models)
        scorer = Scorer(config, search_sets, sandbox(config.executor, search_limits(config), config.workers or None))
        outcome = run_search(config, explorer, scorer, recorder,
                             archive_factory(explorer, refs), progress_bar=progress)
        mlflow.set_tag("autotts.stop_reason", outcome.stop_reason)
        if outcome.isolation is not None:
            client.log_batch(parent_id, tags=isolation_tags(outcome.isolation))
        selection = select(config, outcome.archive, validation_sets, executor=chunks,
                           sandbox=sandbox(config.executor, search_limits(config, scale=5), config.workers or None))
        version = _log_selection(config, outcome, selection, refs, parent_id)
    return SearchJobResult(parent_id, outcome, selection, version)


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
                        lambda key, logged, _text: _same_setting(key, logged, getattr(config, key)))
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
    """The comparison table: finalists (with their bootstrap bounds), SC@64, CMC at several
    β, ASC, ESC (validation data)."""
    rows = []
    for label, points in [("sc@64", [selection.sc64])] + [(p.label, [p]) for p in selection.baselines] + [
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
    sc64 = [plots.Point("sc@64", refs.sc64_tokens, refs.sc64_accuracy, group="sc@64", kind="sc@64")]
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
        mlflow.set_tag("autotts.challenger", "none: no candidate scored")
        return None
    from mlflow_autotts.tracking.challenger import register_challenger

    return register_challenger(config, sel, parent_id)
