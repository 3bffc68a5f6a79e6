"""Real servers for tests: ``mlflow models serve`` on a free loopback port, started and
stopped as a process group (mlflow + uvicorn), with nothing left behind."""

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


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[2:5]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def _server(argv: list[str], tmp_path: Path, log_name: str, port: int, env: dict[str, str]) -> Iterator[str]:
    """``argv`` started in its own process group in ``tmp_path``, its output in a log there;
    yields ``http://127.0.0.1:PORT`` once ``/ping`` answers, and stops the group after."""
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / log_name
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                start_new_session=True)
    try:
        wait_ready(proc, url, log)
        yield url
    finally:
        stop_group(proc)


@contextmanager
def served_model(uri: str, tmp_path: Path, env: dict[str, str] | None = None, workers: int = 1) -> Iterator[str]:
    """``mlflow models serve -m URI`` on a free loopback port; yields its base URL."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # uvicorn is started by name
    full_env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "900", **(env or {})}
    with _server([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                  "-p", str(port), "-h", "127.0.0.1", "-w", str(workers)],
                 tmp_path, f"serve-{port}.log", port, full_env) as url:
        yield url


@contextmanager
def autotts_served(uri: str, tmp_path: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``autotts serve URI`` on a free loopback port; yields its base URL."""
    port = free_port()
    with _server([sys.executable, "-m", "mlflow_autotts.cli", "serve", uri, "--host", "127.0.0.1", "--port", str(port),
                  "--log-level", "warning", *options],
                 tmp_path, f"autotts-serve-{port}.log", port,
                 {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}) as url:
        yield url
