"""``autotts search``: the product's main job (also ``mlflow run . -e search``).

Its options are generated from ``SearchConfig`` (``cli/options.py``); only ``--resume`` and
``--progress``, which say how to run rather than what to search, are declared here. It wires
the search application (``search.job.run``) to its MLflow recorder (``tracking.search_job``).
"""

from __future__ import annotations

import click

from mlflow_autotts.cli.common import format_table
from mlflow_autotts.cli.options import settings_options
from mlflow_autotts.search import job
from mlflow_autotts.search.config import SearchConfig
from mlflow_autotts.tracking.search_job import MlflowJobRecorder, resumed_config, selection_rows


@click.command("search")
@settings_options(SearchConfig)
@click.option("--resume", "resume", default=None, metavar="RUN_ID",
              help="Continue an interrupted search run with its stored settings (only --workers may change).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def search_cmd(config: SearchConfig, resume: str | None, progress: bool) -> None:
    """Discover a controller: propose, score in sandboxed replay, keep the best, register it as challenger.

    Without --config the settings are those of projects/qwen3-aime24/search.yaml.
    """
    config = resumed_config(config, resume)
    result = job.run(config, MlflowJobRecorder(resume), progress=progress)
    click.echo(f"search run {result.run_id}: {len(result.outcome.candidates)} candidates "
               f"({sum(1 for c in result.outcome.candidates if not c.ok)} failed); stopped: {result.outcome.stop_reason}")
    sc = result.selection.sc_label.upper()  # SC@N with the data's N (SC@64 on the published sets)
    click.echo(format_table(selection_rows(result.selection), [
        ("controller", "controller (validation)", ""), ("beta", "beta", ".2f"), ("accuracy", "accuracy %", ".2f"),
        ("mean_tokens", "mean tokens", ",.0f"), ("vs_sc64_lcb", f"vs {sc} (LCB)", "+.2f"),
        ("gain_over_cmc_lcb", "gain over CMC (LCB)", "+.2f"), ("winner", "winner", "")]))
    sel = result.selection
    if result.challenger_version:
        click.echo(f"challenger: models:/{config.model_name}@challenger (version {result.challenger_version}, "
                   f"{sel.winner.id} at beta={sel.winner_point.beta:g}; "
                   f"{'reaches' if sel.reached_sc64 else 'does NOT reach'} {sc} accuracy on validation)")
    elif sel.refused:
        click.echo(f"no challenger: {sel.refused}")
