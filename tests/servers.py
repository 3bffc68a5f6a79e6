"""Real servers for tests: ``mlflow models serve``, ``autotts serve`` and ``mlflow server`` on a
free loopback port, started and stopped as a process group (mlflow + uvicorn), with nothing
left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import requests

from mlflow_autotts.live.server import free_port


def group_alive(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group, from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(text[: text.rindex(")") + 1])
    return alive


def stop_group(proc: subprocess.Popen) -> None:
    """Terminate a server's whole process group and wait until it is gone."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(proc.pid):  # e.g. a worker still finishing a request: no grace left
        os.killpg(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    left = group_alive(proc.pid)
    assert not left, f"server processes left behind: {left}"


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180, path: str = "/ping") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[2:5]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def start_server(argv: list[str], tmp_path: Path, log_name: str, port: int, env: dict[str, str],
                 ready_path: str = "/ping") -> subprocess.Popen:
    """``argv`` started in its own process group in ``tmp_path``, its output appended to a log
    there; returned once ``http://127.0.0.1:PORT{ready_path}`` answers (stop it with ``stop_group``)."""
    log = tmp_path / log_name
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                start_new_session=True)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", log, path=ready_path)
    except BaseException:
        stop_group(proc)
        raise
    return proc


@contextmanager
def server_running(argv: list[str], tmp_path: Path, log_name: str, port: int, env: dict[str, str],
                   ready_path: str = "/ping") -> Iterator[str]:
    """``start_server``, yielding ``http://127.0.0.1:PORT``, and the group stopped after."""
    proc = start_server(argv, tmp_path, log_name, port, env, ready_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)


@contextmanager
def served_model(uri: str, tmp_path: Path, env: dict[str, str] | None = None, workers: int = 1) -> Iterator[str]:
    """``mlflow models serve -m URI`` on a free loopback port; yields its base URL."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # uvicorn is started by name
    full_env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "900", **(env or {})}
    with server_running([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                         "-p", str(port), "-h", "127.0.0.1", "-w", str(workers)],
                        tmp_path, f"serve-{port}.log", port, full_env) as url:
        yield url


@contextmanager
def autotts_served(uri: str, tmp_path: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``autotts serve URI`` on a free loopback port; yields its base URL."""
    port = free_port()
    with server_running([sys.executable, "-m", "mlflow_autotts.cli", "serve", uri, "--host", "127.0.0.1", "--port", str(port),
                         "--log-level", "warning", *options],
                        tmp_path, f"autotts-serve-{port}.log", port,
                        {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}) as url:
        yield url


TRACKING_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
                       "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https"}
"""An ``mlflow server`` for tests: no job runner (it starts ~16 s sooner), and webhooks may
reach a receiver on loopback over http."""


@contextmanager
def tracking_server(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``mlflow server`` on a sqlite database and an artifact folder in ``tmp_path``, one
    worker, on a free loopback port; yields its URL once ``/health`` answers."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # the environment's console scripts
    full_env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                "MLFLOW_DISABLE_TELEMETRY": "true", **TRACKING_SERVER_ENV, **(env or {})}
    with server_running([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                         f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(tmp_path / "artifacts"),
                         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                        tmp_path, f"mlflow-server-{port}.log", port, full_env, ready_path="/health") as url:
        yield url
