"""Trajectory sets: in-memory form, file formats, dataset URIs and validation."""

from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet

__all__ = ["Branches", "Problem", "Provenance", "TrajectorySet"]
