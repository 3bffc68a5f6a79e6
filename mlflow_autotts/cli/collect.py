"""``autotts collect`` (also ``mlflow run . -e collect``): questions to a Parquet replay file.

Its options are generated from ``CollectConfig`` (``cli/options.py``).
"""

from __future__ import annotations

import sys

import click

from mlflow_autotts.cli.common import shown
from mlflow_autotts.cli.options import settings_options
from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.collect.run import Totals, collect
from mlflow_autotts.tracking.collect_run import log_collection


@click.command("collect")
@settings_options(CollectConfig, flags={"questions": ("--questions", "-q"), "output": ("--output", "-o")})
def collect_cmd(config: CollectConfig) -> None:
    """Sample branches of every question on a vLLM-served model, probe every interval, and
    write them as a validated Parquet replay file (``--resume`` continues a killed run)."""
    from tqdm import tqdm  # with the command, not at start-up

    bar = None

    def progress(done: int, totals: Totals, elapsed: float) -> None:
        nonlocal bar
        if bar is None:
            return
        bar.n = done
        bar.set_postfix(branches=totals.branches,
                        tok_s=f"{(totals.generated_tokens + totals.probe_tokens) / max(elapsed, 1e-9):.0f}",
                        refresh=False)
        bar.refresh()

    def warn(message: str) -> None:  # at once, above the progress bar
        tqdm.write(f"warning: {shown(message)}", file=sys.stderr)

    if config.progress:
        bar = tqdm(total=None, unit="q", desc="collect", dynamic_ncols=True)
    try:
        report = collect(config, progress=progress, on_start=(lambda total, done: _start(bar, total, done)), warn=warn)
    finally:
        if bar is not None:
            bar.close()
    t = report.totals
    click.echo(f"{report.output}: {len(report.dataset)} questions × {config.branches} branches "
               f"({report.resumed} resumed); {t.generated_tokens:,} generated + {t.probe_tokens:,} probe tokens "
               f"in {report.wall_seconds:.1f} s ({report.tokens_per_second:.0f} tokens/s, prefix cache "
               f"{100 * t.cache_hit_rate:.0f}% of prompt tokens); validation passed")
    if len(report.endpoints) > 1:
        click.echo("endpoints: " + ", ".join(
            f"{e.name} {e.served} questions" + (" (failed)" if e.error else "") for e in report.endpoints))
    if config.mlflow:
        run_id = log_collection(config, report)
        click.echo(f"MLflow run: {run_id}", err=True)


def _start(bar, total: int, done: int) -> None:  # type: ignore[no-untyped-def]
    if bar is not None:
        bar.total = total
        bar.n = done
        bar.refresh()
