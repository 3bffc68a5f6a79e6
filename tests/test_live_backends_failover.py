"""Backends that fail, hang or lose their caller: health checks, cancellation and several
servers of one model (``live/backends/openai_server.py``, ``live/backends/replicas.py``).

Fast: fake servers on loopback sockets (one that accepts and never answers, one whose
``/health`` answers while completions hang) and fake backends for the replica logic. The
same behaviour on a real vLLM server is in ``tests/test_serve_vllm.py``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence

import pytest

from mlflow_autotts.live.backends import ReplicaBackend, make_backend
from mlflow_autotts.live.backends.base import (
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationBackend,
    GenerationCancelled,
    GenerationRequest,
)
from mlflow_autotts.live.backends.openai_server import OpenAIServerBackend
from mlflow_autotts.live.config import LiveConfig, LiveConfigError, stored_live_config

REQ = [GenerationRequest((1, 2, 3), 8)]


class FakeServer:
    """A loopback TCP server: ``health`` None never answers anything (a stopped process);
    else ``GET /health`` gets that status and every other request hangs. Records how many
    connections were closed by the client."""

    def __init__(self, health: int | None):
        self.health = health
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed_by_client = 0
        self.completions = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            if self.health is not None and data.startswith(b"GET /health"):
                conn.sendall(f"HTTP/1.1 {self.health} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
                return
            if b"/completions" in data.split(b"\r\n", 1)[0]:
                with self._lock:
                    self.completions += 1
            while True:  # hang until the client goes away
                try:
                    if not conn.recv(4096):
                        break
                except OSError:
                    break
            with self._lock:
                self.closed_by_client += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hung():
    servers: list[FakeServer] = []

    def make(health: int | None) -> FakeServer:
        servers.append(FakeServer(health))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# ----------------------------------------------------------------------------- one server
def test_a_server_that_stops_answering_fails_the_waiting_batch_within_its_health_checks(hung):
    server = hung(None)  # accepts connections, answers nothing: a stopped (SIGSTOP) process
    backend = OpenAIServerBackend(server.url, "m", timeout=300, max_retries=0, health_interval=0.5,
                                  health_timeout=0.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"stopped answering \(GET /health: no answer within 0.5 s\)"):
            backend.generate(REQ, timeout=300)
        took = time.monotonic() - t0
        assert took < 3.0, f"noticed after {took:.1f} s, not within two health intervals"
        # the batch's connection was closed, so a real server would abort its request
        assert wait_for(lambda: server.closed_by_client >= 1)
        assert backend.in_flight == 0
    finally:
        backend.close()


@pytest.mark.parametrize("status, fails", [(200, False), (404, False), (503, True)])
def test_health_answers_decide_whether_a_slow_batch_is_failed(hung, status, fails):
    server = hung(status)  # completions hang; /health answers `status`
    backend = OpenAIServerBackend(server.url, "m", timeout=300, max_retries=0, health_interval=0.3,
                                  health_timeout=0.3)
    try:
        t0 = time.monotonic()
        if fails:
            with pytest.raises(BackendUnavailable, match="unhealthy .*HTTP 503"):
                backend.generate(REQ, timeout=30)
            assert time.monotonic() - t0 < 2.0
        else:  # alive but slow: only the batch's own timeout ends it
            with pytest.raises(BackendUnavailable, match=r"no answer to 1 request\(s\) within 1.5 s"):
                backend.generate(REQ, timeout=1.5)
            assert 1.4 < time.monotonic() - t0 < 3.0
    finally:
        backend.close()


def test_a_cancelled_caller_aborts_its_requests_at_once(hung):
    server = hung(200)
    backend = OpenAIServerBackend(server.url, "m", timeout=300, max_retries=0, health_interval=5)
    cancel = threading.Event()
    try:
        threading.Timer(0.3, cancel.set).start()
        t0 = time.monotonic()
        with pytest.raises(GenerationCancelled, match=r"3 request\(s\) aborted: the caller cancelled"):
            backend.generate(REQ * 3, timeout=300, cancel=cancel)
        assert time.monotonic() - t0 < 1.5
        assert wait_for(lambda: server.closed_by_client == 3), server.closed_by_client  # every connection closed
        assert server.completions == 3 and backend.in_flight == 0
    finally:
        backend.close()


def test_a_dead_port_is_unavailable_not_a_hang():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listens: connection refused
    backend = OpenAIServerBackend(f"http://127.0.0.1:{port}/v1", "m", timeout=300, max_retries=0)
    try:
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match="cannot reach the server"):
            backend.generate(REQ, timeout=300)
        assert time.monotonic() - t0 < 5
    finally:
        backend.close()


# ----------------------------------------------------------------------------- several servers
class Fake(GenerationBackend):
    """A backend that answers (or fails) as told and counts its calls."""

    def __init__(self, name: str, fail: BaseException | None = None, delay: float = 0.0):
        self.base_url = name
        self.fail = fail
        self.delay = delay
        self.calls = 0
        self.in_flight = 0
        self.closed = False

    def generate(self, requests: Sequence[GenerationRequest], timeout=None, cancel=None) -> list[Generation]:
        self.calls += 1
        self.in_flight += len(requests)
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            return [Generation((7,), self.base_url, "length") for _ in requests]
        finally:
            self.in_flight -= len(requests)

    def context_length(self) -> int | None:
        if self.fail is not None:
            raise self.fail
        return 512

    def close(self) -> None:
        self.closed = True


def test_an_episode_stays_on_its_server_and_moves_when_it_fails():
    a, b = Fake("a"), Fake("b")
    replicas = ReplicaBackend([a, b], cooldown=60)
    one = replicas.session()
    assert [g.text for g in one.generate(REQ)] == ["a"]
    for _ in range(3):
        one.generate(REQ)
    assert (a.calls, b.calls) == (4, 0)  # sticky: the prefix cache is on a
    a.fail = BackendUnavailable("a: cannot reach the server")
    assert [g.text for g in one.generate(REQ)] == ["b"]  # the failed batch went to b
    assert (a.calls, b.calls) == (5, 1)
    a.fail = None
    assert [g.text for g in one.generate(REQ)] == ["b"] and a.calls == 5  # a is out of rotation, and b is home
    assert replicas.down() == {"a": "a: cannot reach the server"}
    assert [g.text for g in replicas.session().generate(REQ)] == ["b"]  # new episodes avoid a too


def test_new_episodes_go_to_the_least_loaded_server():
    a, b, c = Fake("a"), Fake("b"), Fake("c")
    a.in_flight, b.in_flight, c.in_flight = 5, 1, 3
    replicas = ReplicaBackend([a, b, c])
    assert replicas.pick() == 1 and replicas.pick({1}) == 2
    assert [g.text for g in replicas.session().generate(REQ)] == ["b"]


def test_a_failed_server_returns_after_its_cooldown():
    a, b = Fake("a", fail=BackendUnavailable("a down")), Fake("b")
    replicas = ReplicaBackend([a, b], cooldown=0.2)
    assert [g.text for g in replicas.session().generate(REQ)] == ["b"]
    a.fail = None
    b.in_flight = 10  # a is less loaded, but still cooling down
    assert replicas.pick() == 1
    time.sleep(0.25)
    assert replicas.pick() == 0 and replicas.down() == {}


def test_a_refused_or_cancelled_batch_is_not_sent_again():
    for error in (BackendError("a: HTTP 400: prompt too long"), GenerationCancelled("a: aborted")):
        a, b = Fake("a", fail=error), Fake("b")
        with pytest.raises(type(error)):
            ReplicaBackend([a, b]).generate(REQ)
        assert (a.calls, b.calls) == (1, 0)


def test_when_every_server_fails_the_error_names_each():
    a, b = Fake("a", fail=BackendUnavailable("a: connection refused")), Fake("b", fail=BackendUnavailable("b: gone"))
    replicas = ReplicaBackend([a, b])
    with pytest.raises(BackendUnavailable, match="no server of 2 answered: a: connection refused; b: gone"):
        replicas.generate(REQ)
    with pytest.raises(BackendUnavailable, match="no server of 2 answered: every server is out of rotation: a: .*b: gone"):
        replicas.generate(REQ)  # both cooling down: nobody is called again
    assert (a.calls, b.calls) == (1, 1)
    with pytest.raises(BackendUnavailable, match="a: connection refused.*b: gone"):
        replicas.context_length()


def test_replica_urls_are_settings_of_the_openai_backend_only(hung):
    server_a, server_b = hung(200), hung(200)
    cfg = stored_live_config({"model": "m", "backend": "openai", "base_url": server_a.url},
                             {"AUTOTTS_LIVE_REPLICA_URLS": server_b.url, "AUTOTTS_LIVE_HEALTH_INTERVAL": "2"})
    assert cfg.replica_urls == (server_b.url,) and cfg.health_interval == 2
    backend = make_backend(cfg)
    try:
        assert isinstance(backend, ReplicaBackend)
        assert [s.base_url for s in backend.servers] == [server_a.url, server_b.url]
        assert all((s.health_interval, s.health_timeout) == (2, 10) for s in backend.servers)
    finally:
        backend.close()
    assert "replica_urls" not in cfg.sampling()  # where it ran is not how it sampled
    with pytest.raises(LiveConfigError, match="live config: replica_urls are servers for the openai backend"):
        LiveConfig(model="m", replica_urls=("http://x/v1",))
    with pytest.raises(LiveConfigError, match="replica_urls must be http\\(s\\) URLs, got 'ftp://x'"):
        LiveConfig(model="m", backend="openai", base_url="http://a/v1", replica_urls=("ftp://x",))
    with pytest.raises(LiveConfigError, match="replica_urls must be a list of strings, got 5"):
        stored_live_config({"model": "m", "backend": "openai", "base_url": "http://a/v1", "replica_urls": 5})
