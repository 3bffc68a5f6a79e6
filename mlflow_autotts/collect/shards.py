"""The work folder of a collection: one Parquet shard per finished question, and a manifest.

A collection writes nothing at its output path until every question is done and the
merged set has passed validation. Until then, finished questions wait as one-problem
Parquet shards in a hidden folder beside the output, ``.<output name>.collect/``, each
written atomically (a SIGKILL leaves whole shards and at most a temporary file). The
manifest records the settings fingerprint and the question file's hash, so ``--resume``
only continues a collection with the same settings on the same file, and refuses anything
else with the settings that differ.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlflow_autotts.data.json_io import atomic_path
from mlflow_autotts.data.parquet_io import read_parquet, write_parquet
from mlflow_autotts.data.trajectory import Problem, Provenance, TrajectorySet
from mlflow_autotts.errors import AutoTTSError

MANIFEST = "manifest.json"
ENDPOINT = "endpoint"
"""Sampling key of a shard's provenance: the endpoint that generated it."""
SERVED = "questions_per_endpoint"
"""Sampling key of the merged provenance: endpoint -> questions it generated."""
_SHARD = re.compile(r"^q(\d{6,})\.parquet$")


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

    def open(self, fingerprint: dict[str, Any], resume: bool) -> set[int]:
        """Create the folder, or check it for ``--resume``; the indices of finished questions."""
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
        before = json.loads(manifest.read_text(encoding="utf-8"))
        now = json.loads(json.dumps(fingerprint, default=str))
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in NOT_COMPARED)
        if changed:
            detail = "; ".join(f"{k}: {before.get(k)!r} then, {now.get(k)!r} now" for k in changed)
            raise ResumeError(f"{self.output}: cannot resume with other settings ({detail})")
        return set(self.finished())

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

    def merge(self, count: int, provenance: Provenance) -> TrajectorySet:
        """Every question's problem, in question order; the provenance also counts the
        questions each endpoint generated, over every run of a resumed collection."""
        problems, served = [], Counter()
        for i in range(count):
            shard = read_parquet(self.path(i))
            problems.extend(shard.problems)
            if ENDPOINT in shard.provenance.sampling:
                served[str(shard.provenance.sampling[ENDPOINT])] += 1
        if served:
            provenance = replace(provenance, sampling={**provenance.sampling, SERVED: dict(sorted(served.items()))})
        return TrajectorySet(problems, provenance)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


__all__ = ["ENDPOINT", "MANIFEST", "SERVED", "ResumeError", "Shards", "work_dir"]
