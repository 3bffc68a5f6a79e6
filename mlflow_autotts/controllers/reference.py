"""Constants and specs of the reference setup that several layers measure against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlflow_autotts.controllers.base import MAX_BRANCHES
from mlflow_autotts.controllers.loading import ControllerSpec

if TYPE_CHECKING:  # annotations only: this module is imported by commands that never load data
    from mlflow_autotts.data.trajectory import TrajectorySet

SC64 = ControllerSpec("sc", None, {"n": MAX_BRANCHES})
"""Self-consistency over 64 branches: the baseline every reduction is measured against."""

REFERENCE_POINTS = (ControllerSpec("asc"), ControllerSpec("esc"), ControllerSpec("parallel_probe"))
"""The other published baselines, shown as points beside a controller's β curve."""


def sc_label(sets: Sequence[TrajectorySet]) -> str:
    """SC64's display name on ``sets``: ``sc@N`` with N the branches it reads per question
    (the data's, at most 64: SC@16 on a 16-branch collection), ``sc@A-B`` when questions
    have different numbers. Stored names (``token_reduction_vs_sc64``, ``vs_sc64``) keep
    ``sc64``: recorded runs and the code reading them rely on them."""
    cap = int(SC64.params["n"])
    counts = sorted({min(p.branches.n_branches, cap) for ts in sets for p in ts.problems})
    if not counts:
        return f"sc@{cap}"
    return f"sc@{counts[0]}" if len(counts) == 1 else f"sc@{counts[0]}-{counts[-1]}"
