"""``autotts evaluate``: score a controller in replay, with SC@64 beside it.

Its options are generated from ``EvaluateConfig`` (``cli/options.py``). A model URI is
resolved here, through MLflow, so ``evaluation.py`` only ever receives a ``ControllerSpec``.

When the run is logged, the replay of built-in controllers runs in a forked child while
this process imports MLflow and opens the tracking store (``cli/overlap.py``): each takes
a second or more, and they are independent. Input errors are raised before the fork.
"""

from __future__ import annotations

import click

from mlflow_autotts.cli.common import format_table, write_json_atomic
from mlflow_autotts.cli.options import settings_options
from mlflow_autotts.cli.overlap import can_fork, run_beside
from mlflow_autotts.controllers.loading import ControllerSpec, is_model_uri
from mlflow_autotts.controllers.reference import sc_label
from mlflow_autotts.evaluation import EvaluateConfig, local_controller, plan_evaluation
from mlflow_autotts.tracking.evaluate_run import log_evaluation
from mlflow_autotts.tracking.mlflow_utils import warm_up
from mlflow_autotts.tracking.resolve import spec_from_model_uri


def resolve_controller(ref: str) -> ControllerSpec:
    """The spec of a registered name, a source file, or (through MLflow) a model URI."""
    return spec_from_model_uri(ref) if is_model_uri(ref) else local_controller(ref)


@click.command("evaluate")
@settings_options(EvaluateConfig, flags={"controller": ("--controller", "-c"), "params": "--param"},
                  arguments=("data",))
def evaluate(config: EvaluateConfig) -> None:
    """Score a controller in replay on DATA (dataset URIs: files, folders, autotts:<model>/<benchmark>)."""
    plan = plan_evaluation(config, resolve_controller(config.controller))
    if config.mlflow and plan.trusted and plan.executor == "local" and can_fork():
        import pandas  # noqa: F401  (both sides need it, MLflow here and the episode tables there: import it once)

        results = run_beside(plan.replay, lambda: warm_up(config.experiment))
    else:
        results = plan.replay()
    report = plan.report(results)
    rows = report.rows()
    click.echo(format_table(rows, [
        ("data", "data", ""), ("controller", "controller", ""), ("beta", "beta", ".2f"),
        ("accuracy", "accuracy %", ".2f"), ("mean_tokens", "mean tokens", ",.0f"),
        ("token_reduction_vs_sc64", f"vs {sc_label(plan.datasets).upper()} %", "+.1f")]))
    if config.output_json:
        keys = ("data", "controller", "beta", "accuracy", "mean_tokens", "shuffles", "token_reduction_vs_sc64")
        write_json_atomic(config.output_json, {"results": [{k: r.get(k) for k in keys} for r in rows]})
    if config.mlflow:
        run_id = log_evaluation(report, experiment=config.experiment, run_name=config.run_name,
                                params=config.mlflow_params())
        click.echo(f"MLflow run: {run_id}", err=True)
