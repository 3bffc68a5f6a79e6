"""``autotts collect`` over several real vLLM servers (CPU build, the tiny seeded model).

Two OpenAI-compatible servers on free loopback ports, started at once. vLLM on this CPU
build samples the same tokens for a seeded request whatever the batch it shares and
whichever server runs it, so a collection spread over both, or resumed on another
server, has the one-server collection's branch lengths, probe answers and final answers. The logprobs (hence the confidence signals) are not bit-identical: batch
composition moves them in the 8th significant digit, so signals are compared to 1e-6.

The servers are paused (SIGSTOP) and stopped (SIGTERM) by their process group's id; the
last test stops the second server for good, so it runs last.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_autotts.cli.main import main
from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.collect.run import CollectError, collect
from mlflow_autotts.collect.shards import SERVED, work_dir
from mlflow_autotts.data.arithmetic import arithmetic_questions
from mlflow_autotts.data.parquet_io import read_parquet
from mlflow_autotts.live.server import VLLMServer, free_port
from tests.live_fixtures import TINY_LEN, _require_vllm

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

N = 6
SMALL = dict(branches=4, interval_tokens=16, max_tokens_per_branch=32, top_logprobs=3, group_window=8,
             concurrency=2, mlflow=False, progress=False)
LIVE = {"max_model_len": TINY_LEN, "request_timeout": 60.0, "max_retries": 0}
PAUSED_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def servers(tiny_model, tmp_path_factory):
    """Two vLLM servers on the tiny model, started concurrently."""
    _require_vllm()
    logs = tmp_path_factory.mktemp("vllm-servers")
    pair = [VLLMServer(tiny_model, logs / f"server{i}.log", max_model_len=TINY_LEN) for i in range(2)]
    errors: list[BaseException] = []

    def start(server: VLLMServer) -> None:
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001  (reported below, from the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield pair
    finally:
        for s in pair:
            signal_group(s, signal.SIGCONT)
            s.stop()


def signal_group(server: VLLMServer, sig: int) -> None:
    if server.proc is not None and server.proc.poll() is None:
        os.killpg(server.proc.pid, sig)


@pytest.fixture(scope="module")
def question_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("questions") / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_questions(N, seed=1)), encoding="utf-8")
    return str(path)


def settings(question_file: str, output: Path, urls: list[str], model: str, live: dict | None = None,
             **kw) -> CollectConfig:
    return CollectConfig(question_file, str(output), model, backend="openai", base_url=tuple(urls),
                         live={**LIVE, **(live or {})}, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def reference(servers, tiny_model, question_file, tmp_path_factory) -> Path:
    """The collection on the first server alone."""
    out = tmp_path_factory.mktemp("reference") / "c.parquet"
    collect(settings(question_file, out, [servers[0].base_url], model=tiny_model))
    return out


def same_problems(a: Path | str, b: Path | str) -> None:
    ta, tb = read_parquet(a), read_parquet(b)
    assert [p.question for p in ta.problems] == [p.question for p in tb.problems]
    for pa, pb in zip(ta.problems, tb.problems):
        assert pa.branches.triples() == pb.branches.triples()  # probe answers, lengths, final answers
        assert set(pa.branches.signals) == set(pb.branches.signals) == {"confidence", "group_confidence"}
        for name, values in pa.branches.signals.items():
            assert values == pytest.approx(pb.branches.signals[name], rel=1e-6)


def test_two_servers_share_the_questions_and_give_the_one_server_collection(servers, reference, tiny_model,
                                                                          question_file, tmp_path, mlflow_store):
    import mlflow

    out = tmp_path / "c.parquet"
    urls = [s.base_url for s in servers]
    res = CliRunner().invoke(main, [
        "collect", "-q", question_file, "-o", str(out), "--model", tiny_model, "--backend", "openai",
        "--base-url", ",".join(urls), "--concurrency", "2", "--branches", "4", "--interval-tokens", "16",
        "--max-tokens-per-branch", "32", "--top-logprobs", "3", "--group-window", "8", "--live",
        f"max_model_len={TINY_LEN}", "--no-progress", "--run-name", "two-servers"])
    assert res.exit_code == 0, res.output
    same_problems(out, reference)
    served = read_parquet(out).provenance.sampling[SERVED]
    assert set(served) == set(urls) and all(n > 0 for n in served.values()) and sum(served.values()) == N
    assert f"endpoints: {urls[0]} {served[urls[0]]} questions, {urls[1]} {served[urls[1]]} questions" in res.output
    run = mlflow.search_runs(experiment_names=["autotts-collect"], filter_string="tags.mlflow.runName = 'two-servers'",
                             output_format="list")[0]
    p, m = run.data.params, run.data.metrics
    assert p["base_url"] == ",".join(urls) and [p["endpoint.0"], p["endpoint.1"]] == urls
    assert [m["endpoint.0.questions"], m["endpoint.1.questions"]] == [served[u] for u in urls]
    assert m["endpoints"] == 2 and m["endpoints_failed"] == 0


def test_every_server_unresponsive_stops_naming_each_and_resume_finishes_on_another(servers, reference, tiny_model,
                                                                                   question_file, tmp_path):
    """Both servers paused mid-run: each times out and leaves rotation; the finished
    questions stay, nothing is published; --resume on the second server alone finishes.

    The timeout is 20 s: a live batch of four took up to 4.9 s here with both servers
    sharing the two cores, so 4 s timed running servers out before any pause."""
    out = tmp_path / "c.parquet"
    urls = [s.base_url for s in servers]
    paused = threading.Event()

    def pause_after_two(done, totals, elapsed) -> None:
        if done >= 2 and not paused.is_set():
            paused.set()
            for s in servers:
                signal_group(s, signal.SIGSTOP)

    warned: list[str] = []
    try:
        with pytest.raises(CollectError) as err:
            collect(settings(question_file, out, urls, model=tiny_model, live={"request_timeout": PAUSED_TIMEOUT}),
                    progress=pause_after_two, warn=warned.append)
    finally:
        for s in servers:
            signal_group(s, signal.SIGCONT)
    line = str(err.value)
    assert paused.is_set(), f"the servers failed before two questions were done, while running: {line}"
    assert line.startswith("every endpoint failed (") and "--resume" in line and "\n" not in line
    assert all(u in line for u in urls)  # timed out: "no answer to ... within 20.0 s" or the client's own
    assert sorted(w.split()[1] for w in warned) == sorted(urls)
    kept = len(list(work_dir(out).glob("q*.parquet")))
    assert 2 <= kept < N and not out.exists()
    report = collect(settings(question_file, out, [urls[1]], model=tiny_model, resume=True))
    assert report.resumed == kept and report.endpoints[0].served == N - kept
    same_problems(out, reference)


def test_a_dead_url_is_left_out_and_a_server_stopped_mid_run_hands_its_question_over(servers, reference, tiny_model,
                                                                                      question_file, tmp_path):
    """Runs last: it stops the second server."""
    out = tmp_path / "c.parquet"
    dead = f"http://127.0.0.1:{free_port()}/v1"
    first, second = servers
    stopped = threading.Event()

    def stop_second(done, totals, elapsed) -> None:
        if not stopped.is_set():
            stopped.set()
            second.stop()  # SIGTERM to its process group, by pid

    warned: list[str] = []
    report = collect(settings(question_file, out, [dead, first.base_url, second.base_url], model=tiny_model),
                     progress=stop_second, warn=warned.append)
    assert stopped.is_set()
    d, a, b = report.endpoints
    assert d.error is not None and "cannot reach the server" in d.error and d.served == 0
    assert b.error is not None and b.error.startswith(second.base_url) and a.error is None
    assert a.served + b.served == N and a.served > 0
    assert warned[0].startswith(f"endpoint {dead} is left out: ")
    assert warned[1].startswith(f"endpoint {second.base_url} failed and is out of rotation (")
    assert warned[1].endswith(f"its questions go to {first.base_url}")
    same_problems(out, reference)  # the question it held was done whole by the first server
