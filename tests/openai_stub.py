"""A local OpenAI-compatible chat server with scripted replies, standing in for a hosted LLM.

A real HTTP server (stdlib ``ThreadingHTTPServer``) on a free loopback port, so tests go
through the real ``openai`` client, its retries and ``mlflow.openai.autolog``. It serves
``POST /v1/chat/completions`` (one scripted ``StubReply`` per request, in order) and
``GET /v1/models``, and records every request it receives.

Use the ``openai_stub`` fixture (``from openai_stub import openai_stub``) or
``with OpenAIStub([...]) as stub:``. The canned replies below cover the cases a search
meets: valid code, a syntax error, a forbidden import, hostile code, no code, an infinite
loop that passes the static check (for the sandbox).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable

import pytest


@dataclass(frozen=True)
class StubReply:
    """One scripted answer of the server."""

    content: str | None = ""
    """The assistant message text."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    status: int = 200
    """Non-200 answers with an OpenAI-style error body (5xx and 429 make the client retry)."""
    include_usage: bool = True
    """False leaves ``usage`` out, as some servers do."""


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Header names lowercased."""
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def prompt(self) -> str:
        """All message contents joined: what a test asserts the prompt contained."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


class OpenAIStub:
    """The server; ``base_url`` is ready for ``openai.OpenAI(base_url=..., api_key="test")``."""

    def __init__(self, replies: Iterable[StubReply | str] = (), model: str = "stub-model"):
        self.model = model
        self._replies: list[StubReply] = []
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.push(*replies)

    # ----------------------------------------------------------------- script & records
    def push(self, *replies: StubReply | str) -> None:
        """Append replies to the script (a plain string is a reply with that content)."""
        with self._lock:
            self._replies.extend(r if isinstance(r, StubReply) else StubReply(r) for r in replies)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._replies)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    def _next(self) -> StubReply | None:
        with self._lock:
            return self._replies.pop(0) if self._replies else None

    # ------------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        assert self._server is not None, "stub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "OpenAIStub":
        stub = self

        class Handler(_Handler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> "OpenAIStub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, type_: str = "invalid_request_error") -> None:
        # retry-after-ms keeps the client's retries of 5xx/429 fast in tests
        self._send(status, {"error": {"message": message, "type": type_, "param": None, "code": None}},
                   {"retry-after-ms": "10"})

    def _record(self, body: dict[str, Any]) -> None:
        with self.owner._lock:
            self.owner.requests.append(RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))

    def do_GET(self) -> None:
        self._record({})
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [
                {"id": self.owner.model, "object": "model", "created": 0, "owned_by": "stub"}]})
        else:
            self._error(404, f"no route GET {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._record({})
            self._error(400, "request body is not JSON")
            return
        self._record(body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._error(404, f"no route POST {self.path}")
            return
        if not isinstance(body.get("messages"), list) or not body.get("model"):
            self._error(400, "'model' and a 'messages' list are required")
            return
        if body.get("stream"):
            self._error(400, "the stub does not stream")
            return
        reply = self.owner._next()
        if reply is None:
            self._error(400, "the stub's script of replies is exhausted")
            return
        if reply.status != 200:
            self._error(reply.status, f"scripted error {reply.status}", "server_error")
            return
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply.content},
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }],
        }
        if reply.include_usage:
            payload["usage"] = {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            }
        self._send(200, payload)


@pytest.fixture
def openai_stub():
    """A started ``OpenAIStub`` with an empty script (``push`` replies); stopped afterwards."""
    with OpenAIStub() as stub:
        yield stub


# ------------------------------------------------------------------------ canned replies

def fenced(code: str, before: str = "Idea: a short explanation.", after: str = "") -> str:
    """A reply in the asked-for shape: prose, one ```python block, optional prose."""
    return f"{before}\n\n```python\n{code.strip()}\n```\n{after}".rstrip() + "\n"


VALID_CONTROLLER = '''
from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.controllers.voting import Tally


class AgreementStop(Controller):
    """Read branches whole until the Beta-majority confidence clears a β-dependent bar."""

    name = "agreement_stop"

    def __init__(self, beta: float = 0.5):
        super().__init__(beta)
        self.min_reads = max(2, round(2 + 6 * self.beta))
        self.max_reads = min(64, round(4 + 60 * self.beta))
        self.threshold = 0.80 + 0.19 * self.beta

    def solve(self, episode):
        tally = Tally()
        for _ in range(self.max_reads):
            try:
                tally.add(episode.get_new_branch_final_answer())
            except ValueError:
                break
            if tally.n >= self.min_reads and tally.confidence() > self.threshold:
                break
        return tally.winner
'''

BROKEN_CONTROLLER = '''
from mlflow_autotts.controllers.base import Controller


class Broken(Controller):
    name = "broken"

    def solve(self, episode)
        return episode.get_new_branch_final_answer()
'''

FORBIDDEN_IMPORT_CONTROLLER = '''
import os
from mlflow_autotts.controllers.base import Controller


class Snoop(Controller):
    name = "snoop"

    def solve(self, episode):
        return os.environ.get("GOLD", episode.get_new_branch_final_answer())
'''

HOSTILE_CONTROLLER = '''
from mlflow_autotts.controllers.base import Controller


class Peek(Controller):
    name = "peek"

    def solve(self, episode):
        with open("/etc/passwd") as f:
            f.read()
        return episode._final[0]
'''

LOOPING_CONTROLLER = '''
from mlflow_autotts.controllers.base import Controller


class Forever(Controller):
    """Passes the static check; only the sandbox's timeout stops it."""

    name = "forever"

    def solve(self, episode):
        n = 0
        while True:
            n += 1
'''

NO_CODE_REPLY = "I would open a few branches and stop once they agree, but I will not write code today."
