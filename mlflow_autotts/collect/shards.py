"""The work folder of a collection: one Parquet shard per finished question, and a manifest.

A collection writes nothing at its output path until every question is done and the
merged set has passed validation. Until then, finished questions wait as one-problem
Parquet shards in a hidden folder beside the output, ``.<output name>.collect/``, each
written atomically (a SIGKILL leaves whole shards and at most a temporary file). The
manifest records the settings fingerprint and the question file's hash, so ``--resume``
only continues a collection with the same settings on the same file, and refuses anything
else with the settings that differ. The folder is not trusted on resume: a malformed
manifest, or a shard that does not hold its own row's question and gold answer, is one
``ResumeError`` line naming the file.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from mlflow_autotts.collect.questions import Question
from mlflow_autotts.data.json_io import atomic_path, check_depth, describe, parse_json, quote
from mlflow_autotts.data.parquet_io import read_parquet, write_parquet
from mlflow_autotts.data.trajectory import Problem, Provenance, TrajectorySet
from mlflow_autotts.errors import AutoTTSError, DataError

MANIFEST = "manifest.json"
ENDPOINT = "endpoint"
"""Sampling key of a shard's provenance: the endpoint that generated it."""
SERVED = "questions_per_endpoint"
"""Sampling key of the merged provenance: endpoint -> questions it generated."""
_SHARD = re.compile(r"^q(\d{6,12})\.parquet$")
MAX_MANIFEST_BYTES = 1 << 20
"""A manifest is a few hundred bytes of settings; anything far larger is not one."""
MANIFEST_DEPTH = 8
"""Settings nest a level or two (the sampling mapping); deeper is not a manifest."""


def _shown(value: Any) -> str:
    """A manifest value in a message: short, one line."""
    return quote(value) if isinstance(value, str) else quote(repr(value), 60)[1:-1]


class ResumeError(AutoTTSError):
    """A work folder that cannot be resumed as asked (or is in the way of a new collection)."""


def work_dir(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(f".{out.name}.collect")


NOT_COMPARED = frozenset({"base_url"})
"""Manifest keys a resume does not compare: where the branches were generated (folders
written before collection spread over several servers still record their one URL)."""


class Shards:
    """The work folder of one collection."""

    def __init__(self, output: str | Path):
        self.output = Path(output)
        self.dir = work_dir(output)

    def open(self, fingerprint: dict[str, Any], resume: bool, questions: Sequence[Question] = ()) -> set[int]:
        """Create the folder, or check it for ``--resume``; the indices of finished questions.

        On resume the folder is not trusted: the manifest is read through the bounded JSON
        parser and must be an object, and every finished shard must hold its own row of
        ``questions`` (:meth:`read`), before anything is generated."""
        manifest = self.dir / MANIFEST
        if not resume:
            if self.dir.exists():
                raise ResumeError(f"{self.output}: an interrupted collection is waiting in {self.dir}; "
                                  "pass --resume to continue it, or delete that folder to start again")
            self.dir.mkdir(parents=True)
            with atomic_path(manifest) as tmp:
                tmp.write_text(json.dumps(fingerprint, indent=2, sort_keys=True, default=str), encoding="utf-8")
            return set()
        if not manifest.is_file():
            raise ResumeError(f"{self.output}: nothing to resume (no {manifest})")
        before = self._manifest(manifest)
        now = json.loads(json.dumps(fingerprint, default=str))
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in NOT_COMPARED)
        if changed:
            detail = "; ".join(f"{quote(k)[1:-1]}: {_shown(before.get(k))} then, {_shown(now.get(k))} now"
                               for k in changed[:10])
            raise ResumeError(f"{self.output}: cannot resume with other settings ({detail})")
        done = set(self.finished())
        for index in sorted(done):
            self.read(index, questions)
        return done

    def _manifest(self, manifest: Path) -> dict[str, Any]:
        """The manifest as written by :meth:`open`, or one ``ResumeError`` line saying why not."""
        fix = f"delete {self.dir} to start again"
        try:
            if manifest.stat().st_size > MAX_MANIFEST_BYTES:
                raise ResumeError(f"{manifest}: {manifest.stat().st_size:,} bytes is not a collection manifest; {fix}")
            before = parse_json(manifest.read_bytes(), str(manifest))
            if type(before) is not dict:
                raise DataError(str(manifest), f"expected a JSON object of settings, got {describe(before)}")
            check_depth(before, str(manifest), MANIFEST_DEPTH, "the manifest")
        except DataError as exc:
            raise ResumeError(f"{exc}; {fix}") from None
        except OSError as exc:
            raise ResumeError(f"{manifest}: cannot read: {exc.strerror or exc}; {fix}") from None
        return before

    def finished(self) -> list[int]:
        done = []
        for p in self.dir.iterdir():
            m = _SHARD.match(p.name)
            if m:
                done.append(int(m.group(1)))
        return sorted(done)

    def path(self, index: int) -> Path:
        return self.dir / f"q{index:06d}.parquet"

    def write(self, index: int, problem: Problem, provenance: Provenance, endpoint: str | None = None) -> None:
        """Keep question ``index``'s problem (atomic: whole or absent), noting the endpoint
        that generated it."""
        if endpoint is not None:
            provenance = replace(provenance, sampling={**provenance.sampling, ENDPOINT: endpoint})
        write_parquet(TrajectorySet([problem], provenance), self.path(index))

    def read(self, index: int, questions: Sequence[Question]) -> TrajectorySet:
        """Shard ``index``, checked to be question ``index`` of ``questions``: one problem with
        that row's question and gold answer. A shard that is not (written by another
        collection, edited, or for a row the file does not have) is refused naming it, so
        nothing the question file did not ask is published under the file's sha256."""
        path = self.path(index)
        fix = f"delete it to collect that question again, or {self.dir} to start again"
        if index >= len(questions):
            raise ResumeError(f"{path}: a shard for row {index + 1}, but the question file has "
                              f"{len(questions)} questions; {fix}")
        try:
            shard = read_parquet(path)
        except DataError as exc:
            raise ResumeError(f"{exc}; {fix}") from None
        q = questions[index]
        if len(shard) != 1:
            raise ResumeError(f"{path}: holds {len(shard)} problems where one question's branches belong; {fix}")
        problem = shard.problems[0]
        for what, got, want in (("question", problem.question, q.text), ("gold answer", problem.gold_answer, q.gold)):
            if got != want:
                raise ResumeError(f"{path}: its {what} {quote(got)} is not row {index + 1}'s {quote(want)} in the "
                                  f"question file; {fix}")
        return shard

    def merge(self, questions: Sequence[Question], provenance: Provenance) -> TrajectorySet:
        """Every question's problem, in question order, each shard checked against its row
        (:meth:`read`); the provenance also counts the questions each endpoint generated,
        over every run of a resumed collection."""
        problems, served = [], Counter()
        for i in range(len(questions)):
            shard = self.read(i, questions)
            problems.extend(shard.problems)
            if ENDPOINT in shard.provenance.sampling:
                served[str(shard.provenance.sampling[ENDPOINT])[:200]] += 1
        if served:
            provenance = replace(provenance, sampling={**provenance.sampling, SERVED: dict(sorted(served.items()))})
        return TrajectorySet(problems, provenance)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


__all__ = ["ENDPOINT", "MANIFEST", "SERVED", "ResumeError", "Shards", "work_dir"]
