"""Fixtures of ``autotts serve``'s endpoint tests: the app on uvicorn in this process over a
scripted generation backend, a backend whose calls wait for the test, and the server's
``/health`` counters. Shared by ``test_serve_endpoint.py`` (chat completions) and
``test_serve_responses.py`` (the Responses API); a test module imports the ``endpoint``
fixture by name."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.live.episode import LiveRunner
from mlflow_autotts.live.server import free_port
from mlflow_autotts.serving.endpoint.app import ServedModel, build_app
from mlflow_autotts.serving.endpoint.config import ServeConfig
from mlflow_autotts.serving.endpoint.protocol import RequestLimits
from mlflow_autotts.serving.endpoint.tracing import TraceSettings
from mlflow_autotts.serving.model_config import model_config_for
from tests.live_fixtures import ScriptedBackend, char_prompts

MODEL = "autotts-controller"
LENGTHS = [9, 13, 4, 21, 6, 17]
QUESTION = [{"role": "user", "content": "What is 1+1?"}]
"""The scripted branches' lengths: sc@4 reads the first four (47 tokens)."""


def scripted_runner(**kw) -> LiveRunner:
    values = {"model": "scripted", "interval_tokens": 4, "max_tokens_per_branch": 40, "max_branches": 6,
              "probe_suffix": " \\boxed{", "instruction": "", "probe_tokens": 8}
    values.update(kw)
    cfg = LiveConfig(**values)
    backend = ScriptedBackend(LENGTHS, base_seed=cfg.seed, interval=cfg.interval_tokens)
    return LiveRunner(cfg, backend=backend, prompts=char_prompts(cfg.probe_suffix))


class Uvicorn:
    """The endpoint on uvicorn in a thread of this process, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Uvicorn:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def endpoint():
    from mlflow.models import Model

    from mlflow_autotts.tracking.model import model_signature

    config, source = model_config_for(ControllerSpec("sc", 0.5, {"n": 4}))
    served = ServedModel.from_config(dict(config, live={"model": "scripted"}), source.path,
                                     Model(signature=model_signature(0.5)), (MODEL,), {"version": "1"})
    served.model.mode("live")._runner = scripted_runner()
    app = build_app(served, ServeConfig(model_uri="models:/autotts-controller@champion",
                                        request=RequestLimits(min_beta=0.1, max_beta=0.9), max_request_bytes=4096,
                                        traces=TraceSettings(tracing=False)))  # traced: tests/test_serve_tracing.py
    with Uvicorn(app) as server:
        yield server, served


class Gated(ScriptedBackend):
    """Every engine call waits for ``gate`` (at most 20 s); counts the calls that returned."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.gate = threading.Event()
        self.returned = 0
        self.delay = 0.0

    def generate(self, requests, timeout=None, cancel=None):
        assert self.gate.wait(20), "the test never opened the gate"
        time.sleep(self.delay)
        out = super().generate(requests, timeout)
        self.returned += 1
        return out


def gated(served) -> Gated:
    live = served.model.mode("live")
    cfg = live._runner.config
    backend = Gated(LENGTHS, base_seed=cfg.seed, interval=cfg.interval_tokens)
    live._runner = LiveRunner(cfg, backend=backend, prompts=char_prompts(cfg.probe_suffix))
    return backend


def client_of(server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30)


def admitted(server) -> int:
    return requests.get(f"{server.url}/health", timeout=10).json()["requests_admitted"]


def wait_cancelled(server, count: int) -> None:
    """Until the server has seen ``count`` clients go away (their episodes told to stop)."""
    deadline = time.monotonic() + 10
    while requests.get(f"{server.url}/health", timeout=10).json()["requests_cancelled"] < count:
        assert time.monotonic() < deadline, "the server never noticed the client went away"
        time.sleep(0.05)


def wait_released(server) -> None:
    """Until no request is admitted any more (every worker has returned)."""
    deadline = time.monotonic() + 10
    while admitted(server):
        assert time.monotonic() < deadline, "a request was never released"
        time.sleep(0.05)
