"""``autotts evaluate``: score a controller in replay, with SC@64 beside it.

Its options are generated from ``EvaluateConfig`` (``cli/options.py``). A model URI is
resolved here, through MLflow, so ``evaluation.py`` only ever receives a ``ControllerSpec``.
"""

from __future__ import annotations

import click

from mlflow_autotts.cli.common import format_table, write_json_atomic
from mlflow_autotts.cli.options import settings_options
from mlflow_autotts.controllers.loading import ControllerSpec, is_model_uri
from mlflow_autotts.evaluation import EvaluateConfig, local_controller, run_evaluation
from mlflow_autotts.tracking.evaluate_run import log_evaluation
from mlflow_autotts.tracking.resolve import spec_from_model_uri


def resolve_controller(ref: str) -> ControllerSpec:
    """The spec of a registered name, a source file, or (through MLflow) a model URI."""
    return spec_from_model_uri(ref) if is_model_uri(ref) else local_controller(ref)


@click.command("evaluate")
@settings_options(EvaluateConfig, flags={"controller": ("--controller", "-c"), "params": "--param"},
                  arguments=("data",))
def evaluate(config: EvaluateConfig) -> None:
    """Score a controller in replay on DATA (dataset URIs: files, folders, autotts:<model>/<benchmark>)."""
    report = run_evaluation(config, resolve_controller(config.controller))
    rows = report.rows()
    click.echo(format_table(rows, [
        ("data", "data", ""), ("controller", "controller", ""), ("beta", "beta", ".2f"),
        ("accuracy", "accuracy %", ".2f"), ("mean_tokens", "mean tokens", ",.0f"),
        ("token_reduction_vs_sc64", "vs SC@64 %", "+.1f")]))
    if config.output_json:
        keys = ("data", "controller", "beta", "accuracy", "mean_tokens", "shuffles", "token_reduction_vs_sc64")
        write_json_atomic(config.output_json, {"results": [{k: r.get(k) for k in keys} for r in rows]})
    if config.mlflow:
        run_id = log_evaluation(report, experiment=config.experiment, run_name=config.run_name,
                                params=config.mlflow_params())
        click.echo(f"MLflow run: {run_id}", err=True)
