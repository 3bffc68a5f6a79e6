"""Shared fixtures: the published data folder and real sqlite MLflow stores.

A new sqlite store costs ~8 s (schema migrations), so one template database is built per
test session and each test gets a copy of it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + str(Path(os.environ.get("TMPDIR", "/tmp")) / "autotts-tests-unused.db"))

pytest_plugins = ["tests.live_fixtures", "tests.ray_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B"]


def _data_dir() -> Path:
    env = os.environ.get("AUTOTTS_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "autotts-replay"


def require(available: bool, what: str) -> None:
    """Skip a test whose component or data is missing, except under ``CI=true``, where a
    missing component is a broken CI machine and the test fails with the reason."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: missing components fail, never skip)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The published AIME 2024 replay data; missing, tests skip (fail under ``CI=true``)."""
    d = _data_dir()
    require((d / "Qwen3-4B" / "aime24.json").is_file(),
            f"published replay data not found at {d} (set AUTOTTS_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory) -> Path:
    """A migrated, empty sqlite tracking database, built once per session."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(mlflow_template_db, tmp_path, monkeypatch) -> str:
    """A fresh sqlite tracking + registry store in ``tmp_path`` (also the cwd, so artifacts
    land there); its URI is set as ``MLFLOW_TRACKING_URI`` and returned."""
    import mlflow

    db = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # set_registry_uri exports MLFLOW_REGISTRY_URI and nothing takes it back: the monkeypatch
    # does, or every child process of later tests would use this (deleted) store's registry
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
