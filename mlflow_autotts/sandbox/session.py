"""A sandboxed controller for serving: the child decides, this process owns the episode.

``SandboxedController(source, class_name, beta, params, limits)`` has the controller API
(``solve(episode) -> str | None``), but the controller's code runs in a sandbox child
(session mode of ``sandbox.worker``), locked down, limited and observed exactly as in batch
scoring. The episode stays here: any object with the controller API (a replay episode, a
live episode driving vLLM). The child's episode is a proxy that forwards each call
(``probe_new``, ``probe_more(i)``, ``get_new_branch_final_answer``, ``tokens_used``,
``signals(i)`` where present) to this process, which executes it on the real episode and
sends back the result; ``question``, ``max_branches`` and ``interval_tokens`` travel with
the request. Costs are therefore counted by the episode that generates, never by the
controller's code, and the answer must be one the episode revealed during this ``solve``
(otherwise ``forbidden``). A served candidate gets no network, files or credentials
(``docs/architecture.md``, "The trust boundary").

State: every ``solve`` runs in a fresh fork of the child, taken after the controller's
class was built and before any question was seen (``sandbox.worker``), and is built there at
the β the call names. Nothing one solve stores reaches another: not another question's
answers, not another caller's. So β is an argument of ``solve``, not a property of a child,
and one pool serves every β.

Concurrency: a bounded pool of children. Each ``solve`` takes an idle child or starts a new
one (at most ``max_children``; further callers wait, and a child starts outside every lock),
so concurrent requests run in parallel and a live backend can batch their generation. A
child serves many questions (its start-up is paid once) and is replaced after any failure,
after ``max_solves_per_child`` solves, or once it has used half of its lifetime CPU budget
(``SandboxLimits.cpu_seconds``); a child idle for ``idle_seconds`` is stopped. So the
children's memory is at most ``max_children`` × ``EPISODE_PROCESSES`` × ``memory_mb``
whatever the requests ask.

Time and work: ``SandboxLimits.wall_seconds`` bounds the child's own turns within one
``solve`` (time spent here executing episode calls, i.e. generation, does not count);
``deadline`` bounds the whole solve (the request's own end), and
``SandboxLimits.max_episode_calls`` the calls one solve may make. Past any of them the child
is killed and the solve fails.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from mlflow_autotts.controllers.base import check_beta
from mlflow_autotts.sandbox.limits import Isolation, SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateFailedError, CandidateFailure, SandboxError
from mlflow_autotts.sandbox.child import READY_FIELDS, Child, Violation, expect_fields, reported_failure
from mlflow_autotts.sandbox.protocol import (
    MAX_MESSAGE_CHARS, MAX_NAME_CHARS, Data, FailureKind, Field, Mode, Msg, Op, control_bytes, decode_op, dumps,
)

IDLE_SECONDS = 60.0
"""A child idle this long is stopped (its next caller starts a new one)."""
MAX_REPLY_BYTES = 1 << 20
"""Replies the child has not read yet, at most; a child that sends calls without reading
their replies is breaking the protocol."""


class _Session:
    """One session-mode child: started, locked down, observed, its controller built."""

    def __init__(self, owner: "SandboxedController"):
        lim = owner.limits
        self.limits = lim
        self.child = Child(lim, control_bytes(lim.max_answer_chars))
        self.solves = 0
        self.ready: dict | None = None
        self.applied: list | None = None
        self.failure: CandidateFailure | None = None
        self.last_used = time.monotonic()
        try:
            header = self.child.header(Mode.SESSION, owner.source, owner.class_name, owner.params,
                                       [owner.requested_beta])
            self.child.send(dumps(header) + dumps({Data.CONFIDENCE: owner.confidence}))
            deadline = self.child.t0 + lim.wall_seconds
            stop = self.child.pump(self._startup, deadline)
            if self.applied is None:
                raise self.child.start_failure(stop)
            self.isolation = self.child.go(self.applied)
            stop = self.child.pump(self._startup, deadline)
            if self.failure is not None:
                self.child.exit_gracefully(deadline)
            elif self.ready is None:
                self.failure = self._stopped(stop)
        except BaseException:
            self.child.finish()
            raise

    def _startup(self, msg: dict) -> bool:
        t = msg[Field.TYPE]
        if self.applied is None:
            if t != Msg.LOCKED or not isinstance(msg.get(Field.APPLIED), list):
                raise SandboxError("sandbox: the child did not report its lockdown first")
            self.applied = msg[Field.APPLIED]
            return True
        if t == Msg.READY:
            expect_fields(msg, READY_FIELDS)
            built = msg[Field.BETAS]
            if len(built) != 1 or not (type(built[0]) in (int, float) and 0.0 <= built[0] <= 1.0):
                raise Violation("protocol: the controller's β is not a number in [0, 1]")
            self.ready = {"name": msg[Field.NAME][:MAX_NAME_CHARS] or msg[Field.CLASS][:MAX_NAME_CHARS],
                          "cls": msg[Field.CLASS][:MAX_NAME_CHARS],
                          "uses_beta": msg[Field.USES_BETA], "beta": float(built[0])}
            return True
        if t == Msg.FAIL:
            self.failure = reported_failure(msg)
            return True
        raise Violation(f"protocol: unexpected message type {t[:40]!r} at start-up")

    def _stopped(self, stop: str) -> CandidateFailure:
        """The failure of a child that stopped with ``stop`` without answering; ends the child."""
        failure = self.child.stop_failure(stop, None, "answer (wall clock, the controller's own time)")
        if failure is not None:
            self.child.finish()
            return failure
        self.child.exit_gracefully(time.monotonic() + 1.0)
        return self.child.death(None)

    # ------------------------------------------------------------------- solving
    def solve(self, episode: Any, beta: float, deadline: float | None) -> str | None:
        """One episode at ``beta``, ended by ``deadline`` (monotonic seconds) if given; raises
        ``CandidateFailedError`` (the child is then dead) or whatever the episode itself
        raised (other than ``ValueError``; the child is then killed)."""
        child = self.child
        child.output.reset()
        has_signals = hasattr(episode, "signals")
        child.send({Field.TYPE: Msg.SOLVE, Field.QUESTION: str(episode.question),
                    Field.MAX_BRANCHES: int(episode.max_branches), Field.INTERVAL_TOKENS: int(episode.interval_tokens),
                    Field.HAS_SIGNALS: has_signals, Field.BETA: beta})
        self.solves += 1
        revealed: set = set()
        state: dict[str, Any] = {}
        calls = [0]
        max_calls = self.limits.max_episode_calls
        end = float("inf") if deadline is None else deadline
        own = [time.monotonic() + self.limits.wall_seconds]  # the child's own time runs out here

        def handle(msg: dict) -> bool:
            t = msg[Field.TYPE]
            if t == Msg.CALL:
                expect_fields(msg, {Field.TYPE: str, Field.OP: int})
                calls[0] += 1
                if calls[0] > max_calls:
                    raise Violation(f"made more than {max_calls} episode calls in one solve "
                                    "(SandboxLimits.max_episode_calls)")
                started = time.monotonic()
                reply = _execute(episode, msg[Field.OP], has_signals, revealed)
                own[0] += time.monotonic() - started  # the episode's time is not the child's
                if len(child.pending) > MAX_REPLY_BYTES:
                    raise Violation("protocol: the child does not read the replies to its calls")
                child.send(reply)
                return False
            if t == Msg.ANSWER:
                expect_fields(msg, {Field.TYPE: str, Field.ANSWER: (str, type(None))})
                answer = msg[Field.ANSWER]
                if answer is not None and len(answer) > self.limits.max_answer_chars:
                    raise Violation("protocol: an answer longer than the limit")
                if answer is not None and answer not in revealed:
                    raise Violation(f"unrevealed_answer: solve() returned {answer[:80]!r}, which none of the "
                                    "episode's answers revealed")
                state["answer"] = answer
                return True
            if t == Msg.FAIL:
                state["failure"] = reported_failure(msg)
                return True
            raise Violation(f"protocol: unexpected message type {t[:40]!r} during solve()")

        try:
            while True:
                stop = child.pump(handle, min(own[0], end))
                now = time.monotonic()
                if stop != "deadline" or now >= own[0] or now >= end:
                    break
        except BaseException:  # the episode failed (trusted side): this child's state is unknown
            child.finish()
            raise
        self.last_used = time.monotonic()
        if "answer" in state:
            return state["answer"]
        failure = state.get("failure")
        if failure is not None:
            child.exit_gracefully(time.monotonic() + 1.0)
        elif stop == "deadline" and time.monotonic() >= end and time.monotonic() < own[0]:
            child.finish()
            failure = CandidateFailure(FailureKind.TIMEOUT, "stopped: the request's time ran out")
        else:
            failure = self._stopped(stop)
        raise CandidateFailedError(self.ready["name"] if self.ready else "candidate", failure, child.output.text())

    def spent(self, max_solves: int) -> bool:
        """Whether this child should be replaced rather than reused."""
        return (self.child.status is not None or self.solves >= max_solves
                or self.child.cpu_seconds >= self.limits.cpu_rlimit / 2)

    def close(self) -> None:
        self.child.close_stdin()
        self.child.finish()


def _execute(episode: Any, code: Any, has_signals: bool, revealed: set) -> dict:
    """Run one wire op on the trusted episode: the ``REPLY`` message. ``ValueError`` (the
    controller API's error) goes back to the child; any other exception propagates."""
    op, i = decode_op(code)
    try:
        if op is None and i is not None:
            value = episode.probe_more(i)
            revealed.add(value[0])
        elif op == Op.PROBE_NEW:
            value = episode.probe_new()
            revealed.add(value[0])
        elif op == Op.READ_WHOLE:
            value = episode.get_new_branch_final_answer()
            revealed.add(value)
        elif op == Op.TOKENS_USED:
            value = episode.tokens_used
        elif op == Op.SIGNALS and has_signals:
            value = episode.signals(i)
        elif op in (Op.BRANCHES_OPENED, Op.INTERVALS) and hasattr(episode, op.name.lower()):
            value = getattr(episode, op.name.lower())
        else:
            return {Field.TYPE: Msg.REPLY, Field.ERROR: "this episode does not offer that operation"}
    except ValueError as exc:
        return {Field.TYPE: Msg.REPLY, Field.ERROR: str(exc)[:MAX_MESSAGE_CHARS]}
    if isinstance(value, tuple):
        value = list(value)
    return {Field.TYPE: Msg.REPLY, Field.VALUE: value}


class SandboxedController:
    """Untrusted controller code with the controller API, run in sandbox children.

    The constructor starts one child, so a source that does not load (or weaker isolation
    than ``limits`` ask) fails here: ``CandidateFailedError`` / ``SandboxIsolationError``.
    ``solve`` raises ``CandidateFailedError`` (a ``ControllerError``) carrying the
    candidate's failure; exceptions of the episode itself (a backend down) propagate
    unchanged. Thread-safe (a pool of children, see the module docstring). ``close()``
    stops the children; the object is also a context manager.
    """

    def __init__(self, source: str, class_name: str | None = None, beta: float | None = None,
                 params: dict[str, Any] | None = None, limits: SandboxLimits = SandboxLimits(),
                 max_children: int = 4, max_solves_per_child: int = 1000, idle_seconds: float = IDLE_SECONDS):
        from mlflow_autotts.controllers import voting

        if not isinstance(source, str):
            raise ValueError(f"source must be a str, got {type(source).__name__}")
        if max_children < 1 or max_solves_per_child < 1 or not idle_seconds > 0:
            raise ValueError("max_children and max_solves_per_child must be >= 1, idle_seconds > 0")
        self.source, self.class_name, self.limits = source, class_name, limits
        self.requested_beta = None if beta is None else check_beta(beta)
        self.params = dict(params or {})
        self.max_children, self.max_solves, self.idle_seconds = max_children, max_solves_per_child, idle_seconds
        self.confidence = voting.confidence_table(130)  # tabulated with scipy here, as in-process runs do
        self._lock = threading.Lock()
        self._idle: list[_Session] = []  # guarded by _lock; the most recently used last
        self._slots = threading.BoundedSemaphore(max_children)
        self._live: set[_Session] = set()
        self._closed = threading.Event()
        self.children_started = 0
        """Children started so far (one per ``max_solves_per_child`` solves, plus replacements
        after failures and idle stops, plus one per concurrent caller up to ``max_children``)."""
        first = self._start()
        self.name: str = first.ready["name"]
        """The class's ``name`` (or class name), as the child reported it."""
        self.uses_beta: bool = first.ready["uses_beta"]
        self.reported_class: str = first.ready["cls"]
        """The class the child picked (untrusted text: check it against the source)."""
        self.beta: float = first.ready["beta"] if self.requested_beta is None else self.requested_beta
        """The default β: what a ``solve`` without one uses."""
        self.isolation: Isolation = first.isolation
        """The isolation of the first child (every child is checked the same way)."""
        self._give_back(first)
        threading.Thread(target=self._reap_idle, name="autotts-sandbox-reaper", daemon=True).start()

    @property
    def live_children(self) -> int:
        """Children running now, busy or idle (at most ``max_children``)."""
        with self._lock:
            return len(self._live)

    def _start(self) -> _Session:
        session = _Session(self)  # outside the lock: a start-up never stalls other callers
        with self._lock:
            self.children_started += 1
        if session.failure is not None:
            raise CandidateFailedError(session.ready["name"] if session.ready else "candidate", session.failure,
                                       session.child.output.text())
        with self._lock:
            self._live.add(session)
        return session

    def config(self) -> dict[str, Any]:
        return {"beta": self.beta, **self.params}

    def config_params(self) -> dict[str, Any]:
        """The parameters it was built with (``config()`` without β)."""
        return dict(self.params)

    def solve(self, episode: Any, beta: float | None = None, deadline: float | None = None) -> str | None:
        """The controller's answer on ``episode`` at ``beta`` (None: the default β), in a fresh
        fork; ``deadline`` (``time.monotonic()`` seconds) ends it when the caller's time is up."""
        if self._closed.is_set():
            raise SandboxError("this sandboxed controller is closed")
        beta = self.beta if beta is None else check_beta(beta)
        self._slots.acquire()
        session = None
        try:
            with self._lock:
                session = self._idle.pop() if self._idle else None
            if session is None:
                session = self._start()
            answer = session.solve(episode, beta, deadline)
        except BaseException:
            if session is not None:
                self._retire(session)
            self._slots.release()
            raise
        if session.spent(self.max_solves):
            self._retire(session)
        else:
            self._give_back(session)
        self._slots.release()
        return answer

    def _give_back(self, session: _Session) -> None:
        with self._lock:
            if not self._closed.is_set():
                self._idle.append(session)
                return
        self._retire(session)

    def _retire(self, session: _Session) -> None:
        with self._lock:
            self._live.discard(session)
        session.close()

    def _reap_idle(self) -> None:
        """Stop children idle for ``idle_seconds`` (a daemon thread, until ``close``)."""
        while not self._closed.wait(self.idle_seconds / 4):
            now = time.monotonic()
            with self._lock:
                stale = [s for s in self._idle if now - s.last_used >= self.idle_seconds]
                self._idle = [s for s in self._idle if now - s.last_used < self.idle_seconds]
            for session in stale:
                self._retire(session)

    def close(self) -> None:
        """Stop every child (idle ones now; busy ones when their ``solve`` returns)."""
        self._closed.set()
        with self._lock:
            idle, self._idle = self._idle, []
        for session in idle:
            self._retire(session)

    def __enter__(self) -> "SandboxedController":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass
