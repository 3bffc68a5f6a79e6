"""Imports the reference controllers so that they register themselves."""

from mlflow_autotts.controllers import baselines, cmc, parallel_probe  # noqa: F401
