"""The gatekeeper's webhook receiver: check, journal, answer, then decide in the background.

``Receiver.receive`` is the whole HTTP contract, without HTTP (``build_app`` puts it on
FastAPI, what MLflow's own servers are built on, and ``serve`` on uvicorn):

1. ``webhooks.verify``: unsigned, wrongly signed or stale deliveries are 401, malformed
   signed ones 400 (MLflow retries neither);
2. events other than an alias of the watched model and aliases are 200 ``ignored``;
3. ``Journal.accept``, committed before answering: a new delivery is 202 ``accepted`` and
   queued, one seen before (MLflow's retry, a replay) is 200 ``duplicate`` and not queued
   again; a journal that cannot be written is 503, so MLflow retries later.

The decision is the caller's ``decide(entry) -> Outcome`` (``tracking/gatekeeper.py``, the
registry side), run in ``Lanes``: one thread per registered model, so one model's events are
decided one at a time in arrival order while another model's proceed. A decision that
raises leaves its delivery pending (with the error) for the next start; ``resume`` queues
every pending delivery, oldest first, before new ones are received. The threads are
daemons: stopping the service never waits for a gate, whose delivery stays pending.

No ``from __future__ import annotations``: FastAPI reads the route annotations. No MLflow.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from mlflow_autotts.errors import first_line, safe_text
from mlflow_autotts.promotion.journal import Entry, Journal, JournalError, Outcome
from mlflow_autotts.promotion.webhooks import AliasChange, WebhookRefused, alias_change, verify
from mlflow_autotts.settings import bounded, check_bounds

log = logging.getLogger("mlflow_autotts.gatekeeper")
WEBHOOK_PATH = "/webhook"
"""Where the receiver takes deliveries (the URL ``autotts gatekeeper install`` gives MLflow ends in it)."""


@dataclass(frozen=True)
class ReceiverConfig:
    """How the gatekeeper listens: a part of its settings (flat options)."""

    host: str = "127.0.0.1"
    """Address to listen on (the MLflow server must reach it)."""
    port: int = bounded(5077, ge=0, le=65535)
    """Port to listen on."""
    max_delivery_age: float = bounded(300.0, gt=0)
    """Seconds a delivery's signed timestamp may lie in the past (or future); older ones are
    refused as stale. MLflow retries a delivery for up to ~2 minutes with its first timestamp."""
    max_body_bytes: int = bounded(65_536, ge=1024)
    """Largest delivery body accepted (MLflow's alias events are ~200 bytes)."""
    log_level: str = bounded("info", choices=("critical", "error", "warning", "info", "debug"))
    """Log level of the receiver and uvicorn."""

    def __post_init__(self) -> None:
        check_bounds(self)


class Lanes:
    """One daemon thread per key, running that key's items in the order submitted."""

    def __init__(self, work: Callable[[Entry], None]):
        self._work = work
        self._queues: dict[str, "queue.SimpleQueue[Entry]"] = {}
        self._lock = threading.Lock()
        self.busy: dict[str, str] = {}
        """Key -> the delivery id being decided now."""

    def submit(self, key: str, entry: Entry) -> None:
        with self._lock:
            lane = self._queues.get(key)
            if lane is None:
                lane = self._queues[key] = queue.SimpleQueue()
                threading.Thread(target=self._drain, args=(key, lane), name=f"gatekeeper-{key}"[:60],
                                 daemon=True).start()
        lane.put(entry)

    def queued(self) -> int:
        return sum(q.qsize() for q in self._queues.values())

    def _drain(self, key: str, lane: "queue.SimpleQueue[Entry]") -> None:
        while True:
            entry = lane.get()
            self.busy[key] = entry.id
            try:
                self._work(entry)
            finally:
                self.busy.pop(key, None)


class Receiver:
    """Deliveries in (``receive``), decisions out (``decide``, in ``Lanes``); see the module docstring."""

    def __init__(self, secret: str, journal: Journal, decide: Callable[[Entry], Outcome],
                 watches: Callable[[AliasChange], bool], max_age: float, clock: Callable[[], float] = time.time):
        self.secret = secret
        self.journal = journal
        self.decide = decide
        self.watches = watches
        self.max_age = max_age
        self.clock = clock
        self.lanes = Lanes(self._run)

    def receive(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of the answer to one delivery."""
        try:
            delivery = verify(headers, body, self.secret, self.clock(), self.max_age)
            change = alias_change(delivery)
        except WebhookRefused as exc:
            log.warning("refused: %s", safe_text(exc.reason, 300))
            return exc.status, {"error": exc.reason}
        if change is None or not self.watches(change):
            what = delivery.event if change is None else f"@{change.alias} on {change.name} v{change.version}"
            return 200, {"status": "ignored", "delivery": delivery.id, "reason": f"not watched: {what}"}
        try:
            entry, new = self.journal.accept(delivery.id, change, delivery.timestamp, self.clock())
        except JournalError as exc:
            log.error("cannot journal delivery %s: %s", delivery.id, exc)
            return 503, {"error": f"the gatekeeper cannot record deliveries now: {exc}"}
        if not new:
            return 200, {"status": "duplicate", "delivery": entry.id, "state": entry.state, "decision": entry.decision}
        log.info("accepted %s: @%s -> %s v%s", entry.id, change.alias, change.name, change.version)
        self.lanes.submit(change.name, entry)
        return 202, {"status": "accepted", "delivery": entry.id}

    def resume(self) -> int:
        """Queue every pending delivery, oldest first; returns how many."""
        pending = self.journal.pending()
        for entry in pending:
            log.info("resuming %s: @%s -> %s v%s (attempt %d)", entry.id, entry.alias, entry.name, entry.version,
                     entry.attempts + 1)
            self.lanes.submit(entry.name, entry)
        return len(pending)

    def health(self) -> dict[str, Any]:
        counts = self.journal.counts()
        return {"status": "ok", "pending": counts.get("pending", 0), "decided": counts.get("decided", 0),
                "deciding": dict(self.lanes.busy), "queued": self.lanes.queued()}

    def _run(self, entry: Entry) -> None:
        try:
            self.journal.begin(entry.id)
            current = self.journal.get(entry.id)
            if current is None or current.state != "pending":
                return
            outcome = self.decide(current)
            self.journal.finish(entry.id, outcome, self.clock())
        except Exception as exc:  # noqa: BLE001  (the delivery stays pending, with why)
            log.exception("deciding %s failed; it stays pending until the next start", entry.id)
            try:
                self.journal.failed(entry.id, f"{type(exc).__name__}: {first_line(exc)}")
            except JournalError:
                pass
            return
        log.info("decided %s: %s%s: %s", entry.id, outcome.decision,
                 f" v{outcome.subject}" if outcome.subject else "", safe_text(outcome.reason, 500))


async def read_body(request: Any, max_bytes: int) -> bytes | None:
    """The request body, or None past ``max_bytes`` (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(receiver: Receiver, config: ReceiverConfig) -> Any:
    """The FastAPI application: ``POST /webhook`` (``Receiver.receive``) and ``GET /health``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="autotts gatekeeper", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(WEBHOOK_PATH)
    async def webhook(request: Request) -> JSONResponse:
        body = await read_body(request, config.max_body_bytes)
        if body is None:
            return JSONResponse({"error": f"delivery body over {config.max_body_bytes:,} bytes"}, 413)
        status, payload = receiver.receive(request.headers, body)
        return JSONResponse(payload, status)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(receiver.health())

    return app


def serve(app: Any, config: ReceiverConfig) -> None:
    """Run ``app`` on uvicorn at ``config.host:config.port`` until interrupted."""
    import uvicorn

    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, timeout_graceful_shutdown=5)


__all__ = ["Lanes", "Receiver", "ReceiverConfig", "WEBHOOK_PATH", "build_app", "read_body", "serve"]
