"""Question files for collection: JSONL, CSV or Parquet with named question and answer columns.

Read with pandas/pyarrow (one reader per format, chosen by extension). Every failure names
the file and, where it applies, the column or line, and happens before anything is
generated or written, so a bad file costs nothing.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_autotts.errors import AutoTTSError

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


def _frame(path: Path, fmt: str) -> Any:
    import pandas as pd

    try:
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        return pd.read_parquet(path)
    except (ValueError, OSError, ImportError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise QuestionFileError(f"{path}: cannot read it as {fmt}: {first}") from None


def _text(value: Any) -> str | None:
    """A cell as text; None for missing values (NaN, None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 7.0 read from JSON or Parquet is the answer 7
    return str(value)


def read_questions(path: str | Path, question_column: str = "question", answer_column: str = "answer",
                   limit: int | None = None) -> QuestionFile:
    """The questions of ``path``; ``limit`` keeps the first ones.

    An answer column the file does not have is an error (pass ``answer_column=""`` for
    questions without gold answers); an empty question is an error naming its row.
    """
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise QuestionFileError(f"{p}: unknown question file type {p.suffix!r}; use one of "
                                f"{', '.join(sorted(FORMATS))}")
    if not p.is_file():
        raise QuestionFileError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise QuestionFileError(f"{p}: the file is empty")
    df = _frame(p, fmt)
    if len(df) == 0:
        raise QuestionFileError(f"{p}: the file holds no questions")
    columns = [str(c) for c in df.columns]
    for role, name in (("question", question_column), ("answer", answer_column)):
        if name and name not in columns:
            raise QuestionFileError(f"{p}: no {role} column {name!r}; the file has columns {', '.join(columns)} "
                                    f"(set it with --{role}-column)")
    rows = df.head(limit) if limit else df
    out = []
    for n, (q, a) in enumerate(zip(rows[question_column], rows[answer_column] if answer_column else [None] * len(rows))):
        text = _text(q)
        if text is None or not text.strip():
            raise QuestionFileError(f"{p}: row {n + 1}: empty {question_column!r}")
        gold = _text(a)
        if answer_column and gold is None:
            raise QuestionFileError(f"{p}: row {n + 1}: empty {answer_column!r}")
        out.append(Question(text, gold or ""))
    return QuestionFile(str(p), tuple(out), file_sha256(p))


__all__ = ["FORMATS", "Question", "QuestionFile", "QuestionFileError", "read_questions"]
