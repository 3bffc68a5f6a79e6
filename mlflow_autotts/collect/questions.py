"""Question files for collection: JSONL, CSV or Parquet with named question and answer columns.

One reader per format, chosen by extension: JSONL line by line through the project's bounded
JSON parser, CSV with pandas (every cell text), Parquet through the trajectory reader's
bounded path (footer first, two columns only). Each yields rows of cells, and one check
turns cells into text, refusing what is not text or a number. Every failure is one line
naming the file and, where it applies, the column, row or line, and happens before anything
is generated or written, so a bad file costs nothing.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_autotts.data.json_io import describe, parse_json, quote
from mlflow_autotts.data.parquet_io import open_parquet, pylist, read_columns
from mlflow_autotts.errors import AutoTTSError, DataError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class QuestionFileError(AutoTTSError):
    """A question file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Question:
    """One question to collect branches for, with its gold answer (``""`` when unknown)."""

    text: str
    gold: str


@dataclass(frozen=True)
class QuestionFile:
    """The questions of one file, in file order, and the file's identity for provenance."""

    path: str
    questions: tuple[Question, ...]
    sha256: str
    """Hash of the file's bytes: a resumed collection must read the same file."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


Row = tuple[str, Any, Any]
"""Where a row is (``row 3``, or ``row 3 (line 5)`` in JSONL), its question and answer cells."""


def _jsonl(path: Path, question_column: str, answer_column: str, limit: int | None) -> tuple[list[str], list[Row]]:
    """One JSON object per line, parsed line by line through the project's bounded JSON
    parser: a line that is not an object (an array, a number) is refused by its number."""
    columns: dict[str, None] = {}
    rows: list[Row] = []
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = parse_json(line, str(path), "JSON", "line")
            except DataError as exc:
                raise QuestionFileError(f"{path}: cannot read it as jsonl: line {lineno}: {exc.detail}") from None
            if type(obj) is not dict:
                raise QuestionFileError(f"{path}: line {lineno}: expected a JSON object with the question and answer, "
                                        f"got {describe(obj)}")
            columns.update(dict.fromkeys(obj))
            n = len(rows) + 1
            where = f"row {n}" if n == lineno else f"row {n} (line {lineno})"
            rows.append((where, obj.get(question_column), obj.get(answer_column) if answer_column else None))
            if limit and len(rows) >= limit:
                break
    return list(columns), rows


def _csv(path: Path, question_column: str, answer_column: str, limit: int | None) -> tuple[list[str], list[Row]]:
    """CSV through pandas, every cell read as text (nothing to refuse but what cannot parse)."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=limit or None)
    except (ValueError, OSError, MemoryError, RecursionError) as exc:  # ParserError, UnicodeDecodeError: ValueErrors
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise QuestionFileError(f"{path}: cannot read it as csv: {quote(first, 200)[1:-1]}") from None
    columns = [str(c) for c in df.columns]
    if question_column not in columns or (answer_column and answer_column not in columns):
        return columns, []
    answers = df[answer_column] if answer_column else [None] * len(df)
    return columns, [(f"row {n}", q, a) for n, (q, a) in enumerate(zip(df[question_column], answers), 1)]


def _parquet(path: Path, question_column: str, answer_column: str, limit: int | None) -> tuple[list[str], list[Row]]:
    """Only the two columns, read with the trajectory reader's bounds (footer checked first,
    text decoded once per distinct value); other metadata (pandas') is never read."""
    wanted = [question_column, answer_column] if answer_column else [question_column]
    try:
        pf, schema = open_parquet(path, wanted)
        columns = [n for n in schema.names if not n.startswith("__index_level_")]
        if any(c not in columns for c in wanted):
            return columns, []
        table = read_columns(pf, path, wanted)
        if limit:
            table = table.slice(0, limit)
        questions = pylist(table.column(question_column), str(path), question_column)
        answers = pylist(table.column(answer_column), str(path), answer_column) if answer_column else None
    except DataError as exc:
        raise QuestionFileError(f"{path}: cannot read it as parquet: {exc.detail}") from None
    answers = answers if answers is not None else [None] * len(questions)
    return columns, [(f"row {n}", q, a) for n, (q, a) in enumerate(zip(questions, answers), 1)]


_READERS = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}


def _text(path: Path, where: str, column: str, value: Any) -> str | None:
    """A cell as text; None for missing values (null, NaN). Only text and numbers are
    questions or answers: a list, an object (a struct), bytes or a boolean is refused by
    its row, never turned into its Python spelling."""
    if value is None or (type(value) is float and math.isnan(value)):
        return None
    if type(value) is str:
        return value
    if type(value) is float:
        return str(int(value)) if value.is_integer() else str(value)  # 7.0 read from JSON or Parquet is 7
    if type(value) is int:
        return str(value)
    kind = "bytes" if isinstance(value, (bytes, bytearray)) else describe(value)
    raise QuestionFileError(f"{path}: {where}: {column!r} is {kind}, not text; "
                            "questions and answers must be strings (or numbers)")


def read_questions(path: str | Path, question_column: str = "question", answer_column: str = "answer",
                   limit: int | None = None) -> QuestionFile:
    """The questions of ``path``; ``limit`` keeps the first ones.

    An answer column the file does not have is an error (pass ``answer_column=""`` for
    questions without gold answers); an empty question is an error naming its row, and so
    is a cell that is not text or a number.
    """
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise QuestionFileError(f"{p}: unknown question file type {quote(p.suffix)}; use one of "
                                f"{', '.join(sorted(FORMATS))}")
    if not p.is_file():
        raise QuestionFileError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise QuestionFileError(f"{p}: the file is empty")
    try:
        columns, rows = _READERS[fmt](p, question_column, answer_column, limit)
    except OSError as exc:
        raise QuestionFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    for role, name in (("question", question_column), ("answer", answer_column)):
        if name and name not in columns:
            shown = ", ".join(quote(c)[1:-1] for c in columns[:50]) + (", ..." if len(columns) > 50 else "")
            raise QuestionFileError(f"{p}: no {role} column {quote(name)}; the file has columns {shown} "
                                    f"(set it with --{role}-column)")
    if not rows:
        raise QuestionFileError(f"{p}: the file holds no questions")
    out = []
    for where, q, a in rows:
        text = _text(p, where, question_column, q)
        if text is None or not text.strip():
            raise QuestionFileError(f"{p}: {where}: empty {question_column!r}")
        gold = _text(p, where, answer_column, a)
        if answer_column and gold is None:
            raise QuestionFileError(f"{p}: {where}: empty {answer_column!r}")
        out.append(Question(text, gold or ""))
    return QuestionFile(str(p), tuple(out), file_sha256(p))


__all__ = ["FORMATS", "Question", "QuestionFile", "QuestionFileError", "read_questions"]
