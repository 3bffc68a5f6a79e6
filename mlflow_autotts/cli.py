"""The ``autotts`` command line. MLproject entry points call the same commands.

Every error caused by the user's input is printed as one line (``error: …``) with exit
status 2; a refused promotion or failed validation exits 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from mlflow_autotts.errors import AutoTTSError


class AutoTTSGroup(click.Group):
    """A click group that turns ``AutoTTSError`` into a one-line message and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AutoTTSError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=AutoTTSGroup)
@click.version_option(package_name="mlflow-autotts")
def main() -> None:
    """Find, ship and serve test-time-scaling controllers for reasoning LLMs."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


# ------------------------------------------------------------------------- parsing
def split_multi(values: tuple[str, ...] | list[str]) -> list[str]:
    """Values given repeatedly and/or comma-separated (MLproject passes lists as one string)."""
    out: list[str] = []
    for v in values:
        out.extend(x.strip() for x in str(v).replace(" ", ",").split(",") if x.strip())
    return out


def parse_betas(values: tuple[str, ...]) -> list[float] | None:
    from mlflow_autotts.controllers.base import check_beta

    items = split_multi(values)
    return [check_beta(v) for v in items] if items else None


def parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    """``k=v`` pairs; values are read as JSON where they parse (numbers, true/false), else strings."""
    params: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--param")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw
    return params


def write_json_atomic(path: str | Path, payload: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A plain aligned text table; ``columns`` are (key, header, format spec)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        line = []
        for key, _, spec in columns:
            v = r.get(key)
            line.append("-" if v is None else format(v, spec) if spec else str(v))
        cells.append(line)
    widths = [max(len(row[c]) for row in cells) for c in range(len(columns))]
    out = []
    for n, row in enumerate(cells):
        out.append("  ".join(s.rjust(w) if n and columns[c][2] else s.ljust(w) for c, (s, w) in enumerate(zip(row, widths))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# ------------------------------------------------------------------------ evaluate
@main.command()
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


def _attach_commands() -> None:
    """Subcommands that live beside their own concern (data/, tracking/, search/); their
    modules import heavy libraries lazily, so ``autotts --help`` stays instant."""
    from mlflow_autotts.data.cli import data_group
    from mlflow_autotts.search.cli import search_cmd
    from mlflow_autotts.tracking.cli import promote_cmd, register_cmd

    for cmd in (data_group, search_cmd, register_cmd, promote_cmd):
        main.add_command(cmd)


_attach_commands()

if __name__ == "__main__":
    sys.exit(main())
