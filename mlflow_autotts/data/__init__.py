"""Trajectory sets: in-memory form, file formats, dataset URIs and validation.

Validation (great-expectations) and the CLI are imported from their own modules on use:
``mlflow_autotts.data.validate`` and ``mlflow_autotts.data.cli``.
"""

from mlflow_autotts.data.json_io import DataWarning, read_json, write_json
from mlflow_autotts.data.parquet_io import read_parquet, write_parquet
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.data.uris import load_dataset, load_datasets, resolve_dataset_uri

__all__ = [
    "Branches",
    "DataWarning",
    "Problem",
    "Provenance",
    "TrajectorySet",
    "load_dataset",
    "load_datasets",
    "read_json",
    "read_parquet",
    "resolve_dataset_uri",
    "write_json",
    "write_parquet",
]
