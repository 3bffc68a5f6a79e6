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
  (one live episode in a worker thread) → ``protocol.chat_response``; every error in OpenAI's
  shape (400 malformed or too long, 404 unknown model or route, 429 full, 500 the controller
  failed, 503 backend down or too slow);
- ``POST /invocations``: MLflow's own ``scoring_server.invocations`` on a ``PyFuncModel`` of
  the same ``ControllerModel``: exactly the request and response contract of
  ``mlflow models serve``.

Concurrency: episodes run in a pool of ``max_concurrent_requests`` threads (not the event
loop's default executor, which MLflow's server uses and which holds min(32, cores + 4)
threads); up to ``max_queued_requests`` more wait for a thread; one more is a 429.

No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations
(``Request``, imported inside ``build_app`` to keep imports lazy) when they are defined.

Missing, for the next steps (the routes are written so each slots in here):

- streaming (``stream: true``): needs the episode to report its progress (branch opened,
  probed, pruned; leader and votes) through a callback the route turns into server-sent
  events; and a disconnect to end the episode, which needs the episode to be cancellable
  between engine calls (and the backend to abort its in-flight requests);
- per-request token caps and deadlines: the episode has no cap on billed tokens; a cap
  needs ``LiveEpisode`` to refuse further steps and the answer to be the vote so far;
- ``/v1/responses`` (MLflow's Responses types);
- backend health checks while requests wait (503 within seconds of a backend dying, not
  after ``request_timeout``), several base URLs with failover (``collect/endpoints.py``);
- one MLflow trace per request, written off the request path.
"""

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mlflow.exceptions import MlflowException

from mlflow_autotts.errors import AutoTTSError, BackendError, safe_text
from mlflow_autotts.live.config import LiveConfigError
from mlflow_autotts.live.episode import QuestionTooLong
from mlflow_autotts.serving.endpoint.config import ServeConfig
from mlflow_autotts.serving.endpoint.protocol import (
    ApiError,
    ChatRequest,
    EpisodeOutcome,
    RequestLimits,
    chat_response,
    decode_body,
    error_body,
    models_list,
    outcome_of,
    parse_chat_request,
)
from mlflow_autotts.serving.pyfunc import ControllerModel
from mlflow_autotts.serving.runners import ControllerFailed


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

    def answer(self, chat: ChatRequest) -> EpisodeOutcome:
        """Solve ``chat``'s question in one live episode at its β (blocking: a worker thread)."""
        runner = self.live_runner()
        controller = self.model.runner.bind(self.default_beta if chat.beta is None else chat.beta)
        try:
            result = runner.solve(controller, chat.question)
        except QuestionTooLong as exc:
            raise ApiError(400, str(exc), "invalid_request_error", "context_length_exceeded", "messages") from None
        except ControllerFailed as exc:
            raise ApiError(500, safe_text(exc), "server_error", "controller_failed") from None
        except BackendError as exc:  # down, too slow or refusing: not the caller's fault
            raise unavailable(f"the live backend failed: {safe_text(exc)}") from None
        except LiveConfigError as exc:  # the served model's settings: the operator's to mend
            raise unavailable(f"the live backend is misconfigured: {exc}", "backend_misconfigured") from None
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

    def __enter__(self) -> "Admission":
        if self.admitted >= self.limit:
            raise ApiError(429, f"the server is full ({self.limit} requests running or queued); retry later",
                           "rate_limit_error", "server_full")
        self.admitted += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.admitted -= 1


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
    from fastapi.responses import JSONResponse, Response
    from mlflow.pyfunc import scoring_server
    from starlette.exceptions import HTTPException

    if not config.min_beta <= served.default_beta <= config.max_beta:
        raise AutoTTSError(f"serve: the model's own beta ({served.default_beta:g}) is outside "
                           f"[min_beta, max_beta] = [{config.min_beta:g}, {config.max_beta:g}]")
    limits = RequestLimits(served.model_ids, config.min_beta, config.max_beta, config.max_question_chars)
    pool = ThreadPoolExecutor(config.max_concurrent_requests, thread_name_prefix="autotts-serve")
    admission = Admission(config.max_concurrent_requests + config.max_queued_requests)
    pyfunc = served.pyfunc()
    input_schema = pyfunc.metadata.get_input_schema()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: Any):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="autotts controller endpoint", lifespan=lifespan, docs_url=None, redoc_url=None)

    def failed(err: ApiError) -> JSONResponse:
        return JSONResponse(error_body(err), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else None
        return failed(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                               "invalid_request_error", kind))

    async def run(fn: Any, *args: Any) -> Any:
        with admission:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @app.get("/ping")  # as mlflow models serve, for load balancers set up for it
    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "model": served.model_ids[0], "live_backend_started":
                             served.live_started(), "requests_admitted": admission.admitted})

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        info = {**served.info, "beta_range": [config.min_beta, config.max_beta]}
        return JSONResponse(models_list(served.model_ids[:1], created, info))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        try:
            body = decode_body(await read_body(request, config.max_request_bytes), config.max_request_bytes)
            chat = parse_chat_request(body, limits)
            outcome = await run(served.answer, chat)
        except ApiError as err:
            return failed(err)
        return JSONResponse(chat_response(chat, outcome, f"chatcmpl-{uuid.uuid4().hex}", int(time.time())))

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
