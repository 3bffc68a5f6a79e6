"""A real local Ray cluster for the executor tests: ``ray start --head`` with 2 CPUs on
loopback (``cluster.head.LocalRayHead``), started once per test module and stopped by its pid.

Registered from ``conftest.py``. Under ``CI=true`` a missing Ray fails instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from mlflow_autotts.cluster.head import LocalRayHead


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "ray: runs a real local Ray cluster")


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail("Ray is not installed (pip install -e '.[test]') (CI=true: Ray tests must run)")
        pytest.skip("Ray is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def ray_cluster():
    """A running 2-CPU Ray head on loopback; this process is its driver (``RAY_ADDRESS`` is
    set, so subprocesses started by tests join it too). One per test module, stopped after
    it, so the cluster's processes do not compete with the tests that follow."""
    _require_ray()
    import ray

    head = LocalRayHead(cpus=2)
    try:
        head.wait_ready()
        os.environ["RAY_ADDRESS"] = head.address
        yield head
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        if ray.is_initialized():
            ray.shutdown()
        head.stop()
