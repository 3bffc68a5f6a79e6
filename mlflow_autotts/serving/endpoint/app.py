"""The routes of ``autotts serve`` on FastAPI (what MLflow's own scoring server is built on).

``ServedModel`` is a checked controller model ready to answer: the installed
``ControllerModel`` set up from the model's ``model_config`` and source (so the built-in and
API-key checks of ``setup`` apply; the folder's digest is checked by whoever fetched it,
``tracking.resolve.fetch_model`` in ``autotts serve``), its ``MLmodel`` metadata (the
signature ``/invocations`` enforces) and what ``/v1/models`` shows. ``build_app`` composes
the endpoint:

- ``GET /health`` (and ``/ping``, as ``mlflow models serve``): 200 once the model is loaded,
  with whether the live backend has started;
- ``GET /v1/models``: the served ids (``protocol.models_list``);
- ``POST /v1/chat/completions``: ``protocol.parse_chat_request`` → ``ServedModel.answer``
  (one live episode in a worker thread, within the request's token cap and deadline: when
  either stops it, the answer is the vote so far) → ``protocol.chat_response``, or with
  ``stream: true`` server-sent ``chat.completion.chunk`` events: a first one before the
  episode starts, one per controller action (the episode's observer, handed from the worker
  thread to the event loop), the answer, the finish and usage (``protocol.stream_chunks``);
  every error in OpenAI's shape (400 malformed or too long, 404 unknown model or route, 429
  full, 500 the controller failed, 503 backend down or too slow; after a stream started, an
  ``{"error": …}`` event);
- ``POST /v1/responses``: OpenAI's Responses API over the same episode
  (``responses.parse_responses_request`` → the same ``ChatRequest`` → ``ServedModel.answer``
  → ``responses.response_body``, or with ``stream: true`` the Responses events of
  ``responses.ResponseEvents``: the progress as a reasoning item's summary, then the message);
  errors as above, after a stream started an ``error`` event and ``response.failed``;
- ``POST /invocations``: MLflow's own ``scoring_server.invocations`` on a ``PyFuncModel`` of
  the same ``ControllerModel``: exactly the request and response contract of
  ``mlflow models serve``.

Concurrency: episodes run in a pool of ``max_concurrent_requests`` threads (not the event
loop's default executor, which MLflow's server uses and which holds min(32, cores + 4)
threads); up to ``max_queued_requests`` more wait for a thread; one more is a 429. A request
stays admitted until its worker has finished (not until its response is sent).

Both OpenAI routes share the machinery (``answered``: run the episode, or stop it when the
client goes away; ``streamed``: admission, the observer's queue, cancel on disconnect); a route
only says what its stream sends at each point (a ``StreamWriter``: ``ChatStream``,
``ResponsesStream``).

Disconnects: a client that goes away (a stream closed, or a plain request given up) sets its
episode's cancel event; the engine call in flight is aborted (the backends watch the event:
vLLM's server aborts a request whose connection closes, the in-process engine aborts its
request ids), the episode raises ``EpisodeStopped``, the worker returns and its admission is
released. A sandboxed controller's child is killed when its episode stops (it was waiting for
the reply to its call), so its slot is free again.

Backends that fail: a server that dies or hangs mid-request is noticed by its connections or
by its health checks while calls wait (``live/backends/openai_server.py``), within seconds: a
503. With several servers (``replica_urls``) an episode's failed call moves to another server
(``live/backends/replicas.py``) and the request is answered.

Traces: each request of the OpenAI routes (answered, failed, refused, cut short or abandoned) is
one MLflow trace, linked to the served version; the route only records (``tracing.RequestTrace``)
and one background thread writes (``tracing.TraceWriter``; ``/health`` counts them).

No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations
(``Request``, imported inside ``build_app`` to keep imports lazy) when they are defined.

Not offered: "pruned" as its own progress event (the controller API has no prune action: a
controller prunes by not advancing a branch), so a stream says which branches were left
unfinished only at the end.
"""

import asyncio
import json
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

from mlflow.exceptions import MlflowException

from mlflow_autotts.errors import AutoTTSError, BackendError, safe_text
from mlflow_autotts.live.config import LiveConfigError
from mlflow_autotts.live.episode import EpisodeLimits, Observer, QuestionTooLong
from mlflow_autotts.live.prompts import ConversationRefused
from mlflow_autotts.serving.endpoint.config import ServeConfig
from mlflow_autotts.serving.endpoint.protocol import (
    ApiError,
    ChatRequest,
    EpisodeOutcome,
    chat_response,
    chunk,
    decode_body,
    end_text,
    error_body,
    models_list,
    outcome_of,
    parse_chat_request,
    progress_text,
    start_text,
    stream_chunks,
)
from mlflow_autotts.serving.endpoint.responses import (
    ResponseEvents,
    for_responses,
    parse_responses_request,
    response_body,
    sse_event,
)
from mlflow_autotts.serving.endpoint.tracing import RequestTrace, TraceWriter
from mlflow_autotts.serving.pyfunc import ControllerModel
from mlflow_autotts.serving.runners import ControllerFailed


SANDBOX_GRACE_SECONDS = 5.0
"""How long after its episode's end a sandboxed solve is stopped (see ``ServedModel.answer``)."""


def unavailable(message: str, code: str = "backend_unavailable") -> ApiError:
    return ApiError(503, message, "server_error", code)


@dataclass
class ServedModel:
    """A controller model set up by the installed package, with what the routes show of it."""

    model: ControllerModel
    metadata: Any
    """Its ``mlflow.models.Model`` (``MLmodel``): the signature ``/invocations`` enforces."""
    model_ids: tuple[str, ...]
    """The ids a request may name in ``model``; the first is the one ``/v1/models`` lists."""
    info: dict[str, Any] = field(default_factory=dict)
    """What ``/v1/models`` says about it (URI, registered name and version, digest, controller)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source_path: str | Path | None, metadata: Any,
                    model_ids: tuple[str, ...], info: Mapping[str, Any] | None = None) -> "ServedModel":
        """Set up a ``ControllerModel`` from a checked model's config and source."""
        model = ControllerModel()
        model.setup(config, source_path)  # refuses a false built-in and a disallowed API-key variable
        runner = model.runner
        shown = {"controller": runner.label, "beta": runner.default_beta, **(info or {})}
        return cls(model, metadata, tuple(dict.fromkeys(model_ids)), shown)

    @property
    def default_beta(self) -> float:
        return self.model.runner.default_beta

    def live_runner(self):
        """The live mode's generation runner, started on first use (503 when it cannot start)."""
        try:
            return self.model.mode("live").runner()
        except KeyError:
            raise unavailable("this model has no live mode") from None
        except MlflowException as exc:
            raise unavailable(exc.message) from None

    def live_started(self) -> bool:
        try:
            return getattr(self.model.mode("live"), "_runner", None) is not None
        except KeyError:
            return False

    def servers_down(self) -> dict[str, str]:
        """The generation servers out of rotation now, with why (several servers only)."""
        if not self.live_started():
            return {}
        down = getattr(self.model.mode("live")._runner.backend, "down", None)
        return down() if callable(down) else {}

    def answer(self, chat: ChatRequest, received: float | None = None, cancelled: threading.Event | None = None,
               observer: Observer | None = None, on_result: Any = None) -> EpisodeOutcome:
        """Solve ``chat``'s conversation in one live episode at its β, within its token cap and its
        deadline (counted from ``received``, ``time.monotonic()``; default now), until
        ``cancelled`` is set (blocking: a worker thread). ``observer`` sees each action;
        ``on_result`` the ``LiveResult`` (for the stream's last line)."""
        runner = self.live_runner()
        start = time.monotonic() if received is None else received
        deadline = None if chat.deadline_s is None else start + chat.deadline_s
        # a sandboxed solve ends a little after the episode's own end (the request's deadline,
        # else the question's overall_timeout), so that the episode's stop, answered by the
        # vote, comes first; the grace only bounds a child that computes without acting
        solve_ends = (deadline or start + runner.config.overall_timeout) + SANDBOX_GRACE_SECONDS
        controller = self.model.runner.bind(self.default_beta if chat.beta is None else chat.beta, solve_ends)
        limits = EpisodeLimits(chat.max_tokens, deadline, cancelled)
        try:
            result = runner.solve(controller, chat.messages, limits, observer)
        except QuestionTooLong as exc:
            raise ApiError(400, str(exc), "invalid_request_error", "context_length_exceeded", "messages") from None
        except ConversationRefused as exc:  # the model's chat template cannot render it as given
            raise ApiError(400, str(exc), "invalid_request_error", "invalid_conversation", "messages") from None
        except ControllerFailed as exc:
            raise ApiError(500, safe_text(exc), "server_error", "controller_failed") from None
        except BackendError as exc:  # down, too slow or refusing: not the caller's fault
            raise unavailable(f"the live backend failed: {safe_text(exc)}") from None
        except LiveConfigError as exc:  # the served model's settings: the operator's to mend
            raise unavailable(f"the live backend is misconfigured: {exc}", "backend_misconfigured") from None
        if on_result is not None:
            on_result(result)
        return outcome_of(result, runner.prompts.decode, controller.label, controller.beta)

    def pyfunc(self) -> Any:
        """A ``PyFuncModel`` of the same ``ControllerModel``, for MLflow's ``invocations``."""
        from mlflow.pyfunc import PyFuncModel
        from mlflow.pyfunc.model import _PythonModelPyfuncWrapper

        signature = getattr(self.metadata, "signature", None)
        return PyFuncModel(model_meta=self.metadata, model_impl=_PythonModelPyfuncWrapper(self.model, None, signature))


class Admission:
    """At most ``limit`` requests admitted at once (running or waiting for a worker); the
    event loop is the only caller, so a plain counter is enough."""

    def __init__(self, limit: int):
        self.limit = limit
        self.admitted = 0

    def admit(self) -> None:
        if self.admitted >= self.limit:
            raise ApiError(429, f"the server is full ({self.limit} requests running or queued); retry later",
                           "rate_limit_error", "server_full")
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1

    def __enter__(self) -> "Admission":
        self.admit()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def sse(data: Any) -> str:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"
"""The chat stream's last line."""


class StreamWriter(Protocol):
    """What a route's stream sends at each point of an episode, as server-sent event text."""

    def opening(self, start: str) -> list[str]:
        """Before the episode starts; ``start`` says what runs (``protocol.start_text``)."""

    def progress(self, line: str) -> list[str]:
        """After each controller action (``protocol.progress_text``)."""

    def closing(self, outcome: EpisodeOutcome, end: str) -> list[str]:
        """The answer; ``end`` says why the episode ended (``protocol.end_text``)."""

    def failure(self, err: ApiError) -> list[str]:
        """The episode failed after the stream started."""


class ChatStream:
    """``/v1/chat/completions``' stream: ``chat.completion.chunk`` events, then ``[DONE]``."""

    def __init__(self, chat: ChatRequest, response_id: str, created: int):
        self.chat, self.response_id, self.created = chat, response_id, created

    def _chunk(self, delta: Mapping[str, Any]) -> str:
        return sse(chunk(self.chat, self.response_id, self.created, delta))

    def opening(self, start: str) -> list[str]:
        return [self._chunk({"role": "assistant", "content": "", "reasoning_content": start})]

    def progress(self, line: str) -> list[str]:
        return [self._chunk({"reasoning_content": line})]

    def closing(self, outcome: EpisodeOutcome, end: str) -> list[str]:
        return [self._chunk({"reasoning_content": end}),
                *map(sse, stream_chunks(self.chat, outcome, self.response_id, self.created)), DONE]

    def failure(self, err: ApiError) -> list[str]:
        return [sse(error_body(err)), DONE]


class ResponsesStream:
    """``/v1/responses``' stream: ``responses.ResponseEvents``, each a named event."""

    def __init__(self, events: ResponseEvents):
        self.events = events

    def opening(self, start: str) -> list[str]:
        return [sse_event(e) for e in self.events.opening(start)]

    def progress(self, line: str) -> list[str]:
        return [sse_event(e) for e in self.events.progress(line)]

    def closing(self, outcome: EpisodeOutcome, end: str) -> list[str]:
        return [sse_event(e) for e in self.events.closing(outcome, end)]

    def failure(self, err: ApiError) -> list[str]:
        return [sse_event(e) for e in self.events.failure(err)]


async def disconnected(request: Any) -> None:
    """Return once the client of ``request`` (its body already read) has gone away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def read_body(request: Any, max_bytes: int) -> bytes:
    """The request body, read no further than ``max_bytes`` + 1 (a larger one is a 400)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(400, f"request body is {int(declared):,} bytes; this server accepts at most {max_bytes:,}",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        chunks.append(chunk)
        if size > max_bytes:
            break
    return b"".join(chunks)


def build_app(served: ServedModel, config: ServeConfig) -> Any:
    """The FastAPI application of the endpoint (see the module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from mlflow.pyfunc import scoring_server
    from starlette.exceptions import HTTPException

    limits = config.request
    if not limits.min_beta <= served.default_beta <= limits.max_beta:
        raise AutoTTSError(f"serve: the model's own beta ({served.default_beta:g}) is outside "
                           f"[min_beta, max_beta] = [{limits.min_beta:g}, {limits.max_beta:g}]")
    pool = ThreadPoolExecutor(config.max_concurrent_requests, thread_name_prefix="autotts-serve")
    admission = Admission(config.max_concurrent_requests + config.max_queued_requests)
    pyfunc = served.pyfunc()
    input_schema = pyfunc.metadata.get_input_schema()
    created = int(time.time())
    traces = TraceWriter(config.traces, served.info, getattr(served.metadata, "model_id", None),
                         busy=lambda: admission.admitted > 0)

    @asynccontextmanager
    async def lifespan(app: Any):
        yield
        pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(traces.close)  # queued traces get trace_flush_seconds

    app = FastAPI(title="autotts controller endpoint", lifespan=lifespan, docs_url=None, redoc_url=None)

    def failed(err: ApiError) -> JSONResponse:
        return JSONResponse(error_body(err), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else None
        return failed(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                               "invalid_request_error", kind))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # a failure no route expected: still OpenAI's shape (uvicorn logs the traceback)
        return failed(ApiError(500, f"the server failed: {safe_text(exc)}", "server_error", "internal_error"))

    def start(fn: Any, *args: Any) -> "asyncio.Future[Any]":
        """Run ``fn(*args)`` in the pool, admitted until the worker has finished (429 when full)."""
        admission.admit()
        loop = asyncio.get_running_loop()
        try:
            work: Future = pool.submit(fn, *args)
        except BaseException:
            admission.release()
            raise

        def finished(_: Future) -> None:
            try:
                loop.call_soon_threadsafe(admission.release)
            except RuntimeError:  # the loop is closed: the server is gone
                pass

        work.add_done_callback(finished)
        return asyncio.wrap_future(work)

    gone_clients = [0]  # requests whose client went away before their answer (event loop only)

    async def run(fn: Any, *args: Any) -> Any:
        return await start(fn, *args)

    @app.get("/ping")  # as mlflow models serve, for load balancers set up for it
    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "model": served.model_ids[0], "live_backend_started":
                             served.live_started(), "backend_servers_down": served.servers_down(),
                             "requests_admitted": admission.admitted,
                             "requests_cancelled": gone_clients[0], **traces.counts()})

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        info = {**served.info, "beta_range": [limits.min_beta, limits.max_beta]}
        return JSONResponse(models_list(served.model_ids[:1], created, info))

    async def answered(request: Request, chat: ChatRequest, received: float,
                       trace: RequestTrace) -> EpisodeOutcome | None:
        """The outcome of ``chat``'s episode (admitted, or 429); None when the client went away
        first (its episode is told to stop; nobody reads an answer)."""
        cancelled = threading.Event()
        work = start(trace.run, served.answer, chat, received, cancelled)
        gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not work.done():
            cancelled.set()
            gone_clients[0] += 1
            return None
        return work.result()

    def streamed(chat: ChatRequest, received: float, writer: StreamWriter, trace: RequestTrace) -> StreamingResponse:
        """The episode as ``writer``'s events: its opening before the episode starts, a line
        per action (the episode's observer, handed from the worker thread to the event loop),
        its closing or its failure. Admitted (or 429) before the response starts; a client
        that goes away (the stream cancelled) stops the episode."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()
        cancelled = threading.Event()
        ended: dict[str, Any] = {}

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: the server is gone
                pass

        def observe(episode: Any, progress: Any) -> None:  # in the worker thread, between actions
            put(progress_text(episode, progress))

        def on_result(result: Any) -> None:
            ep = result.episode
            ended["left_open"] = sum(1 for b in ep.branches[: ep.branches_opened] if not b.done)

        def work() -> EpisodeOutcome:
            try:
                return trace.run(served.answer, chat, received, cancelled, observe, on_result)
            finally:
                put(done)

        beta = served.default_beta if chat.beta is None else chat.beta
        future = start(work)

        async def events():
            try:
                for text in writer.opening(start_text(chat, served.info["controller"], beta)):
                    yield text
                while (item := await queue.get()) is not done:
                    for text in writer.progress(item):
                        yield text
                try:
                    outcome = await future
                except Exception as exc:  # the response has started: an error event, as OpenAI sends
                    err = exc if isinstance(exc, ApiError) else ApiError(
                        500, f"the server failed: {safe_text(exc)}", "server_error", "internal_error")
                    for text in writer.failure(err):
                        yield text
                    if not isinstance(exc, ApiError):
                        raise
                    return
                for text in writer.closing(outcome, end_text(outcome, ended.get("left_open", 0))):
                    yield text
            finally:  # also when the client went away (the stream is cancelled): stop the episode
                if not future.done():
                    cancelled.set()
                    gone_clients[0] += 1

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def body_of(request: Request) -> Any:
        return decode_body(await read_body(request, config.max_request_bytes), config.max_request_bytes)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        received = time.monotonic()
        trace = traces.request(f"chatcmpl-{uuid.uuid4().hex}")
        try:
            chat = trace.parsed(parse_chat_request(await body_of(request), limits, served.model_ids))
            if chat.stream:
                return streamed(chat, received, ChatStream(chat, trace.response_id, int(time.time())), trace)
            outcome = await answered(request, chat, received, trace)
        except ApiError as err:
            trace.refused(err)  # a no-op once its episode ran: that recorded it
            return failed(err)
        if outcome is None:
            return Response(status_code=499)
        return JSONResponse(chat_response(chat, outcome, trace.response_id, int(time.time())))

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        received = time.monotonic()
        trace = traces.request(f"resp_{uuid.uuid4().hex}", route="responses")
        try:
            req = parse_responses_request(await body_of(request), limits, served.model_ids)
            trace.parsed(req.chat)
            if req.chat.stream:
                events = ResponseEvents(req, trace.response_id, int(time.time()), f"rs_{uuid.uuid4().hex}",
                                        f"msg_{uuid.uuid4().hex}")
                return streamed(req.chat, received, ResponsesStream(events), trace)
            outcome = await answered(request, req.chat, received, trace)
        except ApiError as err:
            trace.refused(err)
            return failed(for_responses(err))
        if outcome is None:
            return Response(status_code=499)
        return JSONResponse(response_body(req, outcome, trace.response_id, int(time.time()), f"msg_{uuid.uuid4().hex}"))

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        # mlflow models serve's handler, with this server's pool and admission
        try:
            data = await read_body(request, config.max_invocations_bytes)
            if len(data) > config.max_invocations_bytes:
                raise ApiError(400, f"request body exceeds {config.max_invocations_bytes:,} bytes",
                               code="request_too_large")
            result = await run(scoring_server.invocations, data, request.headers.get("content-type") or "",
                               pyfunc, input_schema)
        except ApiError as err:
            return failed(err)
        except MlflowException as exc:
            return Response(exc.serialize_as_json(), status_code=exc.get_http_status_code(),
                            media_type="application/json")
        return Response(result.response, status_code=result.status, media_type=result.mimetype)

    return app


def serve(app: Any, config: ServeConfig) -> None:
    """Run ``app`` on uvicorn at ``config.host:config.port`` until interrupted."""
    import uvicorn

    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, timeout_graceful_shutdown=5)


__all__ = ["Admission", "ServedModel", "build_app", "serve"]
