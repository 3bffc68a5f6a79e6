"""``autotts serve`` writes one MLflow trace per chat-completions request, off the request path.

A registered controller (CMC: it probes, so its episodes have many actions and engine calls)
is served by the real endpoint on uvicorn over the scripted backend, with a real sqlite
tracking store; the real ``openai`` client asks. Each trace is read back from the store and
held against the response the client got and against the same episode replayed on a fresh
scripted runner (the scripted backend is deterministic). Hostile: a tracking server that
never answers and one that refuses connections slow no request, a full queue drops and
counts, and both are reported once.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest
import requests

from mlflow_autotts import settings as autotts_settings
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live.episode import EpisodeLimits, LiveRunner
from mlflow_autotts.live.server import free_port
from mlflow_autotts.serving.endpoint.app import ServedModel, build_app
from mlflow_autotts.serving.endpoint.config import ServeConfig
from mlflow_autotts.serving.endpoint.protocol import RequestLimits
from mlflow_autotts.serving.endpoint.tracing import MLFLOW_TRACE_EXPORT, TraceSettings
from mlflow_autotts.serving.model_config import model_config_for
from tests.endpoint_fixtures import LENGTHS, MODEL, QUESTION, Uvicorn, client_of, gated, scripted_runner, \
    wait_cancelled
from tests.helpers import FailAfter
from tests.live_fixtures import char_prompts

URI = "models:/autotts-controller@champion"
EXPERIMENT = "autotts-serve"
TRACING_LOG = "mlflow_autotts.serving.endpoint.tracing"


def health(server) -> dict[str, Any]:
    return requests.get(f"{server.url}/health", timeout=10).json()


def wait_for(server, key: str, at_least: int, seconds: float = 30) -> dict[str, Any]:
    """``/health`` once its ``key`` reached ``at_least``."""
    deadline = time.monotonic() + seconds
    while (h := health(server))[key] < at_least:
        assert time.monotonic() < deadline, f"{key} stayed {h[key]} < {at_least}: {h}"
        time.sleep(0.05)
    return h


def config(serve: dict[str, Any] | None = None, **traces) -> ServeConfig:
    return ServeConfig(model_uri=URI, request=RequestLimits(min_beta=0.1, max_beta=0.9), max_request_bytes=4096,
                       traces=TraceSettings(**traces), **(serve or {}))


MLFLOW_EXPORTS = {"as served": MLFLOW_TRACE_EXPORT,
                  "mlflow's default": {"MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "true",
                                       "MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE": "5",
                                       "MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS": "10"},
                  "synchronous": {"MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"}}
"""MLflow's own trace export: as ``autotts serve`` sets it up (batched, one thread), MLflow's
default (a store call per 5 spans, 10 threads), or synchronous (in the writer's thread)."""


def mlflow_export(monkeypatch, mode: str) -> None:
    import mlflow

    for name, value in MLFLOW_EXPORTS[mode].items():
        monkeypatch.setenv(name, value)
    mlflow.tracing.reset()  # the exporter reads the variables when it is built


@pytest.fixture
def registered(mlflow_store, monkeypatch):
    """CMC registered as autotts-controller@champion, loaded as ``autotts serve`` loads it,
    generating on the scripted backend; MLflow exports as ``autotts serve`` sets it up."""
    from mlflow_autotts.cli.serve import load_served
    from mlflow_autotts.tracking.model_registry import register

    reg = register(ControllerSpec("cmc", 0.5), aliases=["champion"], live={"model": "scripted"})
    served = load_served(ServeConfig(model_uri=URI))
    served.model.mode("live")._runner = scripted_runner()
    mlflow_export(monkeypatch, "as served")
    return reg, served


def stored_traces() -> dict[str, Any]:
    """The traces of the experiment, by their response id."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, "no trace experiment was created"
    traces = client.search_traces(locations=[experiment.experiment_id], max_results=100)
    by_id = {root(t).attributes["autotts.response_id"]: t for t in traces}
    assert len(by_id) == len(traces), "two traces share a response id"
    return by_id


def root(trace):
    (span,) = [s for s in trace.data.spans if s.parent_id is None]
    return span


def engine_spans(trace) -> list:
    return sorted((s for s in trace.data.spans if s.parent_id is not None), key=lambda s: s.start_time_ns)


def replayed_actions(served: ServedModel, beta: float, max_tokens: int | None = None) -> list[tuple[str, int]]:
    """The actions of the same episode on a fresh scripted runner."""
    result = scripted_runner().solve(served.model.runner.bind(beta), QUESTION[0]["content"], EpisodeLimits(max_tokens))
    return list(result.episode.actions)


def check_answered(trace, usage: dict[str, Any], content: str, answer: str, beta: float, served: ServedModel,
                   max_tokens: int | None = None) -> None:
    """The trace of an answered request: the root's inputs, outputs and attributes, a span
    per engine call adding up to the usage, an event per action of the episode."""
    r = root(trace)
    assert r.span_type == "AGENT" and r.status.status_code == "OK" and trace.info.state == "OK"
    assert r.inputs["messages"] == QUESTION and r.inputs["max_tokens"] == max_tokens
    out = r.outputs
    assert out["usage"] == usage and out["choices"][0]["message"]["content"] == content
    assert out["autotts"]["answer"] == answer == r.attributes["autotts.answer"]
    assert r.attributes["autotts.controller"] == "cmc" and r.attributes["autotts.beta"] == beta
    assert r.attributes["autotts.cut_short"] == ("max_tokens" if max_tokens else "")

    spans = engine_spans(trace)
    details = usage["completion_tokens_details"]
    assert len(spans) == details["engine_calls"] > 0
    assert {s.span_type for s in spans} == {"LLM"} and all(s.status.status_code == "OK" for s in spans)
    kinds = [s.attributes["autotts.kind"] for s in spans]
    total = {k: sum(s.attributes[f"autotts.{k}"] for s in spans) for k in ("prompt_tokens", "cached_tokens")}
    assert (total["prompt_tokens"], total["cached_tokens"]) == \
        (details["engine_prompt_tokens"], details["cached_prompt_tokens"])
    generated = {kind: sum(s.attributes["autotts.generated_tokens"] for s, k in zip(spans, kinds) if k == kind)
                 for kind in ("generate", "probe")}
    assert (generated["generate"], generated["probe"]) == (details["generated_tokens"], details["probe_tokens"])
    token_usage = {"input_tokens": total["prompt_tokens"], "output_tokens": sum(generated.values()),
                   "total_tokens": total["prompt_tokens"] + sum(generated.values()),
                   "cache_read_input_tokens": total["cached_tokens"]}
    assert trace.info.token_usage == token_usage  # MLflow's own sum of the LLM spans

    events = r.events
    assert [(e.name, e.attributes["branch"]) for e in events] == replayed_actions(served, beta, max_tokens)
    billed = [e.attributes["billed"] for e in events if "billed" in e.attributes]
    assert billed == sorted(billed) and billed[-1] == usage["completion_tokens"]
    # the request's own times: engine calls and actions lie within the root span, in order
    assert r.start_time_ns <= spans[0].start_time_ns and spans[-1].end_time_ns <= r.end_time_ns
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps) and r.start_time_ns <= stamps[0] and stamps[-1] <= r.end_time_ns


def test_every_request_is_one_trace_linked_to_the_served_version(registered):
    import mlflow
    import openai
    from mlflow import MlflowClient

    reg, served = registered
    with Uvicorn(build_app(served, config())) as server:
        client = client_of(server)
        plain = client.chat.completions.create(model=MODEL, messages=QUESTION)
        low = client.chat.completions.create(model=MODEL, messages=QUESTION, extra_body={"beta": 0.2})
        capped = client.chat.completions.create(model=MODEL, messages=QUESTION, max_completion_tokens=30)
        chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True,
                                                     stream_options={"include_usage": True}))
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL, messages=QUESTION, extra_body={"beta": 0.95})
        live = served.model.mode("live")
        cfg = live._runner.config
        live._runner = LiveRunner(cfg, backend=FailAfter(LENGTHS, base_seed=cfg.seed, interval=4, ok_calls=12),
                                  prompts=char_prompts(cfg.probe_suffix))
        with pytest.raises(openai.InternalServerError) as down:
            client.chat.completions.create(model=MODEL, messages=QUESTION)
        h = wait_for(server, "traces_written", 6)
        assert (h["traces_failed"], h["traces_dropped"], h["traces_queued"], h["tracing"]) == (0, 0, 0, True)
    traces = stored_traces()
    assert len(traces) == 6

    for done, beta, cap in ((plain, 0.5, None), (low, 0.2, None), (capped, 0.5, 30)):
        check_answered(traces[done.id], done.usage.model_dump(exclude_none=True), done.choices[0].message.content,
                       done.model_extra["autotts"]["answer"], beta, served, cap)
    assert root(traces[capped.id]).outputs["choices"][0]["finish_reason"] == "length"
    streamed = traces[chunks[0].id]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check_answered(streamed, chunks[-1].usage.model_dump(exclude_none=True), content,
                   chunks[-2].model_extra["autotts"]["answer"], 0.5, served)
    assert root(streamed).attributes["autotts.stream"] is True and content == plain.choices[0].message.content

    # refused before it parsed: the error, no episode
    (refused,) = [t for t in traces.values() if root(t).attributes["autotts.status"] == 400]
    r = root(refused)
    assert refused.info.state == "ERROR" and r.inputs is None and not engine_spans(refused) and not r.events
    assert r.outputs["error"]["param"] == "beta" and r.attributes["autotts.error_code"] == "invalid_request_error"
    # failed mid-episode: the 503 it was answered with, and the engine calls up to the one that failed
    (failed,) = [t for t in traces.values() if root(t).attributes["autotts.status"] == 503]
    r, spans = root(failed), engine_spans(failed)
    assert failed.info.state == "ERROR" and r.outputs["error"]["code"] == "backend_unavailable"
    assert r.outputs["error"]["message"] == down.value.body["message"] and r.inputs["messages"] == QUESTION
    assert len(spans) == 13 and [s.status.status_code for s in spans] == ["OK"] * 12 + ["ERROR"]
    assert spans[-1].attributes["autotts.error"] == "scripted backend went down" and r.events

    # linked to the served version: its logged model (MLflow's own link) and its registry name
    model_id = reg.model_id
    assert MlflowClient().get_model_version(reg.name, reg.version).source == f"models:/{model_id}"
    for t in traces.values():
        meta = t.info.trace_metadata
        assert meta["mlflow.modelId"] == model_id and meta["autotts.model_uri"] == URI
        assert (meta["autotts.registered_model"], meta["autotts.model_version"]) == (reg.name, str(reg.version))
        assert meta["autotts.controller"] == "cmc" and len(meta["autotts.model_sha256"]) == 64
    experiment = MlflowClient().get_experiment_by_name(EXPERIMENT).experiment_id
    linked = mlflow.search_traces(locations=[experiment], model_id=model_id, return_type="list", max_results=100)
    assert sorted(t.info.trace_id for t in linked) == sorted(t.info.trace_id for t in traces.values())


def test_a_request_whose_client_went_away_or_that_found_the_server_full_is_traced(registered):
    import openai

    reg, served = registered
    with Uvicorn(build_app(served, config({"max_concurrent_requests": 1, "max_queued_requests": 0}))) as server:
        backend = gated(served)
        with pytest.raises(requests.exceptions.Timeout):
            requests.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": QUESTION},
                          timeout=0.5)
        wait_cancelled(server, 1)
        backend.gate.set()  # the engine call in flight returns; the episode stops before the next
        wait_for(server, "traces_written", 1)
        backend.gate.clear()
        stream = client_of(server).chat.completions.create(model=MODEL, messages=QUESTION, stream=True)
        next(iter(stream))
        with pytest.raises(openai.RateLimitError):  # the one worker is taken
            client_of(server).chat.completions.create(model=MODEL, messages=QUESTION, extra_body={"beta": 0.3})
        stream.close()
        wait_cancelled(server, 2)
        backend.gate.set()
        wait_for(server, "traces_written", 3)
    traces = stored_traces()
    (full,) = [t for t in traces.values() if root(t).attributes["autotts.status"] == 429]
    r = root(full)
    assert full.info.state == "ERROR" and r.outputs["error"]["code"] == "server_full"
    assert r.inputs["messages"] == QUESTION and r.inputs["beta"] == 0.3 and not engine_spans(full)
    traces = [t for t in traces.values() if t is not full]
    assert len(traces) == 2
    for t in traces:
        r = root(t)
        assert r.attributes["autotts.client_gone"] is True and r.attributes["autotts.cut_short"] == "cancelled"
        assert t.info.state == "OK" and r.outputs["autotts"]["answer"] is None and r.inputs["messages"] == QUESTION
        (call,) = engine_spans(t)  # the one call in flight when the client went away
        assert call.attributes["autotts.kind"] == "generate" and call.attributes["autotts.generated_tokens"] > 0
        assert not r.events  # the action it served was stopped before it revealed anything
    assert {root(t).attributes["autotts.stream"] for t in traces} == {True, False}


@pytest.mark.parametrize("mode", ["as served", "mlflow's default", "synchronous"])
def test_the_last_traces_are_written_before_the_server_exits_whatever_mlflows_export(registered, monkeypatch,
                                                                                     mode):
    reg, served = registered
    mlflow_export(monkeypatch, mode)
    with Uvicorn(build_app(served, config())) as server:
        client = client_of(server)
        ids = [client.chat.completions.create(model=MODEL, messages=QUESTION).id for _ in range(3)]
    assert sorted(stored_traces()) == sorted(ids)  # the server stopped right after the answers


def test_tracing_off_writes_nothing(registered):
    from mlflow import MlflowClient

    reg, served = registered
    with Uvicorn(build_app(served, config(tracing=False))) as server:
        client_of(server).chat.completions.create(model=MODEL, messages=QUESTION)
        h = health(server)
    assert h["tracing"] is False and h["traces_written"] == h["traces_dropped"] == 0
    assert MlflowClient().get_experiment_by_name(EXPERIMENT) is None


@pytest.mark.parametrize("values, words", [
    ({"trace_queue": "0"}, "trace_queue must be >= 1, got 0"),
    ({"trace_flush_seconds": "-1"}, "trace_flush_seconds must be >= 0"),
    ({"trace_flush_seconds": "601"}, "trace_flush_seconds must be <= 600"),
    ({"trace_experiment": "  "}, "trace_experiment is empty"),
    ({"trace_idle_wait": "-1"}, "trace_idle_wait must be >= 0"),
])
def test_bad_trace_settings_are_refused_naming_the_setting(values, words):
    with pytest.raises(AutoTTSError, match=words):
        autotts_settings.build(ServeConfig, None, {"model_uri": "m", **values})


# ----------------------------------------------------------------------------- hostile stores
def unregistered_served() -> ServedModel:
    """CMC set up from its config (no store needed), on the scripted backend."""
    from mlflow.models import Model

    from mlflow_autotts.tracking.model import model_signature

    cfg, source = model_config_for(ControllerSpec("cmc", 0.5))
    served = ServedModel.from_config(dict(cfg, live={"model": "scripted"}), source.path,
                                     Model(signature=model_signature(0.5)), (MODEL,), {"model_uri": URI})
    served.model.mode("live")._runner = scripted_runner()
    return served


@pytest.fixture
def tracking_at(monkeypatch):
    """Point this process's tracking URI at a given address, one HTTP attempt, 5 s timeout."""
    import mlflow

    def point(url: str) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        mlflow.set_tracking_uri(url)

    yield point
    mlflow.set_tracking_uri(None)


def store_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == TRACING_LOG and "tracking store" in r.getMessage()]


def test_a_store_that_never_answers_slows_no_request_and_a_full_queue_drops_and_counts(tracking_at, caplog):
    caplog.set_level(logging.WARNING, logger=TRACING_LOG)
    with socket.create_server(("127.0.0.1", 0), backlog=16) as black_hole:  # connects, never answers
        tracking_at(f"http://127.0.0.1:{black_hole.getsockname()[1]}")
        served = unregistered_served()
        with Uvicorn(build_app(served, config(trace_queue=1, trace_flush_seconds=0.2))) as server:
            client = client_of(server)
            client.chat.completions.create(model=MODEL, messages=QUESTION)  # warm up: the runner, the client
            wait_for(server, "traces_writing", 1)  # the warm-up's trace: the writer is stuck on the store
            t0 = time.monotonic()
            first = client.chat.completions.create(model=MODEL, messages=QUESTION)
            took = time.monotonic() - t0
            h = health(server)
            # the answer did not wait for the writer, still stuck on the warm-up's trace
            assert first.choices[0].message.content and took < 2.5, took
            assert (h["traces_writing"], h["traces_written"], h["traces_failed"]) == (1, 0, 0), h
            assert h["traces_queued"] == 1  # the first's trace waits: the queue holds one
            for _ in range(3):  # the queue is full: these traces are dropped, the requests answered
                t0 = time.monotonic()
                assert client.chat.completions.create(model=MODEL, messages=QUESTION).choices[0].message.content
                assert time.monotonic() - t0 < 2.5
            h = health(server)
            assert h["traces_dropped"] == 3 and h["traces_written"] == 0
            h = wait_for(server, "traces_failed", 1, seconds=20)  # the store's timeout (5 s) ends the wait
            assert h["traces_written"] == 0
    full = [r.getMessage() for r in caplog.records if r.name == TRACING_LOG and "queue is full" in r.getMessage()]
    assert len(full) == 1 and "(1 requests wait" in full[0]
    (warning,) = store_warnings(caplog)  # once, however many failed
    assert "requests are still answered" in warning and "1 so far" in warning
    summary = [r.getMessage() for r in caplog.records if r.name == TRACING_LOG and "at shutdown" in r.getMessage()]
    assert len(summary) == 1 and "failed 1, dropped 3" in summary[0] and "1 being written" in summary[0]


def test_a_store_that_refuses_connections_is_reported_once_and_requests_are_answered(tracking_at, caplog):
    caplog.set_level(logging.WARNING, logger=TRACING_LOG)
    tracking_at(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    served = unregistered_served()
    with Uvicorn(build_app(served, config())) as server:
        client = client_of(server)
        answers = [client.chat.completions.create(model=MODEL, messages=QUESTION) for _ in range(3)]
        assert all(a.choices[0].message.content and a.usage.completion_tokens for a in answers)
        h = wait_for(server, "traces_failed", 3)
        assert (h["traces_written"], h["traces_dropped"], h["traces_queued"], h["traces_writing"]) == (0, 0, 0, 0)
    (warning,) = store_warnings(caplog)
    assert "Connection refused" in warning or "connect" in warning.lower()


def test_the_request_path_never_waits_for_the_writer():
    """A writer thread held inside a write (as by a store that hangs) leaves ``submit``
    immediate: records beyond the queue are dropped and counted, in order of arrival."""
    from mlflow_autotts.serving.endpoint.tracing import RequestRecord, TraceWriter

    class Held(TraceWriter):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.release, self.holding = threading.Event(), threading.Event()
            self.batches: list[list[str]] = []

        def _write(self, batch):
            self.holding.set()
            assert self.release.wait(20)
            self.batches.append([r.response_id for r in batch])
            return len(batch), []

    writer = Held(TraceSettings(trace_queue=2), {})
    writer.submit(RequestRecord("r0", 0.0, 1.0))
    assert writer.holding.wait(10)
    t0 = time.monotonic()
    for k in range(1, 6):
        writer.submit(RequestRecord(f"r{k}", 0.0, 1.0))
    assert time.monotonic() - t0 < 0.1
    assert writer.counts() == {"tracing": True, "traces_written": 0, "traces_failed": 0, "traces_dropped": 3,
                               "traces_queued": 2, "traces_writing": 1}
    writer.release.set()
    writer.close(10)
    assert writer.batches == [["r0"], ["r1", "r2"]] and writer.counts()["traces_written"] == 3
    writer.submit(RequestRecord("late", 0.0, 1.0))  # after close: dropped, counted
    assert writer.counts()["traces_dropped"] == 4


def test_traces_wait_for_a_moment_with_no_request_in_flight_but_not_longer_than_trace_idle_wait():
    """While requests run, finished ones' traces wait (their writing would take CPU from the
    running ones): written as soon as none is in flight, after ``trace_idle_wait`` however busy
    the server stays, and at once when the queue is half full or the server shuts down."""
    from mlflow_autotts.serving.endpoint.tracing import RequestRecord, TraceWriter

    class Recorded(TraceWriter):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.times: dict[str, float] = {}

        def _write(self, batch):
            self.times.update({r.response_id: time.monotonic() for r in batch})
            return len(batch), []

    def written(w: Recorded, ids: set[str], timeout: float) -> float:
        t0 = time.monotonic()
        while not ids <= set(w.times):
            assert time.monotonic() - t0 < timeout, f"{ids - set(w.times)} not written within {timeout} s"
            time.sleep(0.02)
        return max(w.times[i] for i in ids)

    busy = threading.Event()
    busy.set()
    writer = Recorded(TraceSettings(trace_queue=8, trace_idle_wait=60), {}, busy=busy.is_set)
    queued = time.monotonic()
    writer.submit(RequestRecord("a", 0.0, 1.0))
    time.sleep(1.0)
    assert writer.times == {} and writer.counts()["traces_queued"] == 1  # held while a request runs
    busy.clear()
    assert written(writer, {"a"}, 5) - queued < 1.0 + 0.5  # idle: written within a poll
    busy.set()
    for k in range(4):  # 4 of 8: half full, written at once although busy
        writer.submit(RequestRecord(f"h{k}", 0.0, 1.0))
    assert written(writer, {f"h{k}" for k in range(4)}, 5) - queued < 1.0 + 1.0
    writer.submit(RequestRecord("closing", 0.0, 1.0))
    t0 = time.monotonic()
    writer.close(10)  # shutting down: written although busy
    assert "closing" in writer.times and time.monotonic() - t0 < 1.0

    patient = Recorded(TraceSettings(trace_idle_wait=1.0), {}, busy=lambda: True)
    queued = time.monotonic()
    patient.submit(RequestRecord("b", 0.0, 1.0))
    waited = written(patient, {"b"}, 5) - queued
    assert 1.0 <= waited < 1.6  # busy all along: written after trace_idle_wait
    patient.close(5)


def test_an_action_that_revealed_nothing_is_an_event_at_the_time_of_the_next():
    """The observer hears of actions that revealed something; asking a finished branch again
    (free) still is an action of the episode, so it is an event too, timed by the next one."""
    from mlflow_autotts.serving.endpoint.tracing import action_events

    class AskAgain:
        def solve(self, ep):
            answer, i, finished = ep.probe_new()
            while not finished:
                answer, finished = ep.probe_more(i)
            ep.probe_more(i)  # finished already: the same answer again, nothing revealed
            return ep.get_new_branch_final_answer()

    marks = []
    result = scripted_runner().solve(AskAgain(), "What is 1+1?",
                                     observer=lambda ep, p: marks.append((time.time(), len(ep.actions), p)))
    events = action_events(result.episode.actions, marks, time.time())
    assert [(e.action, e.branch) for e in events] == result.episode.actions
    assert [e.action for e in events[-2:]] == ["probe_more", "read"] and len(marks) == len(events) - 1
    free, last = events[-2:]
    assert free.progress is None and free.time == last.time and last.progress.action == "read"
    assert all(e.progress is not None and e.progress.branch == e.branch for e in events if e is not free)
