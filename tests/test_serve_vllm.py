"""``autotts serve`` on real vLLM servers (the demo model, SmolLM2-135M-Instruct, on the CPU
build), driven by the real ``openai`` client: the acceptance of the OpenAI-compatible endpoint.

Two registered controllers: the built-in CMC and a source file (``ProbeVote``, run only in
sandbox children), both generating on the session's vLLM server. Failures (a server killed
or stopped mid-request, failover between two servers) use servers of their own.
Every number asserted is read from the engine (vLLM's ``/metrics``), the endpoint
(``/health``, ``usage``) or the tracking store, never assumed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from mlflow_autotts.live.server import VLLMServer, free_port
from tests.helpers import PROBE_VOTE
from tests.live_fixtures import _require_vllm
from tests.servers import autotts_served, server_running

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

BUILTIN, SOURCE = "autotts-controller", "probe-vote"
LIVE = {"interval_tokens": 32, "max_tokens_per_branch": 64, "lookahead": 8, "probe_tokens": 8,
        "request_timeout": 120, "overall_timeout": 300, "max_retries": 0, "seed": 1}
LONG = {"AUTOTTS_LIVE_INTERVAL_TOKENS": "400", "AUTOTTS_LIVE_MAX_TOKENS_PER_BRANCH": "800",
        "AUTOTTS_LIVE_LOOKAHEAD": "8"}
"""Branches long enough that an engine call is still running when a test acts on it."""
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
CONTEXT = 1024
"""The servers' context: the question and a branch of at most ``LONG``'s 800 tokens."""



def metric(base_url: str, name: str) -> float:
    """The sum of a vLLM gauge or counter over its label sets (``/metrics``)."""
    root = base_url.removesuffix("/v1")
    text = requests.get(f"{root}/metrics", timeout=5).text
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    assert values, f"vLLM's /metrics has no {name}"
    return sum(values)


def running(base_url: str) -> float:
    return metric(base_url, "vllm:num_requests_running")


def wait_until(cond, timeout: float, what: str, every: float = 0.05) -> float:
    """Seconds until ``cond()`` held (fails after ``timeout``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout} s")


@pytest.fixture(scope="module")
def store(mlflow_template_db, tmp_path_factory):
    """One sqlite store for the module (its URI in the environment the servers inherit)."""
    import mlflow

    db = tmp_path_factory.mktemp("serve-vllm-store") / "mlflow.db"
    shutil.copy(mlflow_template_db, db)
    uri = f"sqlite:///{db}"
    with pytest.MonkeyPatch.context() as mp:  # set_registry_uri exports MLFLOW_REGISTRY_URI: taken back after
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield uri
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def register(controller: str, name: str, model: str, base_url: str, cwd: Path) -> None:
    from click.testing import CliRunner

    from mlflow_autotts.cli.main import main

    args = ["register", controller, "--name", name, "--beta", "0.5", "--alias", "champion", "--live-model",
            model, "--live-base-url", base_url] + [a for k, v in LIVE.items() for a in ("--live", f"{k}={v}")]
    old = os.getcwd()
    os.chdir(cwd)  # the run's artifacts land beside the store, not in the repository
    try:
        res = CliRunner().invoke(main, args)
    finally:
        os.chdir(old)
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def demo_server(demo_model, tmp_path_factory):
    """vLLM's OpenAI-compatible server on the demo model, on a free loopback port."""
    _require_vllm()
    server = VLLMServer(demo_model, tmp_path_factory.mktemp("vllm-demo") / "server.log", max_model_len=CONTEXT)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def models(store, demo_model, demo_server, tmp_path_factory):
    """Both controllers registered, generating on the module's vLLM server."""
    where = tmp_path_factory.mktemp("serve-vllm-models")
    source = where / "probe_vote.py"
    source.write_text(PROBE_VOTE)
    register("cmc", BUILTIN, demo_model, demo_server.base_url, where)
    register(f"{source}:ProbeVote", SOURCE, demo_model, demo_server.base_url, where)
    return demo_server


@pytest.fixture(scope="module")
def endpoints(models, tmp_path_factory):
    """``autotts serve`` of each controller (name -> base URL)."""
    where = tmp_path_factory.mktemp("serve-vllm-endpoints")
    with ExitStack() as stack:
        urls = {name: stack.enter_context(autotts_served(f"models:/{name}@champion", where))
                for name in (BUILTIN, SOURCE)}
        yield urls


def client(url: str, **kw):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=kw.pop("timeout", 300), **kw)


# ----------------------------------------------------------------------------- the client's view
@pytest.mark.parametrize("name", [BUILTIN, SOURCE])
def test_the_openai_client_gets_answers_plain_and_streamed(endpoints, name):
    c = client(endpoints[name])
    messages = [{"role": "user", "content": QUESTION}]
    done = c.chat.completions.create(model=name, messages=messages)
    ext = done.model_extra["autotts"]
    assert done.choices[0].finish_reason == "stop" and ext["cut_short"] is None
    assert done.usage.completion_tokens > 0 and done.usage.prompt_tokens > 0
    details = done.usage.completion_tokens_details.model_extra
    assert details["generated_tokens"] >= done.usage.completion_tokens and details["engine_calls"] >= 2
    assert details["cached_prompt_tokens"] > 0  # branches continue the prompt in vLLM's prefix cache
    assert ext["branches"]["opened"] >= 2 and ext["controller"] in ("cmc", "probe_vote")
    content = done.choices[0].message.content
    if ext["content_source"] == "branch":  # a finished branch: the model's own text, with its box
        assert f"\\boxed{{{ext['answer']}" in content or ext["answer"] in content

    # the same request streamed: progress first, then the same answer and bill (same seeds)
    stream = c.chat.completions.create(model=name, messages=messages, stream=True,
                                       stream_options={"include_usage": True})
    reasoning, text, usage = [], [], None
    for part in stream:
        if part.usage is not None:
            usage = part.usage
        for choice in part.choices:
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning_content"):
                reasoning.append(extra["reasoning_content"])
            if choice.delta.content:
                text.append(choice.delta.content)
    assert len(reasoning) >= 3 and "".join(text) == content
    assert usage is not None and usage.completion_tokens == done.usage.completion_tokens

    # the Responses API: the same episode (same seeds), in its own shapes, plain and streamed
    answer = c.responses.create(model=name, input=QUESTION)
    assert answer.status == "completed" and answer.output_text == content
    assert answer.usage.output_tokens == done.usage.completion_tokens
    kinds, deltas, final = [], [], None
    for event in c.responses.create(model=name, input=QUESTION, stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            final = event.response
    assert kinds[0] == "response.created" and "response.reasoning_summary_text.delta" in kinds
    assert "".join(deltas) == content and final is not None and final.usage.output_tokens == answer.usage.output_tokens

    # one trace per request in the store, linked to the served version, with its engine calls
    import mlflow

    ids = {done.id, answer.id}
    def traced():
        found = mlflow.search_traces(locations=[mlflow.get_experiment_by_name("autotts-serve").experiment_id],
                                     return_type="list")
        return [t for t in found if t.info.trace_metadata.get("autotts.registered_model") == name]
    wait_until(lambda: len(traced()) >= 4, 60, "the four requests were not all traced", every=1)
    mine = {t.data.spans[0].attributes.get("autotts.response_id"): t for t in traced()}
    assert ids <= set(mine), (ids, set(mine))
    trace = mine[done.id]
    llm = [sp for sp in trace.data.spans if sp.parent_id is not None]
    assert len(llm) == details["engine_calls"]
    assert trace.info.trace_metadata.get("autotts.model_version") == "1"


def test_32_concurrent_requests_are_all_in_flight_at_once(endpoints, models):
    url = endpoints[BUILTIN]
    c = client(url)
    seen = {"running": 0.0, "admitted": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen["running"] = max(seen["running"], running(models.base_url))
            seen["admitted"] = max(seen["admitted"], requests.get(f"{url}/health", timeout=5).json()["requests_admitted"])
            time.sleep(0.02)

    def ask(k: int):  # at β = 0 (few branches each): the test is about requests in flight, not work
        return c.chat.completions.create(model=BUILTIN, messages=[{"role": "user", "content": f"{QUESTION} ({k})"}],
                                         extra_body={"beta": 0.0})

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(ask, range(32)))
    finally:
        stop.set()
        watcher.join()
    assert all(a.usage.completion_tokens > 0 for a in answers)
    print(f"max admitted {seen['admitted']}, max vLLM requests running {seen['running']:.0f}")
    assert seen["admitted"] == 32  # every request had an episode running
    assert seen["running"] >= 32  # and the engine batched their branches together


def test_a_per_request_beta_changes_the_bill_and_a_token_cap_is_honoured(endpoints):
    c = client(endpoints[SOURCE])  # the sandboxed ProbeVote opens 2 + round(6 β) branches
    messages = [{"role": "user", "content": QUESTION}]
    low, high = (c.chat.completions.create(model=SOURCE, messages=messages, extra_body={"beta": b}) for b in (0.0, 1.0))
    assert (low.model_extra["autotts"]["beta"], high.model_extra["autotts"]["beta"]) == (0.0, 1.0)
    assert low.model_extra["autotts"]["branches"]["opened"] == 2
    assert high.model_extra["autotts"]["branches"]["opened"] == 8
    assert high.usage.completion_tokens > low.usage.completion_tokens

    capped = c.chat.completions.create(model=SOURCE, messages=messages, extra_body={"beta": 1.0},
                                       max_completion_tokens=100)
    ext = capped.model_extra["autotts"]
    assert capped.usage.completion_tokens <= 100 < high.usage.completion_tokens
    assert capped.choices[0].finish_reason == "length" and ext["cut_short"]["reason"] == "max_tokens"


def test_a_client_that_disconnects_aborts_its_generation(models, tmp_path):
    # the same built-in, served with long branches: each engine call runs for seconds
    with autotts_served(f"models:/{BUILTIN}@champion", tmp_path, env=LONG) as url:
        assert running(models.base_url) == 0
        body = {"model": BUILTIN, "messages": [{"role": "user", "content": QUESTION}], "stream": True}
        with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=300) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines).startswith(b"data: ")  # the first event, before any generation
            wait_until(lambda: running(models.base_url) > 0, 60, "the episode's engine call never reached vLLM")
        # the client is gone: its requests are aborted in vLLM, long before they would end
        took = wait_until(lambda: running(models.base_url) == 0, 10, "vLLM kept generating for a gone client")
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["requests_cancelled"] == 1
        wait_until(lambda: requests.get(f"{url}/health", timeout=5).json()["requests_admitted"] == 0, 10,
                   "the episode's worker was not freed")
        print(f"vLLM's running requests fell to 0 {took:.2f} s after the client went away")


# ----------------------------------------------------------------------------- failing servers
def post_in_background(url: str, body: dict) -> tuple[dict, threading.Thread]:
    out: dict = {}

    def go() -> None:
        t0 = time.monotonic()
        r = requests.post(f"{url}/v1/chat/completions", json=body, timeout=600)
        out.update(status=r.status_code, body=r.json(), seconds=time.monotonic() - t0, ended=time.monotonic())

    thread = threading.Thread(target=go)
    thread.start()
    return out, thread


def test_failover_between_servers_and_a_dead_or_hung_server_is_a_503_within_seconds(models, demo_model, tmp_path):
    servers = [VLLMServer(demo_model, tmp_path / f"vllm-{k}.log", max_model_len=CONTEXT) for k in range(2)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: s.start(), servers))
    a, b = servers
    env = {**LONG, "AUTOTTS_LIVE_BASE_URL": a.base_url, "AUTOTTS_LIVE_REPLICA_URLS": b.base_url,
           "AUTOTTS_LIVE_HEALTH_INTERVAL": "2", "AUTOTTS_LIVE_HEALTH_TIMEOUT": "2",
           "AUTOTTS_LIVE_REPLICA_COOLDOWN": "3"}
    body = {"model": BUILTIN, "messages": [{"role": "user", "content": QUESTION}]}
    try:
        with autotts_served(f"models:/{BUILTIN}@champion", tmp_path, env=env) as url:
            # 1. the server an episode runs on is killed: its batch moves to the other one
            out, thread = post_in_background(url, body)
            wait_until(lambda: running(a.base_url) > 0, 60, "the episode never reached the first server")
            os.killpg(a.proc.pid, signal.SIGKILL)
            thread.join(300)
            assert out["status"] == 200, out
            assert metric(b.base_url, "vllm:request_success_total") > 0  # b finished what a had started
            health = requests.get(f"{url}/health", timeout=5).json()
            assert set(health["backend_servers_down"]) <= {a.base_url}  # a, while it cools down

            # 2. the last server hangs (SIGSTOP): noticed by its health check, not after request_timeout
            out, thread = post_in_background(url, body)
            wait_until(lambda: running(b.base_url) > 0, 60, "the episode never reached the second server")
            os.killpg(b.proc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            thread.join(60)
            assert out["status"] == 503 and out["body"]["error"]["code"] == "backend_unavailable", out
            assert out["ended"] - stopped < 30, f"503 after {out['ended'] - stopped:.1f} s"
            assert "stopped answering" in out["body"]["error"]["message"]
            print(f"hung server: 503 after {out['ended'] - stopped:.1f} s")
            os.killpg(b.proc.pid, signal.SIGCONT)

            # 3. back after its cooldown, then killed mid-request: 503 within seconds, naming it
            time.sleep(3.5)
            out, thread = post_in_background(url, body)
            wait_until(lambda: running(b.base_url) > 0, 60, "the episode never reached the revived server")
            os.killpg(b.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            thread.join(60)
            assert out["status"] == 503 and b.base_url in out["body"]["error"]["message"], out
            assert out["ended"] - killed < 30, f"503 after {out['ended'] - killed:.1f} s"
            print(f"killed server: 503 after {out['ended'] - killed:.1f} s")
    finally:
        for s in servers:
            if s.proc is not None:
                try:
                    os.killpg(s.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            s.stop()


# ----------------------------------------------------------------------------- the README, as written
def readme_snippets() -> list[str]:
    """The Python blocks of the README's "Use it from any OpenAI client" section."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## Use it from any OpenAI client", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 2, "the README's OpenAI-client section lost its Python snippets"
    return blocks


def readme_serve_command() -> list[str]:
    """The ``autotts serve`` command of the README's "Use it from any OpenAI client" section."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## Use it from any OpenAI client", 1)[1].split("\n## ", 1)[0]
    commands = [line for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines()
                if line.startswith("autotts serve ")]
    assert len(commands) == 1, "the README's OpenAI-client section must start the endpoint with one command"
    return shlex.split(commands[0].removesuffix("&").strip())


def test_the_readmes_serve_command_and_python_snippets_run_as_written(models, tmp_path):
    import subprocess
    import sys

    argv = readme_serve_command()
    assert argv[:3] == ["autotts", "serve", f"models:/{BUILTIN}@champion"] and "5005" in argv
    port = free_port()  # the README's command, on a free port instead of 5005
    argv = [sys.executable, "-m", "mlflow_autotts.cli", *(str(port) if a == "5005" else a for a in argv[1:])]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with server_running(argv, tmp_path, "readme-serve.log", port, env, ready_path="/health") as url:
        code = "\n".join(readme_snippets()).replace("http://127.0.0.1:5005", url)  # the same port
        assert code.count(url) == 1, "the snippets must name the README's address once"
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "'answer':" in out and "completion_tokens=" in out  # the extension and the usage were printed
    assert "branch" in out  # the streamed progress lines
