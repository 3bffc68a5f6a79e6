"""Several servers of one model behind the backend interface: least loaded first, failover.

An episode calls the backend through ``session()``: a view that picks the least loaded
server in rotation (requests in flight) on its first call and keeps it while it answers,
so the episode's branches and probes reuse that server's prefix cache (a branch moved to
another server pays its whole prompt again). A server that fails with
``BackendUnavailable`` (refused, reset, a failed health check, a timeout) is out of
rotation for ``cooldown`` seconds, with a warning naming it; the failed batch is sent again
to the next server (its requests are token-id prompts: any server continues them exactly,
with the same seeds). When none is left, the batch fails with every server's reason.
A refused request (``BackendError``) or a cancelled one is the caller's: not retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from mlflow_autotts.live.backends.base import (
    BackendUnavailable,
    Generation,
    GenerationBackend,
    GenerationRequest,
)

_log = logging.getLogger(__name__)


class ReplicaBackend(GenerationBackend):
    """``servers`` (each with an ``in_flight`` count and a ``base_url``) sharing the load."""

    def __init__(self, servers: Sequence[GenerationBackend], cooldown: float = 30.0):
        if not servers:
            raise ValueError("ReplicaBackend needs at least one server")
        self.servers = list(servers)
        self.cooldown = cooldown
        self._down: dict[int, tuple[float, str]] = {}  # server index -> (back in rotation at, why)
        self._lock = threading.Lock()

    def _name(self, k: int) -> str:
        return getattr(self.servers[k], "base_url", f"server {k}")

    def pick(self, exclude: set[int] = frozenset()) -> int | None:  # type: ignore[assignment]
        """The least loaded server in rotation, not in ``exclude``; None when none is."""
        now = time.monotonic()
        with self._lock:
            for k, (until, _) in list(self._down.items()):
                if now >= until:
                    del self._down[k]
            up = [k for k in range(len(self.servers)) if k not in self._down and k not in exclude]
        return min(up, key=lambda k: getattr(self.servers[k], "in_flight", 0), default=None)

    def fail(self, k: int, exc: BaseException) -> None:
        """Take server ``k`` out of rotation for ``cooldown`` seconds."""
        with self._lock:
            first = k not in self._down
            self._down[k] = (time.monotonic() + self.cooldown, str(exc))
        if first:
            _log.warning("server %s is out of rotation for %g s: %s", self._name(k), self.cooldown, exc)

    def down(self) -> dict[str, str]:
        """Servers out of rotation now, with why."""
        now = time.monotonic()
        with self._lock:
            return {self._name(k): why for k, (until, why) in self._down.items() if now < until}

    def run(self, first: int | None, requests: Sequence[GenerationRequest], timeout: float | None,
            cancel: threading.Event | None) -> tuple[int, list[Generation]]:
        """Send the batch to ``first`` (or the least loaded), then to the others while servers
        fail; (the server that answered, its results)."""
        tried: set[int] = set()
        reasons: list[str] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        k = first if first is not None and first not in self._down else self.pick()
        while k is not None:
            tried.add(k)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                return k, self.servers[k].generate(requests, left, cancel)
            except BackendUnavailable as exc:
                self.fail(k, exc)
                reasons.append(str(exc))
            k = self.pick(tried)
        why = "; ".join(reasons) or "every server is out of rotation: " + "; ".join(
            f"{name}: {reason}" for name, reason in self.down().items())
        raise BackendUnavailable(f"no server of {len(self.servers)} answered: {why}")

    def generate(self, requests: Sequence[GenerationRequest], timeout: float | None = None,
                 cancel: threading.Event | None = None) -> list[Generation]:
        return self.run(None, requests, timeout, cancel)[1]

    def session(self) -> GenerationBackend:
        return _Sticky(self)

    def context_length(self) -> int | None:
        for k in range(len(self.servers)):
            try:
                return self.servers[k].context_length()
            except BackendUnavailable as exc:
                self.fail(k, exc)
        raise BackendUnavailable(f"no server of {len(self.servers)} answered: "
                                 + "; ".join(f"{n}: {w}" for n, w in self.down().items()))

    def check_model(self) -> None:
        for server in self.servers:
            server.check_model()

    def describe(self) -> dict[str, str]:
        out = dict(self.servers[0].describe())
        out["base_url"] = ",".join(self._name(k) for k in range(len(self.servers)))
        return out

    def close(self) -> None:
        for server in self.servers:
            server.close()


class _Sticky(GenerationBackend):
    """One episode's view: the server it started on, while that server answers."""

    def __init__(self, replicas: ReplicaBackend):
        self._replicas = replicas
        self._server: int | None = None

    def generate(self, requests: Sequence[GenerationRequest], timeout: float | None = None,
                 cancel: threading.Event | None = None) -> list[Generation]:
        self._server, out = self._replicas.run(self._server, requests, timeout, cancel)
        return out

    def context_length(self) -> int | None:
        return self._replicas.context_length()


__all__ = ["ReplicaBackend"]
