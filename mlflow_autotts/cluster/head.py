"""A Ray head node on this machine, started and stopped by pid (tests, benchmarks, laptops).

``ray start --head --block`` runs in a process group of its own on loopback, with a short
temp dir (Ray's unix sockets have a path limit); ``stop`` ends that group, so nothing else
on the machine is touched (``ray stop`` would stop every Ray instance here). On a real
cluster, start the head and workers with ``ray start`` as Ray documents.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow_autotts.live.server import free_port


class LocalRayHead:
    """A one-node Ray cluster with ``cpus`` CPUs; ``address`` is what ``RAY_ADDRESS`` takes."""

    def __init__(self, cpus: int = 2):
        self.temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--num-cpus={cpus}",
               "--num-gpus=0", f"--port={self.port}", "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp}",
               "--include-dashboard=false", "--disable-usage-stats", f"--ray-client-server-port={free_port()}"]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        self._log = open(self.temp / "head.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> "LocalRayHead":
        """Block until a driver can join (checked from a separate process); raises with the
        head's log when it exits or does not come up in ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        env = {**os.environ, "RAY_ADDRESS": self.address}
        probe = [sys.executable, "-c", "import ray; ray.init(); print(ray.cluster_resources().get('CPU'))"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}: {self.log_tail()}")
            done = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=60)
            if done.returncode == 0 and done.stdout.strip() not in ("", "None"):
                return self
            time.sleep(1.0)
        raise RuntimeError(f"the Ray head at {self.address} did not come up in {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.temp / "head.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        """End the head's process group (SIGTERM, then SIGKILL after 5 s) and its temp dir."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> "LocalRayHead":
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()
