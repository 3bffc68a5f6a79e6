"""MLflow's AI Gateway (``mlflow server``) in front of ``autotts serve``, as ``docs/ai-gateway.md``
sets it up: the page's Python blocks run as written (only its ports and its daily budget are
replaced), against a real ``mlflow server`` and two controller endpoints (champion: sc@4,
challenger: sc@2) on uvicorn in this process over the scripted backend. Each endpoint's app is
wrapped in a ``Recorder`` that keeps every request body the gateway sends it, so the test states
what the gateway adds, forwards and drops, and can take the champion down for the fallback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
import requests
from mlflow.models import Model

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.live.server import free_port
from mlflow_autotts.serving.endpoint.app import ServedModel, build_app
from mlflow_autotts.serving.endpoint.config import ServeConfig
from mlflow_autotts.serving.endpoint.protocol import RequestLimits
from mlflow_autotts.serving.model_config import model_config_for
from mlflow_autotts.tracking.model import model_signature
from tests.endpoint_fixtures import MODEL, Uvicorn, client_of, scripted_runner
from tests.servers import stop_group

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parent.parent / "docs" / "ai-gateway.md"
QUESTION = [{"role": "user", "content": "What is 1+1?"}]
CHAMPION_TOKENS, CHALLENGER_TOKENS = 47, 22
"""Billed tokens of sc@4 and sc@2 over the scripted branches (9+13+4+21, 9+13)."""


def doc_python_blocks() -> list[str]:
    """The page's Python blocks in order: prices, gateway endpoints, budget, calls."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 4, f"docs/ai-gateway.md should have 4 Python blocks, has {len(blocks)}"
    return blocks


def doc_exports(cwd: Path) -> dict[str, str]:
    """The environment the page's ``export`` lines give ``mlflow server`` ($PWD: ``cwd``)."""
    exports = {}
    for line in DOC.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = shlex.split(line, comments=True)[1].partition("=")
            exports[name] = value.replace("$PWD", str(cwd))
    assert {"MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS", "MLFLOW_MODEL_CATALOG_URI"} <= exports.keys()
    return exports


class Recorder:
    """An ASGI wrapper keeping each request's path and JSON body; while ``down``, every
    chat/responses request is answered 503 without reaching the app (a dead controller)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, Any]] = []
        self.down = False

    def bodies(self, since: int = 0) -> list[Any]:
        return [body for _, body in self.seen[since:]]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        raw = b"".join(chunks)
        self.seen.append((scope["path"], json.loads(raw) if raw else None))
        if self.down:
            body = json.dumps({"error": {"message": "controller down", "type": "server_error"}}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def controller_app(n: int) -> Recorder:
    """``autotts serve``'s app for sc@n over the scripted backend, as ``endpoint_fixtures.endpoint``
    builds it (served as ``autotts-controller``)."""
    config, source = model_config_for(ControllerSpec("sc", 0.5, {"n": n}))
    served = ServedModel.from_config(dict(config, live={"model": "scripted"}), source.path,
                                     Model(signature=model_signature(0.5)), (MODEL,), {"version": "1"})
    served.model.mode("live")._runner = scripted_runner()
    return Recorder(build_app(served, ServeConfig(model_uri="models:/autotts-controller@champion",
                                                  request=RequestLimits(min_beta=0.1, max_beta=0.9))))


@contextlib.contextmanager
def mlflow_server(cwd: Path, db: Path, env: dict[str, str]) -> Iterator[str]:
    """``mlflow server`` (one worker, no job runner) on a free loopback port, in its own process
    group; yields its URL once ``/health`` answers and stops the whole group after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = cwd / "mlflow-server.log"
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
                                 "--default-artifact-root", str(cwd / "artifacts"), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not ready after 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)


@dataclass
class Rig:
    gateway: str
    champion: Recorder
    challenger: Recorder
    champion_server: Uvicorn
    ports: dict[str, str]
    ns: dict[str, Any] = field(default_factory=dict)
    """The namespace the page's blocks ran in (``post``, ``controller``, ``autotts``, …)."""

    def run(self, block: str, replace: dict[str, str] | None = None, **names: Any) -> dict[str, Any]:
        """Run one of the page's blocks (its URLs made ours, ``replace``'s text swapped) in a copy
        of the namespace updated with ``names``, and return that copy."""
        for theirs, ours in {**self.ports, **(replace or {})}.items():
            assert theirs in block or theirs in self.ports, f"{theirs!r} not in the block"
            block = block.replace(theirs, ours)
        ns = {**self.ns, **names}
        exec(compile(block, str(DOC), "exec"), ns)
        return ns

    def client(self, route: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.gateway}/gateway/{route}/v1", api_key="unused", max_retries=0,
                             timeout=60)


@pytest.fixture(scope="module")
def rig(tmp_path_factory, mlflow_template_db) -> Iterator[Rig]:
    """The page followed: prices written, two controllers served, ``mlflow server`` started with
    the page's exports, the gateway's secrets, model definitions and endpoints created."""
    prices, setup, _, _ = doc_python_blocks()
    cwd = tmp_path_factory.mktemp("gateway")
    with contextlib.chdir(cwd):  # the prices block writes ./gateway-prices
        exec(compile(prices, str(DOC), "exec"), {})
    assert "autotts-controller" in json.loads((cwd / "gateway-prices" / "openai.json").read_text())["models"]
    db = cwd / "mlflow.db"
    shutil.copy(mlflow_template_db, db)
    champion, challenger = controller_app(4), controller_app(2)
    with Uvicorn(champion) as champion_server, Uvicorn(challenger) as challenger_server, \
            mlflow_server(cwd, db, doc_exports(cwd)) as gateway:
        ports = {"http://localhost:5000": gateway, "http://localhost:8000": champion_server.url,
                 "http://localhost:8001": challenger_server.url}
        rig = Rig(gateway, champion, challenger, champion_server, ports)
        rig.ns = rig.run(setup)
        yield rig


def test_chat_through_the_gateway_is_the_endpoints_answer_with_beta_forwarded(rig: Rig) -> None:
    """The page's calls: the unified route adds only ``n: 1`` and forwards ``beta``,
    ``metadata`` and ``max_completion_tokens``; content and usage are the endpoint's own;
    the extension survives only the passthrough route."""
    before = len(rig.champion.seen)
    ns = rig.run(doc_python_blocks()[3])
    reply, full = ns["reply"], ns["full"]
    unified, passthrough = rig.champion.bodies(before)
    assert unified == {"model": MODEL, "n": 1, "messages": QUESTION, "max_completion_tokens": 4000,
                       "metadata": {"deadline_s": "60"}, "beta": 0.3}
    assert passthrough == {"model": MODEL, "messages": QUESTION, "beta": 0.3}

    direct = client_of(rig.champion_server).chat.completions.create(
        model=MODEL, messages=QUESTION, max_completion_tokens=4000, extra_body={"beta": 0.3},
        metadata={"deadline_s": "60"})
    assert direct.model_extra["autotts"]["beta"] == 0.3
    for answer in (reply, full):
        assert answer.choices[0].message.content == direct.choices[0].message.content
        assert answer.choices[0].finish_reason == "stop"
        assert answer.usage.completion_tokens == direct.usage.completion_tokens == CHAMPION_TOKENS
        assert answer.usage.prompt_tokens == direct.usage.prompt_tokens
        assert answer.usage.completion_tokens_details.model_extra["engine_calls"] == \
            direct.usage.completion_tokens_details.model_extra["engine_calls"]
    assert "autotts" not in (reply.model_extra or {})  # the unified route drops the extension
    same = ("answer", "votes", "branches", "content_source", "controller", "beta", "cut_short")
    assert {k: full.model_extra["autotts"][k] for k in same} == {k: direct.model_extra["autotts"][k] for k in same}
    assert {m.id for m in rig.client("mlflow").models.list()} >= {"autotts", "autotts-ab", "autotts-failover"}


def test_streams_and_responses_through_the_gateway(rig: Rig) -> None:
    """A unified-route stream keeps text and usage but loses the progress lines; the passthrough
    stream and the Responses route are the endpoint's own."""
    before = len(rig.champion.seen)
    chunks = list(rig.client("mlflow").chat.completions.create(model="autotts", messages=QUESTION, stream=True,
                                                                extra_body={"beta": 0.3}))
    assert rig.champion.bodies(before) == [{"model": MODEL, "n": 1, "stream": True, "messages": QUESTION,
                                            "stream_options": {"include_usage": True}, "beta": 0.3}]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens == CHAMPION_TOKENS
    assert not any("reasoning_content" in (c.choices[0].delta.model_extra or {}) for c in chunks if c.choices)

    raw = list(rig.client("openai").chat.completions.create(model="autotts", messages=QUESTION, stream=True))
    progress = [c.choices[0].delta.model_extra["reasoning_content"] for c in raw
                if c.choices and "reasoning_content" in (c.choices[0].delta.model_extra or {})]
    assert progress and progress[-1].startswith("done: answer")
    assert "".join(c.choices[0].delta.content or "" for c in raw if c.choices) == text
    assert any((c.model_extra or {}).get("autotts") for c in raw)

    response = rig.client("openai").responses.create(model="autotts", input="What is 1+1?",
                                                     extra_body={"beta": 0.3})
    assert rig.champion.seen[-1] == ("/v1/responses", {"model": MODEL, "input": "What is 1+1?", "beta": 0.3})
    assert response.output_text == text
    assert response.usage.output_tokens == CHAMPION_TOKENS and response.model_extra["autotts"]["beta"] == 0.3


def test_a_refused_field_is_refused_through_the_gateway_in_its_error_shape(rig: Rig) -> None:
    """The gateway adds no sampling field, forwards the client's: the endpoint's 400 comes back
    with its message, in the gateway's ``{"detail": …}`` shape."""
    with pytest.raises(openai.BadRequestError) as direct:
        client_of(rig.champion_server).chat.completions.create(
            model=MODEL, messages=QUESTION, temperature=0.2)
    message = direct.value.body["message"]
    assert message.startswith("temperature cannot be set per request")
    before = len(rig.champion.seen)
    with pytest.raises(openai.BadRequestError) as through:
        rig.client("mlflow").chat.completions.create(model="autotts", messages=QUESTION, temperature=0.2)
    assert through.value.status_code == 400 and through.value.body == {"detail": message}
    assert rig.champion.bodies(before) == [{"model": MODEL, "n": 1, "temperature": 0.2, "messages": QUESTION}]


def test_the_traffic_split_reaches_both_controllers(rig: Rig) -> None:
    """``autotts-ab`` (50/50) sends each request to one controller; every answer is that one's."""
    champion_before, challenger_before = len(rig.champion.seen), len(rig.challenger.seen)
    client = rig.client("mlflow")
    billed = [client.chat.completions.create(model="autotts-ab", messages=QUESTION).usage.completion_tokens
              for _ in range(16)]
    to_champion = len(rig.champion.seen) - champion_before
    to_challenger = len(rig.challenger.seen) - challenger_before
    assert to_champion + to_challenger == 16 and to_champion and to_challenger  # both: P(fail) = 2**-15
    assert billed.count(CHAMPION_TOKENS) == to_champion and billed.count(CHALLENGER_TOKENS) == to_challenger


def test_the_fallback_answers_when_the_champion_is_down_and_retries_a_refusal(rig: Rig) -> None:
    """``autotts-failover``: a champion answering 503 is skipped for the challenger; a request the
    champion refuses (400) is sent to the challenger too, and its 400 comes back."""
    champion_before, challenger_before = len(rig.champion.seen), len(rig.challenger.seen)
    rig.champion.down = True
    try:
        reply = rig.client("mlflow").chat.completions.create(model="autotts-failover", messages=QUESTION)
    finally:
        rig.champion.down = False
    assert reply.usage.completion_tokens == CHALLENGER_TOKENS
    assert len(rig.champion.seen) - champion_before == 1 and len(rig.challenger.seen) - challenger_before == 1

    with pytest.raises(openai.BadRequestError) as refused:
        rig.client("mlflow").chat.completions.create(model="autotts-failover", messages=QUESTION, temperature=0.2)
    assert "temperature cannot be set per request" in refused.value.body["detail"]
    assert "fallback attempts failed" in refused.value.body["detail"]
    assert len(rig.champion.seen) - champion_before == 2 and len(rig.challenger.seen) - challenger_before == 2


def test_a_budget_rejects_with_429_once_spent(rig: Rig) -> None:
    """The page's budget block on a fresh endpoint to the champion, with a daily budget below one
    request's price: the first request is answered (its cost crosses the limit), the next ones
    are 429 without reaching the endpoint."""
    created = rig.ns["post"]("endpoints/create", {"name": "autotts-budget", "model_configs": [
        {"model_definition_id": rig.ns["champion"], "linkage_type": "PRIMARY", "weight": 1.0}]})
    endpoint_id = created["endpoint"]["endpoint_id"]
    rig.run(doc_python_blocks()[2], {"USD_PER_DAY = 50.0": "USD_PER_DAY = 0.00001"}, autotts=endpoint_id)
    client = rig.client("mlflow")
    before = len(rig.champion.seen)
    first = client.chat.completions.create(model="autotts-budget", messages=QUESTION)
    assert first.usage.completion_tokens == CHAMPION_TOKENS  # $2/M billed tokens: $0.000094 > $0.00001
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as rejected:
            client.chat.completions.create(model="autotts-budget", messages=QUESTION)
        assert rejected.value.status_code == 429
        assert rejected.value.body["detail"].startswith("Budget limit exceeded.")
    assert len(rig.champion.seen) - before == 1
    # other endpoints to the same controller are not limited by this endpoint's budget
    assert client.chat.completions.create(model="autotts", messages=QUESTION).usage.completion_tokens == CHAMPION_TOKENS
