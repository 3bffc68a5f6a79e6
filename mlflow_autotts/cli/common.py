"""The root group's error handling and the output helpers every command module shares
(options come from the settings dataclasses: ``cli/options.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mlflow_autotts.errors import AutoTTSError, safe_text


ERROR_CHARS = 20_000
"""Longest error message the CLI prints (a validation report fits)."""


def shown(message: object) -> str:
    """An error or warning as the CLI prints it: messages quote files, data, servers and
    candidates, so they are shown without control characters or escape sequences."""
    return safe_text(message, ERROR_CHARS, multiline=True)


class AutoTTSGroup(click.Group):
    """A click group that turns ``AutoTTSError`` into a one-line message and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AutoTTSError as exc:
            click.echo(f"error: {shown(exc)}", err=True)
            ctx.exit(exc.exit_code)


# ------------------------------------------------------------------------- output
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
