"""A real local Ray cluster for the executor tests: ``ray start --head`` with 2 CPUs on
loopback, started once per session and stopped by its pid (process group).

Registered from ``conftest.py``. Under ``CI=true`` a missing Ray fails instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mlflow_autotts.live.server import free_port


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "ray: runs a real local Ray cluster")


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail("Ray is not installed (pip install -e '.[test]') (CI=true: Ray tests must run)")
        pytest.skip("Ray is not installed (pip install -e '.[test]')")


class RayHead:
    """``ray start --head --block`` in its own process group; ``stop`` kills that group."""

    def __init__(self, cpus: int = 2):
        self.temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's unix sockets
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        ray_bin = Path(sys.executable).with_name("ray")
        cmd = [str(ray_bin), "start", "--head", "--block", f"--num-cpus={cpus}", "--num-gpus=0",
               f"--port={self.port}", "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp}",
               "--include-dashboard=false", "--disable-usage-stats",
               f"--ray-client-server-port={free_port()}"]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        self.log = open(self.temp / "head.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        env = {**os.environ, "RAY_ADDRESS": self.address}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}: {self.tail()}")
            probe = subprocess.run([sys.executable, "-c", "import ray; ray.init(); print(ray.cluster_resources())"],
                                   env=env, capture_output=True, text=True, timeout=60)
            if probe.returncode == 0 and "CPU" in probe.stdout:
                return
            time.sleep(1.0)
        raise RuntimeError(f"the Ray head at {self.address} did not come up in {timeout:.0f} s: {self.tail()}")

    def tail(self) -> str:
        return (self.temp / "head.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """The address of a running 2-CPU Ray head on loopback; this process is its driver
    (``RAY_ADDRESS`` is set, so subprocesses started by tests join it too)."""
    _require_ray()
    import ray

    head = RayHead(cpus=2)
    try:
        head.wait_ready()
        os.environ["RAY_ADDRESS"] = head.address
        yield head
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        if ray.is_initialized():
            ray.shutdown()
        head.stop()
