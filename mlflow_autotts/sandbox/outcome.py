"""What running a candidate in the sandbox yields: scores or a failure, and the errors raised.

A candidate's misbehaviour is data (``CandidateFailure``, logged and fed back to
explorers); the sandbox itself failing, or refusing to run under weaker isolation than
configured, is an error of the caller's environment (``SandboxError``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mlflow_autotts.errors import AutoTTSError, ControllerError, safe_text
from mlflow_autotts.replay.episode import Action
from mlflow_autotts.replay.results import EvalResult
from mlflow_autotts.sandbox.limits import Isolation
from mlflow_autotts.sandbox.protocol import MAX_MESSAGE_CHARS, MAX_NAME_CHARS, MAX_TRACEBACK_CHARS, FailureKind

FAILURE_KINDS = tuple(k.value for k in FailureKind)
"""Every ``CandidateFailure.kind`` (see ``protocol.FailureKind`` for their meaning)."""

EPISODE_COLUMNS = ("dataset", "beta", "problem", "shuffle", "answer", "correct", "tokens", "branches_opened",
                   "intervals")
"""Columns of ``CandidateOutcome.episodes`` (``shuffle`` is the seed, as in the runner)."""


class SandboxError(AutoTTSError):
    """The sandbox could not run a candidate at all (this machine, not the candidate)."""


class SandboxIsolationError(SandboxError):
    """The observed isolation is weaker than ``SandboxLimits`` asks, and weaker isolation
    was not allowed; carries the observation."""

    def __init__(self, isolation: Isolation, detail: str = ""):
        self.isolation = isolation
        self.detail = detail
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"the sandbox's isolation is weaker than configured: {', '.join(isolation.missing)} not in force"
            f"{extra}. Run as root where `unshare --net` works, or allow weaker isolation "
            "(SandboxLimits.allow_weaker_isolation) to run untrusted code anyway")

    def __reduce__(self):  # its own arguments, so it crosses a process (a Ray task) as itself
        return type(self), (self.isolation, self.detail)


@dataclass(frozen=True)
class CandidateFailure:
    """Why a candidate could not be scored or could not answer; logged, fed back to explorers."""

    kind: str
    """One of ``FAILURE_KINDS``."""
    message: str
    """One line saying what went wrong."""
    traceback: str = ""
    """Excerpt of the candidate's traceback (``File "<candidate>", line N, in f`` + source)."""
    where: dict[str, Any] | None = None
    """The episode it happened on (``beta``, ``data``, ``problem``, ``shuffle``), when known."""

    def __post_init__(self) -> None:
        # the message and traceback may be the candidate's own text: made safe to show (no
        # carriage returns, escape sequences or other control characters) and bounded here,
        # where every failure is built, before any terminal, log or response sees it (the
        # kind is the parent's: a child may only report kinds from a fixed list)
        object.__setattr__(self, "message", safe_text(self.message, MAX_MESSAGE_CHARS))
        object.__setattr__(self, "traceback", safe_text(self.traceback, MAX_TRACEBACK_CHARS, multiline=True))

    def __str__(self) -> str:
        at = ""
        if self.where:
            at = " (" + ", ".join(f"{safe_text(k, 40)}={safe_text(v, 200)}" for k, v in self.where.items()) + ")"
        return f"{self.kind}: {self.message}{at}"


class CandidateFailedError(ControllerError):
    """Controller code in the sandbox failed where the caller needed an answer or a score
    (``score_source``, ``SandboxedController``); one line: who, kind, message, where."""

    def __init__(self, label: str, failure: CandidateFailure, output: str = ""):
        self.label = safe_text(label, MAX_NAME_CHARS)  # may be the name the candidate reported
        self.failure = failure
        self.output = output
        """The start of what the candidate printed (raw: sanitise before showing it)."""
        super().__init__(f"controller {self.label!r} failed in the sandbox: {failure}")

    def __reduce__(self):
        return type(self), (self.label, self.failure, self.output)


class EpisodeRow(NamedTuple):
    """One episode as scored by the parent (see ``EPISODE_COLUMNS``)."""

    dataset: str
    beta: float
    problem: int
    shuffle: int
    answer: str | None
    correct: bool
    tokens: int
    branches_opened: int
    intervals: int


@dataclass(frozen=True)
class SandboxTimings:
    """Where the time of one candidate went (seconds)."""

    startup: float = 0.0
    """Spawn until the candidate was imported and ready to score."""
    total: float = 0.0
    """Spawn until the child was reaped."""
    child_cpu: float = 0.0
    """CPU time of the child (user + system, from ``wait4``)."""
    child_max_rss_mb: float = 0.0
    """Peak resident memory of the child (``VmHWM``, sampled from ``/proc`` while it ran)."""
    parent: float = 0.0
    """Time this process spent checking and scoring the child's reports."""
    episodes: int = 0
    """Episodes scored."""


@dataclass
class CandidateOutcome:
    """A candidate's scores, or its failure (``ok`` says which)."""

    failure: CandidateFailure | None
    results: list[EvalResult] = field(default_factory=list)
    """Per (β, dataset), β-major, with the runner's formulas; ``beta`` is the β it ran at,
    ``params`` the configuration the controller reported (a label), ``episodes`` is left
    empty (see ``episodes`` and ``as_eval_results``). On failure only the groups finished
    before it."""
    episodes: list[EpisodeRow] = field(default_factory=list)
    """Per episode, in scoring order; on failure the episodes scored before it."""
    actions: list[list[Action]] | None = None
    """Per episode (aligned with ``episodes``), the full action log; only with ``full_actions``."""
    controller_name: str = ""
    """The candidate class's ``name`` (or its class name); untrusted text, capped."""
    uses_beta: bool = True
    output: str = ""
    """The start of what the candidate printed (stdout and stderr, as the parent read them)."""
    isolation: Isolation | None = None
    """The isolation in force, as the parent observed it before the candidate ran."""
    timings: SandboxTimings = field(default_factory=SandboxTimings)

    def __post_init__(self) -> None:
        self.controller_name = safe_text(self.controller_name, MAX_NAME_CHARS)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def episodes_frame(self):
        """``episodes`` as a pandas DataFrame with ``EPISODE_COLUMNS``."""
        import pandas as pd  # heavy; only reports need it

        return pd.DataFrame(self.episodes, columns=list(EPISODE_COLUMNS))

    def as_eval_results(self, label: str | None = None, params: dict[str, Any] | None = None) -> list[EvalResult]:
        """``results`` as the in-process runner reports them: β None for a controller that
        ignores β, the episodes as a frame with the runner's columns."""
        frame = self.episodes_frame()
        out = []
        for r in self.results:
            eps = frame[(frame["dataset"] == r.data) & (frame["beta"] == r.beta)].drop(columns="beta")
            out.append(EvalResult(data=r.data, controller=label or r.controller, beta=r.beta if self.uses_beta else None,
                                  params=dict(r.params if params is None else params), shuffles=r.shuffles,
                                  n_problems=r.n_problems, accuracy=r.accuracy, mean_tokens=r.mean_tokens,
                                  episodes=eps.reset_index(drop=True)))
        return out

    def raise_for_failure(self, label: str | None = None) -> None:
        """``CandidateFailedError`` if the candidate failed."""
        if self.failure is not None:
            raise CandidateFailedError(label or self.controller_name or "candidate", self.failure, self.output)
