"""``autotts search`` end to end: data split, explorer, loop, selection, challenger.

Lives in ``tracking/`` because it owns the MLflow parent run; the search logic itself is
in ``search/`` and does not log.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.controllers.reference import SC64
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.replay.runner import EvalConfig, evaluate_many
from mlflow_autotts.search.archive import Archive
from mlflow_autotts.search.config import SearchConfig
from mlflow_autotts.search.loop import Scorer, SearchOutcome, run_search
from mlflow_autotts.search.selection import Selection, select
from mlflow_autotts.search.split import split_problems
from mlflow_autotts.tracking.search_run import CONFIG_FILE, MlflowRecorder

BUDGET_SHARE_OF_CMC = 0.8
"""The search chases SC@64's accuracy within this share of CMC β=0.5's tokens."""


@dataclass
class SearchJobResult:
    run_id: str
    outcome: SearchOutcome
    selection: Selection
    challenger_version: str | None


def split_data(config: SearchConfig) -> tuple[list[TrajectorySet], list[TrajectorySet]]:
    """(search, validation) datasets: a fixed-seed split, or ``config.validation`` whole."""
    from mlflow_autotts.data.uris import load_datasets

    data = load_datasets(list(config.data))
    if config.validation:
        return data, load_datasets(list(config.validation))
    pairs = [split_problems(ts, config.split_seed) for ts in data]
    return [s for s, _ in pairs], [v for _, v in pairs]


def make_explorer(config: SearchConfig, target_accuracy: float, budget_tokens: float):
    if config.explorer == "evolve":
        from mlflow_autotts.search.evolve import EvolveExplorer

        return EvolveExplorer(seed=config.seed, target_accuracy=target_accuracy, budget_tokens=budget_tokens)
    from mlflow_autotts.search.llm_explorer import LLMExplorer

    return LLMExplorer(config.explorer.split(":", 1)[1], price_input=config.price_input,
                       price_output=config.price_output, seed=config.seed)


def _mean(results, attr: str) -> float:
    return sum(getattr(r, attr) for r in results) / len(results)


def _start_parent(config: SearchConfig, resume: str | None):
    import mlflow

    if resume:
        try:
            run = mlflow.start_run(run_id=resume)
        except Exception as exc:
            raise AutoTTSError(f"cannot resume search run {resume!r}: {str(exc).splitlines()[0]}") from None
        return run
    if os.environ.get("MLFLOW_RUN_ID"):
        return mlflow.start_run()  # under `mlflow run`
    exp = mlflow.get_experiment_by_name(config.experiment)
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(config.experiment)
    return mlflow.start_run(experiment_id=exp_id, run_name="search")


def stored_config(run_id: str) -> SearchConfig:
    """The settings a search run was started with (``--resume`` continues with them)."""
    import mlflow

    try:
        raw = mlflow.artifacts.load_text(f"runs:/{run_id}/{CONFIG_FILE}")
    except Exception as exc:
        raise AutoTTSError(f"run {run_id!r} is not a search run (no {CONFIG_FILE}): "
                           f"{str(exc).splitlines()[0]}") from None
    from mlflow_autotts.search.config import build_config

    return build_config(None, json.loads(raw))


def run_search_job(config: SearchConfig, resume: str | None = None, progress: bool = True) -> SearchJobResult:
    import mlflow

    if resume:
        config = replace(stored_config(resume), workers=config.workers)
    search_sets, validation_sets = split_data(config)
    with _start_parent(config, resume) as run:
        parent_id = run.info.run_id
        client = mlflow.tracking.MlflowClient()
        if not resume:
            # under `mlflow run` the -P values are already params (e.g. "20" for 20.0): keep them
            given = client.get_run(parent_id).data.params
            mlflow.log_params({k: str(v)[:6000] for k, v in config.params().items() if k not in given})
            mlflow.log_text(json.dumps(asdict(config), indent=2), CONFIG_FILE)
            mlflow.set_tags({"autotts.command": "search", "autotts.explorer": config.explorer})
        # what every candidate is measured against on the search split: SC@64's accuracy,
        # reached within the token budget of the goal (80% of CMC at β=0.5)
        cmc_betas = sorted(set(config.betas) | {0.5})
        refs = evaluate_many([SC64] + [ControllerSpec("cmc", b) for b in cmc_betas],
                             search_sets, EvalConfig(shuffles=config.search_shuffles, workers=config.workers or None,
                                                     progress=False), keep_episodes=False)
        n = len(search_sets)
        groups = [refs[i * n:(i + 1) * n] for i in range(len(refs) // n)]
        sc64_search, sc64_tokens = _mean(groups[0], "accuracy"), _mean(groups[0], "mean_tokens")
        cmc_curve = [(b, _mean(g, "accuracy"), _mean(g, "mean_tokens")) for b, g in zip(cmc_betas, groups[1:])]
        budget = BUDGET_SHARE_OF_CMC * next(t for b, _, t in cmc_curve if b == 0.5)
        client.log_batch(parent_id, metrics=_metrics({"sc64.search.accuracy": sc64_search,
                                                      "sc64.search.mean_tokens": sc64_tokens,
                                                      "search.token_budget": budget}))
        explorer = make_explorer(config, sc64_search, budget)
        if config.explorer.startswith("openai:"):
            mlflow.openai.autolog()
        archive_of = (explorer.archive if hasattr(explorer, "archive") else
                      lambda cands: Archive.from_candidates(cands, target_accuracy=sc64_search, budget_tokens=budget))
        recorder = MlflowRecorder(config, parent_id, log_models=config.log_models)
        outcome = run_search(config, explorer, Scorer(config, search_sets), recorder, archive_of,
                             progress_bar=progress)
        mlflow.set_tag("autotts.stop_reason", outcome.stop_reason)
        selection = select(config, outcome.archive, validation_sets)
        version = _log_selection(config, outcome, selection, cmc_curve, (sc64_tokens, sc64_search), parent_id)
    return SearchJobResult(parent_id, outcome, selection, version)


def _metrics(values: dict[str, float]):
    from mlflow.entities import Metric

    return [Metric(k, float(v), 0, 0) for k, v in values.items() if v is not None and math.isfinite(float(v))]


def selection_rows(selection: Selection) -> list[dict[str, Any]]:
    """The comparison table: finalists, SC@64, CMC at several β, ASC, ESC (validation data)."""
    rows = []
    for label, points in [("sc@64", [selection.sc64])] + [(p.label, [p]) for p in selection.baselines] + [
            (cid, pts) for cid, pts in selection.finalists.items()]:
        for p in points:
            rows.append({"controller": label, "beta": p.beta, "accuracy": p.accuracy, "mean_tokens": p.mean_tokens,
                         "winner": selection.winner_point is p,
                         **{f"accuracy.{d}": a for d, (a, _) in p.per_data.items()},
                         **{f"mean_tokens.{d}": t for d, (_, t) in p.per_data.items()}})
    return rows


def _log_selection(config: SearchConfig, outcome: SearchOutcome, selection: Selection,
                   cmc_curve, sc64_point, parent_id: str) -> str | None:
    import mlflow

    from mlflow_autotts.tracking import plots

    rows = selection_rows(selection)
    mlflow.log_text(json.dumps(rows, indent=2, default=str), "selection.json")
    mlflow.log_text(json.dumps(outcome.archive.to_dict(), indent=2, default=str), "archive.json")
    # Pareto plot (search split): every candidate's β points, the front, the references
    pts = [plots.Point(c.id, tok, acc, group="candidates", kind="candidate")
           for c in outcome.candidates if c.ok for _, acc, tok in c.curve()]
    front = plots.Curve("Pareto front", [(f.tokens, f.accuracy) for f in outcome.archive.front], group="front")
    cmc = plots.Curve("cmc (β sweep)", [(t, a) for _, a, t in cmc_curve], group="cmc",
                      point_labels=[f"β={b:g}" for b, _, _ in cmc_curve])
    refs = [plots.Point("sc@64", sc64_point[0], sc64_point[1], group="sc@64", kind="sc@64")]
    fig = plots.tradeoff_figure([front, cmc], pts + refs, title="search split: candidates across β", label_points=False)
    mlflow.log_figure(fig, "pareto.png")
    client = mlflow.tracking.MlflowClient()
    history = client.get_metric_history(parent_id, "best_tokens_at_target")
    ylabel = "fewest tokens reaching SC@64 accuracy (search split)"
    if not history:  # no candidate reached the target: show the best accuracy instead
        history, ylabel = client.get_metric_history(parent_id, "best_accuracy"), "best accuracy % (search split)"
    history = sorted(history, key=lambda m: m.step)
    mlflow.log_figure(plots.progress_figure([m.step for m in history], [m.value for m in history], ylabel=ylabel),
                      "progress.png")
    sel = selection
    summary = {"validation.sc64.accuracy": sel.sc64.accuracy, "validation.sc64.mean_tokens": sel.sc64.mean_tokens}
    if sel.winner_point is not None:
        summary.update({"validation.winner.accuracy": sel.winner_point.accuracy,
                        "validation.winner.mean_tokens": sel.winner_point.mean_tokens})
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
