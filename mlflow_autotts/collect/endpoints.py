"""Questions spread over several generation endpoints: one shared queue, endpoints in rotation.

Every endpoint (a server, or the one in-process engine) runs ``concurrency`` workers that
take the next question from one queue, so a faster endpoint does more (work stealing).
An endpoint whose backend is unavailable (``BackendUnavailable``: connection refused, a
timeout after the client's own retries, a 5xx) is taken out of rotation with a warning
naming it; the question it was working on goes back to the front of the queue for
another endpoint. Any other error is not the endpoint's fault (a refused request, a
bug): it stops the collection once the questions in flight have ended. Nothing here
writes anything: the caller's ``work`` keeps a finished question (a shard) or raises.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mlflow_autotts.live.backends.base import GenerationBackend, BackendUnavailable


@dataclass
class Endpoint:
    """One generation endpoint and how it fared."""

    name: str
    """Its server URL (or ``in-process`` for the engine in this process)."""
    backend: GenerationBackend | None
    """None for an endpoint left out before the start."""
    served: int = 0
    """Questions it finished in this run."""
    error: str | None = None
    """Why it was taken out of rotation; None while it is in rotation."""


def endpoint_error(name: str, exc: BaseException) -> str:
    """``exc`` as one line that names the endpoint (backend messages often start with it)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


class WorkQueue:
    """Items waiting and items being worked on; ``take`` waits while some are in flight,
    since a failing endpoint may put its item back."""

    def __init__(self, items: Iterable[int]):
        self._pending = deque(items)
        self._busy = 0
        self._stopped = False
        self._cond = threading.Condition()

    def take(self) -> int | None:
        """The next item; None once every item is done or the queue is stopped."""
        with self._cond:
            while True:
                if self._stopped:
                    return None
                if self._pending:
                    self._busy += 1
                    return self._pending.popleft()
                if self._busy == 0:
                    return None
                self._cond.wait()

    def done(self, item: int) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def put_back(self, item: int) -> None:
        """Return a taken item, first in line."""
        with self._cond:
            self._pending.appendleft(item)
            self._busy -= 1
            self._cond.notify_all()

    def stop(self) -> None:
        """Hand out nothing more (items in flight still end)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def pending(self) -> list[int]:
        with self._cond:
            return sorted(self._pending)


Work = Callable[[Endpoint, int], None]
Warn = Callable[[str], None]


def spread(items: Sequence[int], endpoints: Sequence[Endpoint], concurrency: int, work: Work,
           warn: Warn) -> list[int]:
    """Run ``work(endpoint, item)`` for every item, ``concurrency`` at once per endpoint in
    rotation; the items left undone because every endpoint failed (empty when all are done).

    An error other than ``BackendUnavailable`` is raised once the items in flight ended.
    """
    live = [e for e in endpoints if e.error is None]
    queue = WorkQueue(items)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def out_of_rotation(ep: Endpoint, exc: BaseException) -> None:
        with lock:
            if ep.error is not None:
                return
            ep.error = endpoint_error(ep.name, exc)
            left = [e.name for e in live if e.error is None]
            then = (f"its questions go to {', '.join(left)}" if left else "no endpoint is left")
            warn(f"endpoint {ep.name} failed and is out of rotation ({ep.error}); {then}")

    def worker(ep: Endpoint) -> None:
        while True:
            item = queue.take()
            if item is None:
                return
            if ep.error is not None:  # failed while this worker waited
                queue.put_back(item)
                return
            try:
                work(ep, item)  # a live endpoint has a backend
            except BackendUnavailable as exc:
                queue.put_back(item)
                out_of_rotation(ep, exc)
                return
            except BaseException as exc:  # noqa: BLE001  (raised below, once the others stopped)
                with lock:
                    failures.append(exc)
                queue.stop()
                queue.done(item)
                return
            with lock:
                ep.served += 1
            queue.done(item)

    if not live or not items:
        return sorted(items)
    with ThreadPoolExecutor(len(live) * concurrency, thread_name_prefix="collect") as pool:
        try:
            futures = [pool.submit(worker, ep) for ep in live for _ in range(concurrency)]
            for f in futures:
                f.result()
        finally:
            queue.stop()  # also on KeyboardInterrupt: workers end their question and exit
    if failures:
        raise failures[0]
    return queue.pending()


__all__ = ["Endpoint", "WorkQueue", "endpoint_error", "spread"]
