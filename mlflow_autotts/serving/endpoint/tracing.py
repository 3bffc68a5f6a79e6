"""One MLflow trace per request of ``autotts serve``, written off the request path.

A request only *records*: ``RequestTrace`` (one per request, made by the route) wraps the
observer and result callbacks of ``ServedModel.answer`` to note the time of each controller
action, and when the episode ends (answered, failed, cut short or abandoned by its client)
or the request is refused before it ran (400, 404, 429) it hands one immutable
``RequestRecord`` to the ``TraceWriter``: the request, its response id, the outcome, the
episode's engine calls and timestamped actions, the error. Handing over is a bounded,
non-blocking append: when ``trace_queue`` records wait already, the record is dropped and
counted, so a slow or dead tracking store never holds up an answer.

One background thread turns records into traces with MLflow's tracing API, after the fact
and with the request's own timestamps (``mlflow.start_span_no_context(start_time_ns=…)``,
``span.end(end_time_ns=…)``): a root span (type ``AGENT``) whose inputs are the conversation
and the request's β, token cap and deadline, whose outputs are the ``chat.completion`` the
request answered (content, usage, the ``autotts`` extension), with the controller, β,
``cut_short`` and the response id as attributes and one span event per controller action
(name the action; attributes its branch and, when it revealed something, step, answer,
finished and the bill after it); under it one ``LLM`` span per engine call, at the time it
ran, with its kind, branches, token counts and error, and its tokens as MLflow's
``mlflow.chat.tokenUsage`` (so the trace's token usage is the engine's; the billed tokens are
in the root's outputs).

The link to what was served is the trace's metadata (immutable): ``mlflow.modelId`` (the
logged model of the served version, from its digest-checked ``MLmodel``), which is how
MLflow 3 ties traces to a ``LoggedModel`` (``mlflow.search_traces(model_id=…)``, the
model's Traces tab), and ``autotts.model_uri``, ``autotts.registered_model``,
``autotts.model_version``, ``autotts.model_sha256``, ``autotts.controller``.

Traces go to ``trace_experiment`` (created when missing) of the process's tracking store
(``MLFLOW_TRACKING_URI``). "Written" means found in the store afterwards: MLflow's exporter
logs and swallows a store's refusal, so after each batch the writer flushes MLflow's own
async export queue (``mlflow.flush_trace_async_logging``) and reads each trace's info back.

What a trace costs is MLflow's export: on a CPU machine whose cores vLLM keeps busy, every
CPU second of it is taken from generation. ``autotts serve`` sets ``MLFLOW_TRACE_EXPORT``
(unless the user set those variables): asynchronous, spans batched up to 2,048 and one export
thread, so that a batch of records is written in a few store calls when the writer flushes.
Measured on 64 traces of 13 spans to sqlite: 30 ms of CPU per trace, against 70 ms with
MLflow's default (a store call per 5 spans, 10 threads) and 200 ms synchronous (a call per
span). This module itself leaves MLflow's process-wide settings alone. And the writer waits
for a moment with no request in flight (``trace_idle_wait``, at most 30 s by default, or until
the queue is half full): a burst's traces are written after it, not during its last requests
(on 64 concurrent questions on the demo model, writing them during the burst made its wall
time 6.4% longer than the same episodes run directly; ``benchmarks/README.md``).

A store that is down or refuses costs the writer thread its time, never a request: records
pile up to ``trace_queue`` and are then dropped; the first failure and the first drop are
each logged once, the counts are in ``/health`` (``traces_written``, ``traces_failed``,
``traces_dropped``, ``traces_queued``, ``traces_writing``) and in a last line at shutdown,
where queued traces get ``trace_flush_seconds`` to be written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow_autotts.errors import AutoTTSError, safe_text
from mlflow_autotts.live.episode import EngineCall, Progress
from mlflow_autotts.serving.endpoint.protocol import ApiError, ChatRequest, EpisodeOutcome, chat_response, error_body
from mlflow_autotts.settings import bounded, check_bounds

_log = logging.getLogger(__name__)

BATCH = 64
"""Records written between two flushes of MLflow's export queue."""
IDLE_POLL_SECONDS = 0.25
"""How often a writer holding records asks whether the server is idle."""
MLFLOW_TRACE_EXPORT = {"MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "true",
                       "MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE": "2048",
                       "MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS": "1"}
"""MLflow's trace export as ``autotts serve`` sets it up (module doc): its variables, read when
MLflow builds its exporter."""
ROUTE = "chat.completions"
"""The root span's name for ``/v1/chat/completions``."""


@dataclass(frozen=True)
class TraceSettings:
    """How ``autotts serve`` records its requests as MLflow traces: a part of ``ServeConfig``
    (its fields are ``autotts serve`` options), declared here where the writer reads them."""

    tracing: bool = True
    """Write one MLflow trace per chat-completions request (answered, failed, cut short or
    abandoned) to the tracking store of the serving process (``MLFLOW_TRACKING_URI``), from a
    background thread."""
    trace_experiment: str = "autotts-serve"
    """The experiment the traces go to; created when missing."""
    trace_queue: int = bounded(256, ge=1, le=100_000)
    """Finished requests waiting for the writer (each holds its conversation and answer text);
    when that many wait, a request's trace is dropped (counted in ``/health`` as
    ``traces_dropped``), never waited for."""
    trace_flush_seconds: float = bounded(10.0, ge=0.0, le=600.0)
    """At shutdown, how long queued traces may take to be written; the rest are dropped."""
    trace_idle_wait: float = bounded(30.0, ge=0.0, le=3600.0)
    """Seconds a finished request's trace may wait for a moment with no request in flight
    before it is written anyway (a queue half full is written at once; 0: always at once).
    Writing costs about 30 ms of CPU per trace, which, on a machine whose cores generation
    keeps busy, the requests still running would pay."""

    def __post_init__(self) -> None:
        check_bounds(self, bad=lambda name, why: AutoTTSError(f"serve config: {name} {why}"))
        if not self.trace_experiment.strip():
            raise AutoTTSError("serve config: trace_experiment is empty: name the experiment traces go to")


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ActionEvent:
    """One controller action, when it happened."""

    action: str
    """``probe_new``, ``probe_more`` or ``read``."""
    branch: int
    time: float
    """``time.time()`` after it (for an action the observer was not told of, a finished
    branch asked again, the time of the next one it was told of)."""
    progress: Progress | None = None
    """What it revealed, as the observer saw it; None for an action it was not told of."""


@dataclass(frozen=True)
class RequestRecord:
    """What one request's trace shows: immutable, built on the request path from what the
    request holds anyway, written later by the writer's thread."""

    response_id: str
    received: float
    """``time.time()`` when the request arrived."""
    ended: float
    """``time.time()`` when its episode ended or it was refused."""
    chat: ChatRequest | None = None
    """The parsed request; None when it was refused before it parsed."""
    outcome: EpisodeOutcome | None = None
    started: float | None = None
    """``time.time()`` when its episode started (after waiting for a worker)."""
    calls: tuple[EngineCall, ...] = ()
    actions: tuple[ActionEvent, ...] = ()
    error: ApiError | None = None
    """What the request was answered with when it failed."""
    client_gone: bool = False
    """Its client went away before the answer (the episode was told to stop)."""
    route: str = ROUTE


def action_events(actions: Sequence[tuple[str, int]], marks: Sequence[tuple[float, int, Progress]],
                  end: float) -> tuple[ActionEvent, ...]:
    """The episode's ``actions`` with times: ``marks`` are (time, number of actions then,
    progress) from the observer, which is told of each action that revealed something."""
    seen = {n: (t, p) for t, n, p in marks}
    out: list[ActionEvent] = []
    for k in range(len(actions), 0, -1):  # backwards: an unobserved action takes the next one's time
        action, branch = actions[k - 1]
        t, progress = seen.get(k, (out[-1].time if out else end, None))
        out.append(ActionEvent(action, branch, t, progress))
    return tuple(reversed(out))


def api_error(exc: BaseException) -> ApiError:
    """The error a request failing with ``exc`` was answered with (as the routes answer it)."""
    if isinstance(exc, ApiError):
        return exc
    return ApiError(500, f"the server failed: {safe_text(exc)}", "server_error", "internal_error")


class RequestTrace:
    """One request's recording, made by its route: ``parsed`` notes the request, ``run``
    wraps the episode (in the worker thread) and hands its record over when it ends,
    ``refused`` hands over a request answered with an error before any episode ran. The
    first of ``run`` and ``refused`` to start owns the request's one record."""

    def __init__(self, writer: TraceWriter, response_id: str, route: str = ROUTE):
        self.response_id = response_id
        self.route = route
        self._writer = writer
        self._received = time.time()
        self._chat: ChatRequest | None = None
        self._lock = threading.Lock()
        self._claimed = False

    def _claim(self) -> bool:
        with self._lock:
            claimed, self._claimed = self._claimed, True
            return not claimed

    def parsed(self, chat: ChatRequest) -> ChatRequest:
        """Note the parsed request (shown if it is refused later, e.g. 429) and return it."""
        self._chat = chat
        return chat

    def run(self, answer: Callable[..., EpisodeOutcome], chat: ChatRequest, received: float | None,
            cancelled: threading.Event | None, observer: Any = None, on_result: Any = None) -> EpisodeOutcome:
        """``answer(chat, received, cancelled, observer, on_result)`` (``ServedModel.answer``),
        recorded: each action's time through the observer, the episode through ``on_result``."""
        self._chat = chat
        if not self._claim() or not self._writer.enabled:
            return answer(chat, received, cancelled, observer, on_result)
        started = time.time()
        marks: list[tuple[float, int, Progress]] = []
        seen: dict[str, Any] = {}

        def observe(episode: Any, progress: Progress) -> None:
            marks.append((time.time(), len(episode.actions), progress))
            seen["episode"] = episode
            if observer is not None:
                observer(episode, progress)

        def result(res: Any) -> None:
            seen["episode"] = res.episode
            if on_result is not None:
                on_result(res)

        outcome: EpisodeOutcome | None = None
        error: ApiError | None = None
        try:
            outcome = answer(chat, received, cancelled, observe, result)
            return outcome
        except BaseException as exc:
            error = api_error(exc)
            raise
        finally:
            ended = time.time()
            episode = seen.get("episode")  # None when it failed before its first action
            self._writer.submit(RequestRecord(
                self.response_id, self._received, ended, chat, outcome, started,
                tuple(episode.calls) if episode is not None else (),
                action_events(episode.actions, marks, ended) if episode is not None else (),
                error, cancelled is not None and cancelled.is_set(), self.route))

    def refused(self, err: ApiError) -> None:
        """Record a request answered with ``err`` before any episode ran (no-op after ``run``)."""
        if self._writer.enabled and self._claim():
            self._writer.submit(RequestRecord(self.response_id, self._received, time.time(), self._chat,
                                              error=err, route=self.route))


# ----------------------------------------------------------------------------- the writer
def link_metadata(info: Mapping[str, Any], model_id: str | None) -> dict[str, str]:
    """The trace metadata naming what was served (``ServedModel.info``; ``model_id``: the
    served version's logged model)."""
    keys = {"model_uri": "autotts.model_uri", "registered_name": "autotts.registered_model",
            "version": "autotts.model_version", "model_sha256": "autotts.model_sha256",
            "controller": "autotts.controller"}
    out = {key: str(info[name]) for name, key in keys.items() if info.get(name) is not None}
    if model_id:
        out["mlflow.modelId"] = model_id
    return out


class TraceWriter:
    """Writes ``RequestRecord``s as MLflow traces from one background thread (started with
    the first record), through a queue of at most ``settings.trace_queue`` records, when no
    request is in flight (``busy()`` false) or a record has waited ``trace_idle_wait``; see
    the module docstring."""

    def __init__(self, settings: TraceSettings, info: Mapping[str, Any], model_id: str | None = None,
                 busy: Callable[[], bool] = lambda: False):
        self.settings = settings
        self.metadata = link_metadata(info, model_id)
        self._busy = busy
        self._pending: deque[RequestRecord] = deque()
        self._queued_at: deque[float] = deque()
        """``time.monotonic()`` when each pending record was queued."""
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._writing = 0
        self._experiment_id: str | None = None
        self.written = self.failed = self.dropped = 0
        self._warned: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.settings.tracing

    def request(self, response_id: str, route: str = ROUTE) -> RequestTrace:
        """The recording of a request answered as ``response_id``."""
        return RequestTrace(self, response_id, route)

    def submit(self, record: RequestRecord) -> None:
        """Queue ``record`` for writing, or drop and count it when the queue is full or the
        writer closed; never blocks beyond a lock held for an append."""
        if not self.enabled:
            return
        with self._cond:
            if self._closing or len(self._pending) >= self.settings.trace_queue:
                self.dropped += 1
                full = not self._closing
            else:
                self._pending.append(record)
                self._queued_at.append(time.monotonic())
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="autotts-traces", daemon=True)
                    self._thread.start()
                self._cond.notify()
                return
        if full:
            self._warn_once("full", f"autotts serve: the trace queue is full ({self.settings.trace_queue} requests "
                                    "wait to be written): traces are dropped, requests are still answered; counts "
                                    "in /health")

    def counts(self) -> dict[str, Any]:
        """What ``/health`` shows of the traces."""
        with self._cond:
            return {"tracing": self.enabled, "traces_written": self.written, "traces_failed": self.failed,
                    "traces_dropped": self.dropped, "traces_queued": len(self._pending),
                    "traces_writing": self._writing}

    def close(self, timeout: float | None = None) -> None:
        """Stop taking records; wait up to ``timeout`` (default ``trace_flush_seconds``) for the
        queued ones to be written, drop (and count) the rest, and log what was lost."""
        wait = self.settings.trace_flush_seconds if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._pending or self._writing) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            left_over = len(self._pending)
            self.dropped += left_over
            self._pending.clear()
            self._queued_at.clear()
            in_flight = self._writing
            counts = (self.written, self.failed, self.dropped)
        if counts[1] or counts[2] or in_flight:
            _log.warning("autotts serve: traces written %d, failed %d, dropped %d (%d still queued after %gs at "
                         "shutdown)%s", *counts, left_over, wait,
                         f"; {in_flight} being written" if in_flight else "")

    # ------------------------------------------------------------------ the thread
    def _hold(self) -> float:
        """Seconds the pending records may still wait for the server to be idle (0: write
        now); called with the lock held."""
        if self._closing or len(self._pending) * 2 >= self.settings.trace_queue or not self._busy():
            return 0.0
        return self._queued_at[0] + self.settings.trace_idle_wait - time.monotonic()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:
                        return
                    hold = self._hold()
                    if hold <= 0:
                        break
                    self._cond.wait(min(hold, IDLE_POLL_SECONDS))  # busy() is asked again after
                batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
                for _ in batch:
                    self._queued_at.popleft()
                self._writing = len(batch)
            try:
                written, failures = self._write(batch)
            except Exception as exc:  # noqa: BLE001  (whatever MLflow raises, the thread lives on)
                written, failures = 0, [exc] * len(batch)
            with self._cond:
                self.written += written
                self.failed += len(failures)
                self._writing = 0
                self._cond.notify_all()
            if failures:
                self._warn_once("store", f"autotts serve: the tracking store did not take a request's trace "
                                         f"({safe_text(failures[0], 300)}); requests are still answered, their traces "
                                         f"are dropped ({self.failed} so far; counts in /health)")

    def _warn_once(self, kind: str, message: str) -> None:
        with self._cond:
            first = kind not in self._warned
            self._warned.add(kind)
        if first:
            _log.warning(message)

    def _write(self, batch: list[RequestRecord]) -> tuple[int, list[BaseException | str]]:
        """Write ``batch``; the number found in the store after, and why each other one failed."""
        import mlflow
        from mlflow.tracing.client import TracingClient

        try:
            experiment_id = self._experiment()
        except Exception as exc:  # noqa: BLE001  (a store down or refusing: every record fails)
            return 0, [exc] * len(batch)
        failures: list[BaseException | str] = []
        ids: list[str] = []
        for record in batch:
            try:
                trace_id = emit(record, experiment_id, self.metadata)
            except Exception as exc:  # noqa: BLE001
                failures.append(exc)
                continue
            if trace_id is None:
                failures.append("MLflow tracing is disabled or the trace was sampled out")
            else:
                ids.append(trace_id)
        mlflow.flush_trace_async_logging()  # MLflow's own export queue, if it has one
        client = TracingClient()
        written = 0
        for trace_id in ids:
            try:  # MLflow's exporter logs a store's refusal and goes on: read the trace back
                client.get_trace_info(trace_id)
                written += 1
            except Exception as exc:  # noqa: BLE001
                failures.append(exc)
        return written, failures

    def _experiment(self) -> str:
        """The id of ``trace_experiment``, created when missing (once found, kept)."""
        if self._experiment_id is None:
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException

            name = self.settings.trace_experiment
            client = MlflowClient()
            found = client.get_experiment_by_name(name)
            if found is None:
                try:
                    self._experiment_id = client.create_experiment(name)
                except MlflowException:  # another server created it meanwhile
                    found = client.get_experiment_by_name(name)
                    if found is None:
                        raise
            if found is not None:
                if found.lifecycle_stage != "active":
                    raise AutoTTSError(f"the trace experiment {name!r} is deleted: restore it or set trace_experiment")
                self._experiment_id = found.experiment_id
        return self._experiment_id


# ----------------------------------------------------------------------------- one trace
def _ns(t: float) -> int:
    return int(t * 1e9)


def _inputs(chat: ChatRequest) -> dict[str, Any]:
    return {"model": chat.model, "messages": [{"role": m.role, "content": m.content} for m in chat.messages],
            "beta": chat.beta, "max_tokens": chat.max_tokens, "deadline_s": chat.deadline_s, "stream": chat.stream}


def _root_attributes(record: RequestRecord) -> dict[str, Any]:
    o, chat, err = record.outcome, record.chat, record.error
    attrs: dict[str, Any] = {"autotts.response_id": record.response_id, "autotts.route": record.route,
                             "autotts.status": 200 if err is None else err.status,
                             "autotts.client_gone": record.client_gone}
    if o is not None:
        attrs.update({"autotts.controller": o.controller, "autotts.beta": o.beta,
                      "autotts.cut_short": o.cut_short or "", "autotts.answer": o.answer or ""})
    elif chat is not None and chat.beta is not None:
        attrs["autotts.beta"] = chat.beta
    if chat is not None:
        attrs["autotts.stream"] = chat.stream
    if record.started is not None:
        attrs["autotts.queued_seconds"] = round(record.started - record.received, 6)
    if err is not None:
        attrs["autotts.error_code"] = err.code or err.type
    return attrs


def _event(a: ActionEvent) -> Any:
    from mlflow.entities import SpanEvent

    attrs: dict[str, Any] = {"branch": a.branch}
    if a.progress is not None:
        p = a.progress
        attrs.update({"step": p.step, "answer": p.answer, "finished": p.finished, "billed": p.billed})
    return SpanEvent(a.action, _ns(a.time), attrs)


def _call_attributes(call: EngineCall) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "autotts.kind": call.kind, "autotts.branches": list(call.branches), "autotts.prompt_tokens": call.prompt_tokens,
        "autotts.cached_tokens": call.cached_tokens, "autotts.generated_tokens": call.generated_tokens,
        "mlflow.chat.tokenUsage": {"input_tokens": call.prompt_tokens, "output_tokens": call.generated_tokens,
                                   "total_tokens": call.prompt_tokens + call.generated_tokens,
                                   "cache_read_input_tokens": call.cached_tokens}}
    if call.error is not None:
        attrs["autotts.error"] = call.error
    return attrs


def emit(record: RequestRecord, experiment_id: str, metadata: Mapping[str, str]) -> str | None:
    """Write ``record`` as one MLflow trace in ``experiment_id`` (its times its own); its
    trace id, or None when MLflow gave a no-op span (tracing disabled or sampled out)."""
    from mlflow import start_span_no_context
    from mlflow.entities import SpanStatus, SpanStatusCode, SpanType
    from mlflow.entities.span import NO_OP_SPAN_TRACE_ID

    chat, err = record.chat, record.error
    root = start_span_no_context(record.route, SpanType.AGENT, inputs=_inputs(chat) if chat is not None else None,
                                 attributes=_root_attributes(record), metadata=dict(metadata),
                                 experiment_id=experiment_id, start_time_ns=_ns(record.received))
    if root.trace_id == NO_OP_SPAN_TRACE_ID:
        return None
    try:
        for call in record.calls:
            span = start_span_no_context(f"engine.{call.kind}", SpanType.LLM, parent_span=root,
                                         inputs={"branches": list(call.branches)}, attributes=_call_attributes(call),
                                         start_time_ns=_ns(call.started))
            status = SpanStatus(SpanStatusCode.ERROR, call.error) if call.error is not None else None
            span.end(outputs={"generated_tokens": call.generated_tokens}, status=status,
                     end_time_ns=_ns(call.started + call.seconds))
        for action in record.actions:
            root.add_event(_event(action))
    finally:  # a root left open would stay in MLflow's in-memory trace manager
        outputs = None
        if chat is not None and record.outcome is not None:
            outputs = chat_response(chat, record.outcome, record.response_id, int(record.received))
        elif err is not None:
            outputs = error_body(err)
        status = None if err is None else SpanStatus(
            SpanStatusCode.ERROR, f"{err.status} {err.code or err.type}: {safe_text(err.message, 300)}")
        root.end(outputs=outputs, status=status, end_time_ns=_ns(max(record.ended, record.received)))
    return root.trace_id


__all__ = ["MLFLOW_TRACE_EXPORT", "ActionEvent", "RequestRecord", "RequestTrace", "TraceSettings", "TraceWriter",
           "action_events", "emit", "link_metadata"]
