"""The published AutoTTS JSON format: a list of problems with ``each_branch`` triples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.errors import DataError


def problems_from_records(records: Any, source: str) -> list[Problem]:
    if not isinstance(records, list):
        raise DataError(source, f"expected a JSON list of problems, got {type(records).__name__}")
    problems = []
    for p, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(source, f"expected an object, got {type(rec).__name__}", problem=p)
        for key in ("question", "gold_answer", "probe_freq", "each_branch"):
            if key not in rec:
                raise DataError(source, "missing", problem=p, field=key)
        branches = rec["each_branch"]
        probes, tokens, finals = [], [], []
        for b, br in enumerate(branches):
            probes.append(br[0])
            tokens.append(br[1])
            finals.append(br[2])
        problems.append(Problem(Branches.from_lists(rec["question"], rec["probe_freq"], probes, tokens, finals),
                                rec["gold_answer"]))
    return problems


def read_json(path: str | Path, provenance: Provenance | None = None) -> TrajectorySet:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except OSError as exc:
        raise DataError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(str(path), f"not valid JSON ({exc})") from None
    return TrajectorySet(problems_from_records(records, str(path)), provenance or Provenance(source=str(path)))


def to_records(ts: TrajectorySet) -> list[dict[str, Any]]:
    out = []
    for p in ts.problems:
        br = p.branches
        out.append({
            "question": br.question,
            "gold_answer": p.gold_answer,
            "probe_freq": br.interval_tokens,
            "each_branch": br.triples(),
            "final_answers_trace": list(br.final_answers),
        })
    return out


def write_json(ts: TrajectorySet, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(to_records(ts), f, ensure_ascii=False)
    tmp.replace(path)
