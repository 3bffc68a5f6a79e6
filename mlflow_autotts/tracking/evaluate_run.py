"""Logging an ``autotts evaluate`` result to MLflow (``docs/architecture.md``, "MLflow conventions").

One run per evaluation. Layout:

- params: ``controller``, ``beta`` (the β values, sorted, comma-separated; absent for
  controllers that ignore β), ``shuffles``, ``data`` (dataset names, comma-separated),
  ``controller.<name>`` per controller parameter, then the caller's ``params``. A key the
  run already holds with another value (``mlflow run`` logs its ``-P`` values first, e.g.
  ``data`` as URIs) is kept, and ours is logged as ``<key>.resolved``.
- metrics, per dataset ``<model>/<benchmark>`` (key part ``<model>.<benchmark>``, see
  ``naming``) and for the mean over datasets (key part ``mean``): ``accuracy`` (%),
  ``mean_tokens`` (per problem), ``token_reduction_vs_sc64`` (% fewer tokens than SC@64
  on the same data; the mean is over datasets that have SC@64).
  With several β, each base key holds one value per β with ``step`` = index of β in
  ascending order (so MLflow's "latest" value is the largest β, and the step chart is the
  β sweep), a ``beta`` metric maps step to β, and every β also gets its own suffixed key,
  ``accuracy.<model>.<benchmark>.beta_0.5``, so runs can be compared or searched at one β.
  The suffixed keys are logged whenever β applies, even for a single β, so that queries
  work the same across runs.
- artifacts: ``results.json`` (``mlflow.log_table``: one summary row per result, with a
  ``role`` column: ``evaluated``, ``sc64`` or ``reference``), ``episodes.parquet`` (all
  per-episode rows, with ``role``, ``controller`` and ``beta`` columns), and with several β
  ``accuracy_vs_tokens.png``.
- tags: ``autotts.command=evaluate`` plus the caller's ``tags``.
- dataset inputs: each trajectory set of ``report.trajectories`` with context
  ``evaluation`` (name, content digest, source; ``tracking/datasets.py``).

Everything goes through ``MlflowClient.log_batch`` (which splits into MLflow's batch
limits itself): one call per kind, not per value. MLflow is imported inside the functions:
the CLI imports this module at start-up.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_autotts.replay.report import EvaluationReport, token_reduction
from mlflow_autotts.replay.results import EvalResult, mean_over_datasets
from mlflow_autotts.tracking import plots
from mlflow_autotts.tracking.datasets import log_datasets
from mlflow_autotts.evaluation import EVALUATE_EXPERIMENT
from mlflow_autotts.tracking.mlflow_utils import client, param_value, params_beside, target_run
from mlflow_autotts.tracking.naming import MEAN_KEY, benchmarks, dataset_keys, metric_key, run_name as make_run_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

METRICS = ("accuracy", "mean_tokens", "token_reduction_vs_sc64")
RESULTS_TABLE = "results.json"
EPISODES_FILE = "episodes.parquet"
PLOT_FILE = "accuracy_vs_tokens.png"
COMMAND_TAG = "autotts.command"


def log_evaluation(
    report: EvaluationReport,
    *,
    experiment: str = EVALUATE_EXPERIMENT,
    run_name: str | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
) -> str:
    """Log ``report`` to one MLflow run and return its id.

    The run is the active one if there is one (the caller's ``with mlflow.start_run()``),
    else the run ``mlflow run`` handed over in ``MLFLOW_RUN_ID``, else a new run in
    ``experiment`` (created if missing). A run started or resumed here is ended here
    (FAILED if logging raised); an already-active run is left active.
    """
    betas = _check(report)
    c = client()
    with target_run(c, experiment, run_name, default_run_name(report)) as run_id:
        _log_params_and_tags(c, run_id, report, betas, params or {}, tags or {})
        log_datasets(run_id, report.trajectories, "evaluation", client=c)
        _log_metrics(c, run_id, report, betas)
        _log_tables(c, run_id, report)
        if sum(b is not None for b in betas) > 1:
            c.log_figure(run_id, plots.accuracy_tokens_figure(report), PLOT_FILE)
    return run_id


# ---------------------------------------------------------------------------- the run
def default_run_name(report: EvaluationReport) -> str:
    """``evaluate-cmc-aime24``: the controller evaluated and the benchmarks it was evaluated on."""
    return make_run_name("evaluate", report.results[0].controller if report.results else None,
                         benchmarks(report.datasets))


def _check(report: EvaluationReport) -> list[float | None]:
    """β levels in ascending order (None first); rejects reports the run layout cannot hold."""
    if not report.results:
        raise ValueError("the evaluation report has no results to log")
    controllers = sorted({r.controller for r in report.results})
    if len(controllers) > 1:
        raise ValueError(f"one evaluated controller per run, the report has {controllers}")
    seen: set[tuple[str, float | None]] = set()
    for r in report.results:
        if (r.data, r.beta) in seen:
            raise ValueError(f"the report has two results for {r.data} at beta={r.beta}")
        seen.add((r.data, r.beta))
    return sorted({r.beta for r in report.results}, key=lambda b: (b is not None, b or 0.0))


# ---------------------------------------------------------------------------- params, tags
def _wanted_params(report: EvaluationReport, betas: list[float | None], extra: dict[str, Any]) -> dict[str, str]:
    first = report.results[0]
    out = {"controller": first.controller}
    real = [b for b in betas if b is not None]
    if real:
        out["beta"] = ",".join(repr(float(b)) for b in real)
    out["shuffles"] = ",".join(str(s) for s in dict.fromkeys(r.shuffles for r in report.results))
    out["data"] = ",".join(report.datasets)
    for k, v in first.params.items():
        out[f"controller.{k}"] = v
    out.update(extra)
    return {k: param_value(v) for k, v in out.items()}


def _log_params_and_tags(client: "MlflowClient", run_id: str, report: EvaluationReport,
                         betas: list[float | None], extra: dict[str, Any], tags: dict[str, Any]) -> None:
    from mlflow.entities import Param, RunTag  # lazy: see the module docstring

    new = params_beside(client.get_run(run_id).data.params, _wanted_params(report, betas, extra))
    client.log_batch(run_id, params=[Param(k, v) for k, v in new.items()],
                     tags=[RunTag(k, str(v)) for k, v in {COMMAND_TAG: "evaluate", **tags}.items()])


# ---------------------------------------------------------------------------- metrics
def _metric_values(report: EvaluationReport, betas: list[float | None]) -> list[tuple[str, float, int]]:
    """(key, value, step) for every metric of the layout in the module docstring."""
    keys = dataset_keys(report.datasets)
    several = sum(b is not None for b in betas) > 1
    out: list[tuple[str, float, int]] = []
    for step, beta in enumerate(betas):
        at_beta = [r for r in report.results if r.beta == beta]
        for r in at_beta:
            values = {"accuracy": r.accuracy, "mean_tokens": r.mean_tokens,
                      "token_reduction_vs_sc64": report.reduction_vs_sc64(r)}
            for m, v in values.items():
                if v is None:
                    continue
                out.append((metric_key(m, keys[r.data]), v, step))
                if beta is not None:
                    out.append((metric_key(m, keys[r.data], beta), v, 0))
        accuracy, mean_tokens = mean_over_datasets(at_beta)
        reductions = [v for v in map(report.reduction_vs_sc64, at_beta) if v is not None]
        means = {"accuracy": accuracy, "mean_tokens": mean_tokens,
                 "token_reduction_vs_sc64": sum(reductions) / len(reductions) if reductions else None}
        for m, mean in means.items():
            if mean is None:
                continue
            out.append((metric_key(m, MEAN_KEY), mean, step))
            if beta is not None:
                out.append((metric_key(m, MEAN_KEY, beta), mean, 0))
        if several:
            out.append(("beta", float(beta), step))
    return out


def _log_metrics(client: "MlflowClient", run_id: str, report: EvaluationReport, betas: list[float | None]) -> None:
    from mlflow.entities import Metric  # lazy: see the module docstring

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v, step in _metric_values(report, betas)
                                      if math.isfinite(v)])


# ---------------------------------------------------------------------------- artifacts
def _roles(report: EvaluationReport) -> list[tuple[str, EvalResult]]:
    """Every result once (by identity), with its role in the report."""
    out, seen = [], set()
    for role, rs in (("evaluated", report.results), ("sc64", report.sc64.values()), ("reference", report.references)):
        for r in rs:
            if id(r) not in seen:
                seen.add(id(r))
                out.append((role, r))
    return out


def summary_rows(report: EvaluationReport) -> list[dict[str, Any]]:
    """The results table: one row per result, evaluated controller first, then baselines."""
    rows = []
    for role, r in _roles(report):
        base = report.sc64.get(r.data)
        rows.append({"role": role, **r.summary(), "n_problems": r.n_problems,
                     "token_reduction_vs_sc64": None if base is None else token_reduction(r, base)})
    return rows


def episodes_table(report: EvaluationReport) -> Any:
    """Every kept per-episode row of the report in one frame, with ``role``, ``controller``
    and ``beta`` columns first; None when no result kept its episodes."""
    import pandas as pd  # lazy: see the module docstring

    kept = [(role, r) for role, r in _roles(report) if r.episodes is not None and len(r.episodes)]
    if not kept:
        return None
    episodes = pd.concat([r.episodes for _, r in kept], ignore_index=True)
    sizes = [len(r.episodes) for _, r in kept]
    for name, values in (("beta", [float("nan") if r.beta is None else float(r.beta) for _, r in kept]),
                         ("controller", [r.controller for _, r in kept]), ("role", [role for role, _ in kept])):
        episodes.insert(0, name, [v for v, n in zip(values, sizes) for _ in range(n)])
    return episodes


def _log_tables(client: "MlflowClient", run_id: str, report: EvaluationReport) -> None:
    import pandas as pd  # lazy: see the module docstring

    client.log_table(run_id, pd.DataFrame(summary_rows(report)), RESULTS_TABLE)
    episodes = episodes_table(report)
    if episodes is None:
        return
    with tempfile.TemporaryDirectory(prefix="autotts-episodes-") as tmp:
        path = Path(tmp) / EPISODES_FILE
        episodes.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path))
