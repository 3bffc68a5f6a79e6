"""Trajectory sets as MLflow dataset inputs: which data a run was computed on (lineage).

Every run that reads or writes trajectories logs each set as a dataset input with a
context tag (``mlflow.data.context``): ``evaluation`` (an evaluate run's data), ``search``
and ``validation`` (a search's split: what candidates were scored on and what the winner
was picked on), ``collect`` (a collection's output), ``gate`` (what the promotion gate
replayed both versions on). See docs/architecture.md,
"MLflow conventions".

A dataset input is metadata only, never a copy of the rows (no pandas frame is built):

- name: the set's name, ``<model>/<benchmark>`` (with ``:search`` / ``:validation`` for a
  split);
- digest: the first :data:`DIGEST_CHARS` hex digits of the content digest
  (``data.digest``, ~10 ms for a published set): the same trajectories give the same
  digest from any file or format, other trajectories another one;
- source: a published set's pinned upstream URL (``http``), else the absolute path it was
  loaded from (``local``), so ``mlflow.data.get_source(...)`` can fetch it again;
- schema: the Parquet row form (one row per branch, ``parquet_io``);
- profile: rows (branches), problems, branches per problem, probe answers, interval,
  signals, model, benchmark, URI, sampling and the full sha256.

MLflow keeps one dataset per (experiment, name, digest), with the source and profile it was
first logged with, and one input per (run, dataset): logging the same data again (a resumed
search) adds nothing, and a run on a copy of a set shows the set's first-logged source. Only a collection's output is
also logged as a file (:func:`log_collected_dataset`); published inputs are never copied.
MLflow is imported inside the functions: the CLI imports ``tracking`` at start-up.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mlflow_autotts.data.digest import content_digest
from mlflow_autotts.data.parquet_io import COLUMNS, SIGNAL_PREFIX
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.data.uris import is_published_uri, published_url
from mlflow_autotts.tracking.mlflow_utils import client as default_client

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.entities import Dataset, DatasetInput

CONTEXTS = ("evaluation", "search", "validation", "collect", "gate")
"""The ``mlflow.data.context`` values this project logs."""
DIGEST_CHARS = 12
"""Hex digits of the content digest used as the MLflow digest (MLflow allows 36)."""
DATA_ARTIFACT_DIR = "data"
"""Where :func:`log_dataset_file` puts a dataset file in the run's artifacts."""
MAX_NAME = 500
"""MLflow's longest dataset name."""

_COLUMN_TYPES = {"problem": "integer", "branch": "integer", "question": "string", "gold_answer": "string",
                 "interval_tokens": "long", "probe_answers": "array<string>", "branch_tokens": "long",
                 "final_answer": "string"}


def dataset_entity(ts: TrajectorySet, source: str | None = None) -> "Dataset":
    """The MLflow dataset record of ``ts`` (metadata only; see the module docstring).

    ``source`` overrides ``ts.provenance.source`` (a split's provenance carries the split
    suffix; the caller passes the URI it was loaded from)."""
    from mlflow.data.meta_dataset import MetaDataset  # lazy: see the module docstring
    from mlflow.entities import Dataset

    uri = source if source is not None else ts.provenance.source
    sha = content_digest(ts)
    name = ts.name if len(ts.name) <= MAX_NAME else "…" + ts.name[-(MAX_NAME - 1):]
    meta = MetaDataset(_source(uri, ts.name), name=name, digest=sha[:DIGEST_CHARS], schema=_schema(ts)).to_dict()
    return Dataset(name=meta["name"], digest=meta["digest"], source_type=meta["source_type"], source=meta["source"],
                   schema=meta.get("schema"), profile=json.dumps(_profile(ts, uri, sha), default=str))


def dataset_input(ts: TrajectorySet, context: str, source: str | None = None,
                  tags: dict[str, str] | None = None) -> "DatasetInput":
    """``ts`` as a run input tagged with ``context`` (one of :data:`CONTEXTS`)."""
    from mlflow.entities import DatasetInput, InputTag  # lazy: see the module docstring
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    if context not in CONTEXTS:
        raise ValueError(f"unknown dataset context {context!r}; expected one of {', '.join(CONTEXTS)}")
    input_tags = [InputTag(k, str(v)) for k, v in (tags or {}).items()]
    return DatasetInput(dataset_entity(ts, source), tags=[*input_tags, InputTag(MLFLOW_DATASET_CONTEXT, context)])


def log_datasets(run_id: str, sets: Sequence[TrajectorySet], context: str, *,
                 sources: Sequence[str] | None = None, client: "MlflowClient | None" = None) -> list["DatasetInput"]:
    """Log every set in ``sets`` as an input of run ``run_id`` with ``context``, in one call.

    ``sources``, if given, has one URI per set (overriding each provenance source)."""
    if sources is not None and len(sources) != len(sets):
        raise ValueError(f"{len(sources)} sources for {len(sets)} datasets")
    inputs = [dataset_input(ts, context, None if sources is None else sources[i]) for i, ts in enumerate(sets)]
    if inputs:
        (client or default_client()).log_inputs(run_id, datasets=inputs)
    return inputs


def log_dataset_file(run_id: str, path: str | Path, *, artifact_path: str = DATA_ARTIFACT_DIR,
                     client: "MlflowClient | None" = None) -> str:
    """Copy a dataset file (or a folder of shards) into run ``run_id``'s artifacts under
    ``artifact_path``; returns its ``runs:/`` URI. For data a run produced: inputs that
    exist elsewhere (published sets) are referenced by :func:`log_datasets`, not copied."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    c = client or default_client()
    if path.is_dir():
        c.log_artifacts(run_id, str(path), f"{artifact_path}/{path.name}")
    else:
        c.log_artifact(run_id, str(path), artifact_path)
    return f"runs:/{run_id}/{artifact_path}/{path.name}"


def log_collected_dataset(run_id: str, ts: TrajectorySet, path: str | Path, *,
                          artifact_path: str = DATA_ARTIFACT_DIR,
                          client: "MlflowClient | None" = None) -> "DatasetInput":
    """A collection's output: the file at ``path`` (holding ``ts``) as a run artifact and
    ``ts`` as a ``collect`` input whose source is ``path``, so a later search or evaluate
    run on that file shows the same dataset (same name and digest); the input's
    ``autotts.artifact`` tag is the artifact copy's ``runs:/`` URI."""
    c = client or default_client()
    artifact = log_dataset_file(run_id, path, artifact_path=artifact_path, client=c)
    entry = dataset_input(ts, "collect", str(path), tags={"autotts.artifact": artifact})
    c.log_inputs(run_id, datasets=[entry])
    return entry


# ---------------------------------------------------------------------------- parts
def _source(uri: str, name: str) -> "DatasetSource":
    """Where MLflow says the data is: the pinned URL of a published set, an http(s) URL as
    given, else the absolute local path."""
    from mlflow.data.http_dataset_source import HTTPDatasetSource  # lazy: see the module docstring
    from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]

    if not uri:
        raise ValueError(f"dataset {name!r} has no source (its provenance names no file or URI)")
    if is_published_uri(uri):
        return HTTPDatasetSource(published_url(uri))
    if uri.startswith(("http://", "https://")):
        return HTTPDatasetSource(uri)
    return LocalArtifactDatasetSource(str(Path(uri.removeprefix("file://")).expanduser().absolute()))


def _schema(ts: TrajectorySet) -> Any:
    """The Parquet row form as an MLflow schema (a ``signal.<name>`` column per signal,
    optional when some problems lack it)."""
    from mlflow.types import ColSpec, DataType, Schema  # lazy: see the module docstring
    from mlflow.types.schema import Array

    def kind(text: str) -> Any:
        return Array(DataType[text[6:-1]]) if text.startswith("array<") else DataType[text]

    cols = [ColSpec(kind(_COLUMN_TYPES[c]), c) for c in COLUMNS]
    have = Counter(name for p in ts.problems for name in p.branches.signals)
    for name in sorted(have):
        cols.append(ColSpec(Array(DataType.double), SIGNAL_PREFIX + name, required=have[name] == len(ts.problems)))
    return Schema(cols)


def _profile(ts: TrajectorySet, uri: str, sha: str) -> dict[str, Any]:
    """What the UI shows beside the schema: the set's size and where it came from."""
    branches = [p.branches.n_branches for p in ts.problems]
    counts, intervals = set(branches), {p.branches.interval_tokens for p in ts.problems}
    prov = ts.provenance
    return {
        "num_rows": sum(branches),
        "num_problems": len(branches),
        "branches_per_problem": (counts.pop() if len(counts) == 1
                                 else {"min": min(counts), "max": max(counts)} if counts else None),
        "probe_answers": sum(len(p.branches.probe_answers) for p in ts.problems),
        "interval_tokens": intervals.pop() if len(intervals) == 1 else None,
        "signals": ts.signal_names(),
        "model": prov.model,
        "benchmark": prov.benchmark,
        "uri": uri,
        "sampling": prov.sampling,
        "sha256": sha,
    }
