"""An OpenAI-compatible completions server behind the backend interface.

In practice vLLM's own server (``python -m vllm.entrypoints.openai.api_server``). Prompts
go as token ids and ``return_token_ids`` brings the generated ids back, so a branch
continues exactly where it stopped and the server's prefix cache reuses it. The
completions API takes one seed per request, and identical prompts with one seed give
identical samples, so every branch is its own request; all requests of a batch are sent at
once (``asyncio`` on one event-loop thread shared by every caller) and the server batches
them. Retries and timeouts are the ``openai`` client's own; a timed-out or cancelled batch
(the caller's ``cancel`` event, polled every 0.1 s) is cancelled on the loop, which closes
its connections, and vLLM then aborts those requests.

A server that dies mid-batch is noticed by its connections (refused or reset) within the
client's retries; one that hangs (stopped, swapping, an engine stuck) keeps them open. So
while a batch waits, the server's ``/health`` is asked every ``health_interval`` seconds
(one check shared by every waiting batch): no answer within ``health_timeout`` seconds (generous:
a CPU server deep in a large batch answers slowly, and a false alarm fails every request), or
a 5xx, fails every waiting batch with ``BackendUnavailable`` (serving answers 503), instead
of letting them wait out ``request_timeout``. Any other answer (404 from a server without
``/health``) counts as alive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Sequence
from typing import Any

from mlflow_autotts.live.backends.base import (
    GenerationBackend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationCancelled,
    GenerationRequest,
)

POLL_SECONDS = 0.1
"""How often a waiting caller looks at its ``cancel`` event."""


class OpenAIServerBackend(GenerationBackend):
    """A completions endpoint (``base_url`` ends in ``/v1``) serving ``model``."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 300.0,
                 max_retries: int = 2, health_interval: float = 5.0, health_timeout: float = 10.0):
        # openai is imported here, with the backend, so importing live/ stays light
        import openai

        self.base_url = base_url.rstrip("/")
        self.model = model
        self._openai = openai
        self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key or "EMPTY",
                                          timeout=timeout, max_retries=max_retries)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"openai:{self.base_url}", daemon=True)
        self._thread.start()
        self._closed = False
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self._health: asyncio.Future | None = None  # the check in flight or last done (loop only)
        self._health_at = 0.0
        self._http: Any = None  # an httpx client for /health, made on the loop
        self.in_flight = 0
        """Requests sent and not answered (the least loaded of several servers gets the next batch)."""
        self._context: tuple[int | None] | None = None  # (max_model_len,) once asked
        self._context_lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest], timeout: float | None = None,
                 cancel: threading.Event | None = None) -> list[Generation]:
        if self._closed:
            raise BackendUnavailable(f"{self.base_url}: backend is closed")
        fut = asyncio.run_coroutine_threadsafe(self._batch(requests), self._loop)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = POLL_SECONDS if deadline is None else min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0))
            try:
                return fut.result(wait)
            except concurrent.futures.TimeoutError:
                pass
            if cancel is not None and cancel.is_set():
                fut.cancel()  # closes the batch's connections: vLLM aborts its requests
                raise GenerationCancelled(f"{self.base_url}: {len(requests)} request(s) aborted: the caller cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                fut.cancel()
                raise BackendUnavailable(
                    f"{self.base_url}: no answer to {len(requests)} request(s) within {timeout:.1f} s")

    async def _batch(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """The batch's requests at once, failed early when the server stops answering its
        health checks (the module docstring)."""
        self.in_flight += len(requests)
        work = asyncio.ensure_future(self._all(requests))
        watch = asyncio.ensure_future(self._watch())
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                return work.result()
            watch.result()  # raises: the server is down
            raise AssertionError("the health watch ended without a verdict")
        finally:
            self.in_flight -= len(requests)
            for task in (work, watch):
                task.cancel()

    async def _all(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the rest
                tasks = [group.create_task(self._one(r)) for r in requests]
        except* BackendError as eg:
            raise eg.exceptions[0] from None
        return [t.result() for t in tasks]

    async def _watch(self) -> None:
        """Return never; raise ``BackendUnavailable`` once a health check fails."""
        while True:
            await asyncio.sleep(self.health_interval)
            await self._healthy()

    async def _healthy(self) -> None:
        """One ``GET /health`` shared by every batch waiting now (a new one at most every
        ``health_interval`` seconds); ``BackendUnavailable`` when it fails."""
        loop = asyncio.get_running_loop()
        if self._health is None or (self._health.done() and loop.time() - self._health_at >= self.health_interval):
            self._health_at = loop.time()
            self._health = asyncio.ensure_future(self._ask_health())
        await asyncio.shield(self._health)

    async def _ask_health(self) -> None:
        import httpx  # openai's own HTTP client, loaded with it

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.health_timeout)
        url = f"{self._root}/health"
        try:
            resp = await self._http.get(url)
        except httpx.TimeoutException:
            raise BackendUnavailable(f"{self.base_url}: the server stopped answering (GET /health: no answer "
                                     f"within {self.health_timeout:g} s)") from None
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"{self.base_url}: the server is gone (GET /health: {exc or type(exc).__name__})"
                                     ) from None
        if resp.status_code >= 500:
            raise BackendUnavailable(f"{self.base_url}: the server is unhealthy (GET /health: HTTP {resp.status_code})")

    @property
    def _root(self) -> str:
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    async def _one(self, req: GenerationRequest) -> Generation:
        openai = self._openai
        extra: dict[str, Any] = {"return_token_ids": True, "include_stop_str_in_output": True}
        if req.ignore_eos:
            extra["ignore_eos"] = True
        if req.top_logprobs:
            extra["return_tokens_as_token_ids"] = True
        try:
            resp = await self._client.completions.create(
                model=self.model, prompt=list(req.prompt), max_tokens=req.max_tokens, temperature=req.temperature,
                top_p=req.top_p, seed=req.seed, logprobs=req.top_logprobs or None, stop=list(req.stop) or None,
                extra_body=extra)
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            raise BackendUnavailable(f"{self.base_url}: cannot reach the server ({exc})") from None
        except openai.APIStatusError as exc:
            cls = BackendUnavailable if exc.status_code >= 500 or exc.status_code == 429 else BackendError
            raise cls(f"{self.base_url}: HTTP {exc.status_code}: {_message(exc)}") from None
        return _generation(resp, req.top_logprobs, self.base_url)

    def _run(self, coro: Any, timeout: float) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise BackendUnavailable(f"{self.base_url}: no answer within {timeout:.1f} s") from None

    def _model_cards(self, timeout: float) -> list[Any]:
        """The model cards the server lists (``GET /v1/models``)."""
        async def cards() -> list[Any]:
            try:
                return [m async for m in self._client.models.list()]
            except self._openai.APIConnectionError as exc:
                raise BackendUnavailable(f"{self.base_url}: cannot reach the server ({exc})") from None
            except self._openai.APIStatusError as exc:
                raise BackendUnavailable(f"{self.base_url}: GET /models: HTTP {exc.status_code}: {_message(exc)}") from None
        return self._run(cards(), timeout)

    def served_models(self, timeout: float = 30.0) -> list[str]:
        """The model ids the server lists (``GET /v1/models``)."""
        return [m.id for m in self._model_cards(timeout)]

    def context_length(self) -> int | None:
        """The ``max_model_len`` vLLM lists for the model (``GET /v1/models``), asked once;
        None from a server that does not list it."""
        with self._context_lock:
            if self._context is None:
                card = next((m for m in self._model_cards(30.0) if m.id == self.model), None)
                value = (card.model_extra or {}).get("max_model_len") if card is not None else None
                ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
                self._context = (value if ok else None,)
            return self._context[0]

    def check_model(self) -> None:
        served = self.served_models()
        if self.model not in served:
            raise BackendError(f"{self.base_url} does not serve model {self.model!r}; it serves: "
                               f"{', '.join(served) or 'nothing'}")

    def describe(self) -> dict[str, str]:
        """The server's ``/version`` (vLLM's) when it answers one."""
        import httpx  # openai's own HTTP client, loaded with it

        async def version() -> str:
            root = self._root
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    resp = await http.get(f"{root}/version")
                return f"vllm {resp.json()['version']}" if resp.status_code == 200 else "unknown"
            except (httpx.HTTPError, ValueError, KeyError, TypeError):  # not every server has /version
                return "unknown"
        return {"backend": "openai", "engine": self._run(version(), 15.0), "base_url": self.base_url,
                "model": self.model}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async def close_clients() -> None:
            await self._client.close()
            if self._http is not None:
                await self._http.aclose()

        try:
            asyncio.run_coroutine_threadsafe(close_clients(), self._loop).result(10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def _message(exc: Any) -> str:
    """The server's own error message (vLLM puts it in the body), else the exception text."""
    return str(getattr(exc, "message", "") or exc)


def _generation(resp: Any, k: int, where: str) -> Generation:
    choice = resp.choices[0]
    extra = choice.model_extra or {}
    ids = extra.get("token_ids")
    if ids is None:
        raise BackendError(f"{where}: the server returned no token ids (needs vLLM's return_token_ids)")
    logprobs: tuple[tuple[float, ...], ...] = ()
    if k and choice.logprobs is not None and choice.logprobs.top_logprobs:
        logprobs = tuple(tuple(sorted((v for v in (step or {}).values()), reverse=True)[:k])
                         for step in choice.logprobs.top_logprobs)
    usage = resp.usage
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    return Generation(
        token_ids=tuple(ids), text=choice.text or "", finish_reason=choice.finish_reason or "length",
        stopped_by_string=isinstance(extra.get("stop_reason"), str), top_logprobs=logprobs,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        cached_tokens=(getattr(details, "cached_tokens", None) or 0) if details else 0)


__all__ = ["OpenAIServerBackend"]
