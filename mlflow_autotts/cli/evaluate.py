"""``autotts evaluate``: score a controller in replay, with SC@64 beside it."""

from __future__ import annotations

import click

from mlflow_autotts.cli.common import format_table, parse_betas, parse_params, split_multi, write_json_atomic


@click.command("evaluate")
@click.argument("data", nargs=-1, required=True)
@click.option("--controller", "-c", required=True,
              help="Registered name (sc, asc, esc, parallel_probe, cmc, …), path.py[:Class], or a model URI "
                   "(models:/name@alias, runs:/…).")
@click.option("--beta", "betas", multiple=True, help="β in [0, 1]; several as B,B,… or repeated.")
@click.option("--param", "params", multiple=True, help="Controller parameter k=v (repeatable).")
@click.option("--shuffles", default=100, show_default=True, type=click.IntRange(min=1),
              help="Runs; run s visits branches in random.Random(s).shuffle order.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0),
              help="Worker processes (0 = all cores).")
@click.option("--output-json", type=click.Path(dir_okay=False), help="Write the results here as JSON.")
@click.option("--experiment", default="autotts", show_default=True, help="MLflow experiment.")
@click.option("--run-name", default=None, help="MLflow run name.")
@click.option("--mlflow/--no-mlflow", "use_mlflow", default=True, show_default=True,
              help="Log the evaluation to MLflow (MLFLOW_TRACKING_URI).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def evaluate(data: tuple[str, ...], controller: str, betas: tuple[str, ...], params: tuple[str, ...],
             shuffles: int, workers: int, output_json: str | None, experiment: str, run_name: str | None,
             use_mlflow: bool, progress: bool) -> None:
    """Score a controller in replay on DATA (dataset URIs: files, folders, autotts:<model>/<benchmark>)."""
    from mlflow_autotts.evaluation import EvaluateRequest, run_evaluation

    request = EvaluateRequest(
        data=split_multi(data), controller=controller, betas=parse_betas(betas), params=parse_params(params),
        shuffles=shuffles, workers=workers or None, progress=progress)
    report = run_evaluation(request)
    rows = report.rows()
    click.echo(format_table(rows, [
        ("data", "data", ""), ("controller", "controller", ""), ("beta", "beta", ".2f"),
        ("accuracy", "accuracy %", ".2f"), ("mean_tokens", "mean tokens", ",.0f"),
        ("token_reduction_vs_sc64", "vs SC@64 %", "+.1f")]))
    if output_json:
        keys = ("data", "controller", "beta", "accuracy", "mean_tokens", "shuffles", "token_reduction_vs_sc64")
        write_json_atomic(output_json, {"results": [{k: r.get(k) for k in keys} for r in rows]})
    if use_mlflow:
        from mlflow_autotts.tracking.evaluate_run import log_evaluation

        run_id = log_evaluation(report, experiment=experiment, run_name=run_name,
                                params=request.mlflow_params())
        click.echo(f"MLflow run: {run_id}", err=True)


