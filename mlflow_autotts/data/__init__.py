"""Trajectory sets: in-memory form, file formats, dataset URIs and validation.

The names below are importable from here (``from mlflow_autotts.data import read_json``),
but each is imported from its module on first use (PEP 562 ``__getattr__``), not when the
package is: a served model imports ``mlflow_autotts.data.trajectory`` alone, and ships
only that (``tracking.code_closure``), so this ``__init__`` must not import the file
formats or the URI cache. Validation (great-expectations) lives in
``mlflow_autotts.data.validate``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow_autotts.data.json_io import DataWarning, read_json, write_json
    from mlflow_autotts.data.parquet_io import read_parquet, write_parquet
    from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
    from mlflow_autotts.data.uris import load_dataset, load_datasets, resolve_dataset_uri

_HOMES = {
    "Branches": "trajectory", "Problem": "trajectory", "Provenance": "trajectory", "TrajectorySet": "trajectory",
    "DataWarning": "json_io", "read_json": "json_io", "write_json": "json_io",
    "read_parquet": "parquet_io", "write_parquet": "parquet_io",
    "load_dataset": "uris", "load_datasets": "uris", "resolve_dataset_uri": "uris",
}

__all__ = [
    "Branches", "DataWarning", "Problem", "Provenance", "TrajectorySet", "load_dataset", "load_datasets", "read_json",
    "read_parquet", "resolve_dataset_uri", "write_json", "write_parquet",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
