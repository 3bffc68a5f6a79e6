"""``autotts data``: validate trajectory sets and convert between JSON and Parquet.

The root ``autotts`` group turns :class:`~mlflow_autotts.errors.AutoTTSError` into one
``error: …`` line with exit status 2; these commands raise it for input they cannot read,
and exit 1 when data reads but fails validation, so scripts can tell the two apart.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import click

from mlflow_autotts.cli.common import shown
from mlflow_autotts.errors import AutoTTSError, DataError

FORMATS = (".json", ".parquet")


class _Warnings:
    """Collects :class:`DataWarning`s raised while loading and prints them as
    ``warning: …`` lines instead of Python's file:line warning format."""

    def __enter__(self) -> "_Warnings":
        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
        from mlflow_autotts.data.json_io import DataWarning

        for w in self._caught:
            if issubclass(w.category, DataWarning):
                click.echo(f"warning: {shown(w.message)}", err=True)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@click.group("data")
def data_group() -> None:
    """Trajectory data: validate it, convert between the published JSON and Parquet."""


def _expand(uris: tuple[str, ...]) -> Iterator[str]:
    from mlflow_autotts.data.uris import expand_dataset_uri

    for uri in uris:
        yield from expand_dataset_uri(uri)


@data_group.command("validate")
@click.argument("uris", nargs=-1, required=True)
def validate_cmd(uris: tuple[str, ...]) -> None:
    """Check every dataset in URIS (files, folders, autotts:<model>/<benchmark>) and print a
    report per dataset. Exit 0 when all pass, 1 when a check fails, 2 when input is unreadable."""
    from mlflow_autotts.data.validate import validate_uri

    failed = unreadable = 0
    for uri in _expand(uris):
        try:
            report = validate_uri(uri)
        except AutoTTSError as exc:
            if len(uris) == 1 and uri == uris[0]:
                raise  # a single unreadable input: the root group prints it, exit 2
            click.echo(f"error: {shown(exc)}", err=True)
            unreadable += 1
            continue
        click.echo(report.format())
        failed += not report.passed
    if unreadable:
        raise click.exceptions.Exit(2)
    if failed:
        raise click.exceptions.Exit(1)


@data_group.command("convert")
@click.argument("src")
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
def convert_cmd(src: str, dst: str, force: bool) -> None:
    """Convert SRC (a dataset URI) to DST; the format follows DST's extension (.json or .parquet).

    Trajectories convert losslessly both ways; the JSON form has no room for provenance
    (sampling settings), which only Parquet keeps.
    """
    from mlflow_autotts.data.json_io import write_json
    from mlflow_autotts.data.parquet_io import write_parquet
    from mlflow_autotts.data.uris import load_dataset

    out = Path(dst)
    if out.suffix not in FORMATS:
        raise DataError(dst, f"unknown output format {out.suffix or '(none)'!r}; use a .json or .parquet file name")
    if out.exists() and not force:
        raise DataError(dst, "already exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise DataError(dst, f"folder {out.parent} does not exist")
    with _Warnings():
        ts = load_dataset(src)
    (write_json if out.suffix == ".json" else write_parquet)(ts, out)
    n_branches = sum(p.branches.n_branches for p in ts.problems)
    click.echo(f"wrote {out} ({ts.name}: {len(ts)} problems, {n_branches} branches)")


@data_group.command("arithmetic")
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("-n", "count", type=click.IntRange(min=1), default=40, show_default=True, help="How many questions.")
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed gives the same questions.")
@click.option("--kind", type=click.Choice(["sums", "word"]), default="sums", show_default=True,
              help="sums: 'What is 3 + 4?' (single digits; the demo model is right about half the time); "
                   "word: one- and two-step word problems (right about one time in ten on the demo model).")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
def arithmetic_cmd(dst: str, count: int, seed: int, kind: str, force: bool) -> None:
    """Write COUNT short arithmetic questions with exact answers to DST (.jsonl): questions
    for collecting on a small model (the projects/smollm2-arithmetic recipe)."""
    import json

    from mlflow_autotts.data.arithmetic import KINDS
    from mlflow_autotts.data.json_io import atomic_path

    out = Path(dst)
    if out.suffix != ".jsonl":
        raise DataError(dst, "question files are written as .jsonl")
    if out.exists() and not force:
        raise DataError(dst, "already exists; pass --force to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        rows = KINDS[kind](count, seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-n") from None
    with atomic_path(out) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    click.echo(f"wrote {out} ({count} {kind} questions, seed {seed})")
