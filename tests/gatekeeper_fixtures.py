"""A real ``mlflow server`` (sqlite, webhooks on) with ``autotts gatekeeper serve`` as its own
process and the webhook installed: shared by the gatekeeper's slow tests and the browser
test, which both drive the registry as the UI does and wait for the gate's decisions."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
import requests
from click.testing import CliRunner

from mlflow_autotts.cli.gatekeeper import journal_path
from mlflow_autotts.cli.main import main
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.live.server import free_port
from mlflow_autotts.promotion.journal import Entry, Journal
from mlflow_autotts.promotion.webhooks import SECRET_ENV
from mlflow_autotts.tracking.model_registry import register
from tests.servers import start_server, stop_group, tracking_server

NAME = "autotts-controller"
DATA = ("Qwen3-1.7B", "aime24")
"""The gate's data: one published model's trajectories (``<data_dir>/<model>/<set>.json``)."""

T = TypeVar("T")


def wait_for(what: Callable[[], T], timeout: float = 180.0, every: float = 0.1) -> T:
    """``what()`` once it is truthy; an ``AssertionError`` naming it (its docstring) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not reached within {timeout} s: {what.__doc__ or what}")


class GatekeeperProcess:
    """``autotts gatekeeper serve`` as its own process group; started, stopped, killed."""

    def __init__(self, tmp: Path, tracking_uri: str, state: Path, gate_data: str):
        self.tmp, self.state, self.port = tmp, state, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "mlflow_autotts.cli", "gatekeeper", "serve", "--gate", gate_data,
                     "--shuffles", "20", "--workers", "1", "--max-token-ratio", "1.5", "--port", str(self.port),
                     "--state-dir", str(state)]
        self.env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.env.pop(SECRET_ENV, None)
        self.proc = None

    def start(self) -> None:
        self.proc = start_server(self.argv, self.tmp, "gatekeeper.log", self.port, self.env, ready_path="/health")

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, nothing cleaned up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        stop_group(self.proc)

    def stop(self) -> None:
        stop_group(self.proc)

    def log(self) -> str:
        return (self.tmp / "gatekeeper.log").read_text()


class Served:
    """The MLflow server, the gatekeeper and the registered versions of the slow tests."""

    def __init__(self, server: str, keeper: GatekeeperProcess):
        from mlflow import MlflowClient

        self.server, self.keeper = server, keeper
        self.client = MlflowClient(tracking_uri=server, registry_uri=server)
        self.journal: Journal | None = None

    def set_alias(self, alias: str, version: str) -> None:
        """Through the REST API the registry UI calls (``ajax-api``, as the UI's alias editor)."""
        r = requests.post(f"{self.server}/ajax-api/2.0/mlflow/registered-models/alias",
                          json={"name": NAME, "alias": alias, "version": version}, timeout=30)
        assert r.status_code == 200, r.text

    def decided(self, alias: str, version: str, after: int, timeout: float = 240) -> Entry:
        """The decision of the first delivery past journal seq ``after`` about ``@alias -> version``."""
        def find():
            """a decided delivery for the alias change"""
            for e in self.journal.entries(NAME):
                if e.seq > after and (e.alias, e.version) == (alias, version) and e.state == "decided":
                    return e
            return None
        return wait_for(find, timeout=timeout)

    def last_seq(self) -> int:
        entries = self.journal.entries()
        return entries[-1].seq if entries else 0

    def champion(self) -> str | None:
        version = self.client.get_registered_model(NAME).aliases.get("champion")
        return None if version is None else str(version)

    def tags(self, version: str) -> dict[str, str]:
        return self.client.get_model_version(NAME, version).tags


@contextmanager
def gatekeeper_served(tmp: Path, gate_data: str, specs: Sequence[ControllerSpec]) -> Iterator[Served]:
    """An ``mlflow server`` in ``tmp``, the webhook installed (``autotts gatekeeper install``),
    the gatekeeper started, and ``specs`` registered as versions 1..n of ``NAME``; the
    tracking URI points at the server meanwhile."""
    import mlflow

    with tracking_server(tmp) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", server)
        mp.setenv("MLFLOW_REGISTRY_URI", server)  # set_registry_uri exports it; the context takes it back
        mp.delenv(SECRET_ENV, raising=False)
        mp.chdir(tmp)
        mlflow.set_tracking_uri(server)
        mlflow.set_registry_uri(server)
        keeper = GatekeeperProcess(tmp, server, tmp / "state", gate_data)
        try:
            r = CliRunner().invoke(main, ["gatekeeper", "install", "--url", keeper.url, "--state-dir",
                                          str(keeper.state), "--no-test"], catch_exceptions=False)
            assert r.exit_code == 0 and f"created webhook 'autotts-gatekeeper-{NAME}'" in r.output, r.output
            keeper.start()
            world = Served(server, keeper)
            world.journal = Journal(journal_path(str(keeper.state)))
            for spec in specs:
                register(spec, name=NAME)
            yield world
        finally:
            if keeper.proc is not None:
                keeper.stop()
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
