"""``autotts search``: the product's main job (also ``mlflow run . -e search``)."""

from __future__ import annotations

import click


@click.command("search")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML settings (options override it).")
@click.option("--data", "data", multiple=True, help="Dataset URIs to search on (comma-separated or repeated).")
@click.option("--validation", multiple=True, help="Separate validation datasets (default: a 1/3 split of --data).")
@click.option("--explorer", default=None, help="evolve (offline, default) or openai:<model>.")
@click.option("--seed", type=int, default=None, help="Explorer seed.")
@click.option("--max-candidates", type=click.IntRange(min=1), default=None)
@click.option("--time-budget-minutes", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--budget-usd", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--budget-tokens", type=click.IntRange(min=1), default=None)
@click.option("--price-input", type=click.FloatRange(min=0), default=None, help="USD per million input tokens.")
@click.option("--price-output", type=click.FloatRange(min=0), default=None, help="USD per million output tokens.")
@click.option("--population", type=click.IntRange(min=1), default=None, help="Proposals per generation.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Candidates scored at once (0 = all cores).")
@click.option("--betas", default=None, help="β sweep, e.g. 0,0.2,0.4,0.6,0.8,1.")
@click.option("--search-shuffles", type=click.IntRange(min=1), default=None)
@click.option("--final-shuffles", type=click.IntRange(min=1), default=None)
@click.option("--finalists", type=click.IntRange(min=1), default=None)
@click.option("--experiment", default=None)
@click.option("--model-name", default=None, help="Registered model for the challenger.")
@click.option("--log-models/--no-log-models", default=None, help="Log every scored candidate as a pyfunc model.")
@click.option("--resume", "resume", default=None, metavar="RUN_ID", help="Continue an interrupted search run.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def search_cmd(config_file, data, validation, explorer, seed, max_candidates, time_budget_minutes, budget_usd,
               budget_tokens, price_input, price_output, population, workers, betas, search_shuffles, final_shuffles,
               finalists, experiment, model_name, log_models, resume, progress) -> None:
    """Discover a controller: propose, score in sandboxed replay, keep the best, register it as challenger."""
    from mlflow_autotts.cli.common import split_multi
    from mlflow_autotts.search.config import build_config
    from mlflow_autotts.tracking.search_job import run_search_job, selection_rows

    overrides = dict(
        data=split_multi(data) or None, validation=split_multi(validation) or None, explorer=explorer, seed=seed,
        max_candidates=max_candidates, time_budget_minutes=time_budget_minutes, budget_usd=budget_usd,
        budget_tokens=budget_tokens, price_input=price_input, price_output=price_output, population=population,
        workers=workers, betas=betas, search_shuffles=search_shuffles, final_shuffles=final_shuffles,
        finalists=finalists, experiment=experiment, model_name=model_name, log_models=log_models)
    config = build_config(config_file, overrides)
    result = run_search_job(config, resume=resume, progress=progress)
    from mlflow_autotts.cli.common import format_table

    click.echo(f"search run {result.run_id}: {len(result.outcome.candidates)} candidates "
               f"({sum(1 for c in result.outcome.candidates if not c.ok)} failed); stopped: {result.outcome.stop_reason}")
    click.echo(format_table(selection_rows(result.selection), [
        ("controller", "controller (validation)", ""), ("beta", "beta", ".2f"), ("accuracy", "accuracy %", ".2f"),
        ("mean_tokens", "mean tokens", ",.0f"), ("winner", "winner", "")]))
    sel = result.selection
    if result.challenger_version:
        click.echo(f"challenger: models:/{config.model_name}@challenger (version {result.challenger_version}, "
                   f"{sel.winner.id} at beta={sel.winner_point.beta:g}; "
                   f"{'reaches' if sel.reached_sc64 else 'does NOT reach'} SC@64 accuracy on validation)")
