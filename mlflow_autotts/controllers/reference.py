"""Constants and specs of the reference setup that several layers measure against."""

from __future__ import annotations

from mlflow_autotts.controllers.base import MAX_BRANCHES
from mlflow_autotts.controllers.loading import ControllerSpec

SC64 = ControllerSpec("sc", None, {"n": MAX_BRANCHES})
"""Self-consistency over 64 branches: the baseline every reduction is measured against."""

REFERENCE_POINTS = (ControllerSpec("asc"), ControllerSpec("esc"), ControllerSpec("parallel_probe"))
"""The other published baselines, shown as points beside a controller's β curve."""
