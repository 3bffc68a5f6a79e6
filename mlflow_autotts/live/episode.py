"""The live episode: the controller API of replay over real generation.

Same actions, same answers' shape, same bill (``docs/architecture.md``, live generation).
A branch is a list of generated token ids. A step of branch ``i`` is one interval of
``interval_tokens`` tokens: a step that does not end the branch reveals a probe answer
(greedy continuation of the branch plus the probe suffix, through the prefix cache); the
step in which the branch ends (EOS, or ``max_tokens_per_branch``) reveals its final
answer (its last ``\\boxed{}``, else a probe of the whole branch). The bill is the replay's
one billing rule (``replay.billing``), computed from the same quantities the recording
stores: a probed branch costs one interval per step taken and, once its final step is
taken, its whole length (``max(interval * probes, length)``); a branch read whole costs
its length. Probe tokens
and generated-but-unconsumed tokens are counted beside the bill, never in it.

What replay does not need and this episode adds (why):

- *Lookahead*: controllers call one action at a time, which would run the engine one
  sequence at a time. When a step needs an interval not generated yet, one engine call
  generates it together with the next interval of up to ``lookahead - 1`` other branches
  (open branches with nothing buffered, then open branches holding fewer than
  ``lookahead_depth`` intervals ahead, then, when the step opens a branch, the next
  branches to be opened). What is generated ahead is kept and billed only when the
  controller consumes it.
- *Eager, batched probes*: right after a generation call, the new intervals of branches
  that will be probed (open in probe mode, or next to open while the controller opens
  with ``probe_new``) are probed in one call; a probe still missing when consumed is
  computed then, with the other missing next probes.
- *Seeds per (branch, interval)*: a branch's tokens do not depend on the lookahead or on
  which other branches shared its engine call (up to floating-point batch effects).
- *Timeouts*: each engine call and the whole question are bounded
  (``request_timeout``, ``overall_timeout``); a backend that is down or slow raises
  ``BackendUnavailable``, which is not a ``ValueError``, so no controller swallows it.
- *Limits of one request* (``EpisodeLimits``, optional): a cap on billed tokens, a deadline
  and a cancel event (a client that went away). An action that would take the bill past the
  cap, or any action once the deadline passed or the event is set, raises ``EpisodeStopped``
  instead of revealing anything, and so does every action after it (the episode stays
  stopped). The checks are made before each action and before each engine call, never inside
  one: a stop arrives between engine calls, and an action cut inside is rolled back (a
  branch it was opening is unopened again, a step it was taking is not taken), so the bill
  only counts what the controller saw. A step's cost is exact (when less than an interval is
  left, the step is generated before it is admitted); a whole read is stopped as soon as the
  branch is longer than what is left. So a cap the controller never reaches changes nothing. ``LiveRunner.solve`` catches the stop
  and answers with ``vote()``: the plurality of the final answers of finished branches,
  else of the latest probe answers the controller saw. The bill is the same rule as ever
  (``replay.billing``); the limits only refuse steps.
- *An observer* (optional): called with the episode and a ``Progress`` after each action
  that revealed something (what streaming shows); none, and nothing changes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mlflow_autotts.controllers.base import CONFIDENCE, GROUP_CONFIDENCE, EpisodeFacts, open_branch
from mlflow_autotts.errors import AutoTTSError, safe_text
from mlflow_autotts.live.answers import (
    NO_ANSWER,
    box_is_open,
    extract_answer,
    probe_answer,
)
from mlflow_autotts.live.backends import make_backend
from mlflow_autotts.live.backends.base import (
    GenerationBackend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationCancelled,
    GenerationRequest,
)
from mlflow_autotts.live.config import LiveConfig, LiveConfigError
from mlflow_autotts.live.prompts import ChatPrompts, Message
from mlflow_autotts.live.signals import TokenConfidences, interval_signals, token_confidence
from mlflow_autotts.controllers.voting import plurality
from mlflow_autotts.replay.billing import branch_intervals, branch_tokens

Action = tuple[str, int]
"""As in replay: (``"probe_new"`` | ``"probe_more"`` | ``"read"``, branch index)."""

PROBE, READ = "probe", "read"


class LiveTimeout(BackendUnavailable):
    """The question took longer than ``overall_timeout``."""


MAX_TOKENS, DEADLINE, CANCELLED = "max_tokens", "deadline", "cancelled"
"""Why an episode was stopped (``EpisodeStopped.reason``)."""


class EpisodeStopped(BaseException):
    """The episode refuses further actions: its token cap, its deadline, or its caller gone.

    A ``BaseException`` (as ``KeyboardInterrupt`` and asyncio's ``CancelledError``), not an
    ``Exception``: controllers guard their own code with ``except Exception`` (and catch the
    episode's ``ValueError`` for "no branch left"), and a stop must reach the trusted caller
    through them, not be taken for a failed step. It is a signal to the caller, not the
    controller's failure (``serving.runners.Bound`` passes it through). A controller that
    catches it anyway gains nothing: the episode stays stopped, every further action raises it
    again, and the caller answers by ``vote()`` whenever the episode was stopped. In the
    sandbox it is raised on the parent's side, where the episode lives: the child (waiting
    for its reply) never sees it and is killed (``sandbox.session``).
    """

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.reason, str(self))


@dataclass(frozen=True)
class EpisodeLimits:
    """What one request allows its episode (all optional)."""

    max_billed_tokens: int | None = None
    """Tokens the bill may reach (``tokens_used`` never exceeds it)."""
    deadline: float | None = None
    """``time.monotonic()`` after which no action or engine call starts."""
    cancelled: threading.Event | None = None
    """Set by the caller to stop the episode (a client that disconnected)."""


@dataclass(frozen=True)
class Progress:
    """One action the controller took, as an observer sees it."""

    action: str
    """``probe_new``, ``probe_more`` or ``read``."""
    branch: int
    step: int
    """Steps taken on the branch (1 for a whole read)."""
    answer: str
    finished: bool
    billed: int
    """``tokens_used`` after the action."""


@dataclass(frozen=True)
class Vote:
    """The answer the trusted side gives for an episode stopped before its controller answered."""

    answer: str | None
    votes: dict[str, int]
    """Answer → count, in the order first seen."""
    source: str
    """``final`` (answers of finished branches), ``probes`` (latest probe answers), ``none``."""


@dataclass(frozen=True)
class EngineCall:
    """One engine call of an episode, as a trace shows it."""

    kind: str
    """``generate`` (branch intervals) or ``probe``."""
    branches: tuple[int, ...]
    """The branches it served, in request order."""
    started: float
    """``time.time()`` when it was sent."""
    seconds: float
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    error: str | None = None
    """Why it failed (it then returned nothing)."""


Observer = Callable[["LiveEpisode", Progress], None]
"""Called in the episode's thread after each revealing action; must not raise."""


class QuestionTooLong(AutoTTSError):
    """A question whose prompt leaves the model no room for a branch and its probe: the
    caller's input, not a backend failure (serving answers 400, ``collect`` exits 2)."""

    def __init__(self, message: str, prompt_tokens: int, room: int, limit: int):
        self.prompt_tokens = prompt_tokens
        self.room = room
        """The most prompt tokens a question may take."""
        self.limit = limit
        """The model's context length (``max_model_len``)."""
        super().__init__(message)

    def __reduce__(self):  # its own arguments, so it crosses a process as itself
        return type(self), (str(self), self.prompt_tokens, self.room, self.limit)


def check_prompt(question: str, prompt_tokens: int, prompts: ChatPrompts, config: LiveConfig,
                 limit: int | None) -> None:
    """Refuse, before generating, a question the model's context cannot hold together with
    a whole branch, the probe suffix and a probe (the longest prompt an episode sends).

    The engine would refuse it too, but as a failed request mid-episode (a 400 from a
    server, which reads as the backend's failure); here it is the caller's error, naming
    the limit. When even an empty question does not fit, the settings are at fault.
    """
    if limit is None:
        return
    answer = config.max_tokens_per_branch + len(prompts.suffix_ids) + config.probe_tokens
    bare = prompts.bare_prompt_tokens
    if bare + answer > limit:
        raise LiveConfigError(
            "max_tokens_per_branch",
            f"({config.max_tokens_per_branch}) + prompt without the question ({bare}) + probe suffix "
            f"({len(prompts.suffix_ids)}) + probe_tokens ({config.probe_tokens}) = {bare + answer} exceeds the "
            f"engine's max_model_len ({limit})")
    if prompt_tokens + answer > limit:
        room = limit - answer
        raise QuestionTooLong(
            f"question {safe_text(question, 48)!r} is too long: its prompt is {prompt_tokens:,} tokens, and the "
            f"model's context (max_model_len {limit:,}) holds at most {room:,} beside a branch of "
            f"max_tokens_per_branch ({config.max_tokens_per_branch:,}) and a probe ({answer - config.max_tokens_per_branch})",
            prompt_tokens, room, limit)


def interval_seed(base: int, branch: int, interval: int) -> int:
    """The sampling seed of interval ``interval`` of branch ``branch`` (31 bits, stable)."""
    digest = hashlib.blake2b(f"{base}:{branch}:{interval}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


@dataclass
class LiveBranch:
    """One branch's generation state (index ``j`` = its position in the opening order)."""

    ids: list[int] = field(default_factory=list)
    """Generated token ids (EOS included when the model ended)."""
    finished: bool = False
    """EOS emitted or the token limit reached: no more generation."""
    mode: str | None = None
    """``probe`` or ``read`` once the controller opened it; None while unopened."""
    consumed: int = 0
    """Steps the controller took on it (probe mode)."""
    done: bool = False
    """The controller took its final step (probe mode) or read it (read mode)."""
    probes: dict[int, str] = field(default_factory=dict)
    """Probe answer after non-final interval ``k`` (1-based)."""
    final: str | None = None
    """Final answer, once finished."""
    confidence: TokenConfidences = field(default_factory=TokenConfidences)
    """Per generated token, the confidence (with top-k logprobs)."""

    def steps(self, interval: int) -> int:
        """Steps generated so far: every full interval, plus the final (partial) one."""
        n = len(self.ids)
        return (n - 1) // interval + 1 if self.finished else n // interval

    def nonfinal(self, interval: int) -> int:
        """Generated intervals that do not end the branch (each has a probe step)."""
        n = len(self.ids)
        return (n - 1) // interval if self.finished else n // interval

    def probed_prefix(self) -> int:
        """Length of the run of probe answers 1, 2, … without a gap."""
        k = 0
        while k + 1 in self.probes:
            k += 1
        return k


@dataclass(frozen=True)
class LiveStats:
    """What one question cost and how it ran."""

    billed_tokens: int
    """Branch tokens the controller advanced, by the replay rules (``tokens_used``)."""
    generated_tokens: int
    """Branch tokens generated, including lookahead never consumed."""
    probe_tokens: int
    """Tokens generated by probes (not billed)."""
    prompt_tokens: int
    """Prompt tokens sent over all engine calls."""
    cached_prompt_tokens: int
    """Of those, tokens served from the prefix cache."""
    generation_calls: int
    probe_calls: int
    branches_opened: int
    branches_generated: int
    """Branches with any generated token (opened or generated ahead)."""
    wall_seconds: float
    """From the first action to the end of the last one."""
    engine_seconds: float
    """Time spent waiting for the backend."""

    @property
    def engine_calls(self) -> int:
        return self.generation_calls + self.probe_calls


class LiveEpisode(EpisodeFacts):
    """One question answered by real generation, behind the replay controller API."""

    def __init__(self, question: str | Sequence[Message], backend: GenerationBackend, config: LiveConfig,
                 prompts: ChatPrompts, limits: EpisodeLimits | None = None, observer: Observer | None = None):
        """``question``: the user's text, or a whole conversation whose last turn is the user's."""
        messages = (Message("user", question),) if isinstance(question, str) else tuple(question)
        question = messages[-1].content
        self._question = question
        self._backend = backend.session()
        self._cfg = config
        self._prompts = prompts
        self._prompt = tuple(prompts.conversation_ids(messages))
        self._suffix = tuple(prompts.suffix_ids)
        self._eos = prompts.eos_ids
        self._interval = config.interval_tokens
        self._n = config.max_branches
        check_prompt(question, len(self._prompt), prompts, config, backend.context_length() or prompts.model_max_len)
        self._branches: list[LiveBranch] = []
        self._opened = 0
        self._speculate: str | None = None  # how the controller last opened a branch
        self.actions: list[Action] = []
        self._deadline = time.monotonic() + config.overall_timeout
        self._t_first: float | None = None
        self._t_last = 0.0
        self._engine_s = 0.0
        self._generated = self._probe_tokens = self._prompt_tokens = self._cached = 0
        self._gen_calls = self._probe_calls = 0
        self.calls: list[EngineCall] = []
        """Every engine call, in order (what a trace shows of the episode)."""
        self._limits = limits
        self._observer = observer
        self.stopped: str | None = None
        """Why the episode refused further actions (``MAX_TOKENS``, ``DEADLINE``, ``CANCELLED``)."""

    # ----------------------------------------------------------------- read-only facts
    @property
    def branches_opened(self) -> int:
        return self._opened

    @property
    def config(self) -> LiveConfig:
        return self._cfg

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the question's chat prompt (what every branch continues)."""
        return len(self._prompt)

    @property
    def branches(self) -> Sequence[LiveBranch]:
        """Every branch generated or opened, by opening position (for recording)."""
        return tuple(self._branches)

    @property
    def tokens_used(self) -> int:
        """Tokens billed so far, by the replay's billing rule (``replay.billing``). A branch's
        probe count is known once its final step is taken (its intervals that do not end
        it); until then every step taken is a probe step."""
        interval = self._interval
        return sum(branch_tokens(interval, b.nonfinal(interval) if b.done else b.consumed, len(b.ids), b.consumed,
                                 b.mode == READ)
                   for b in self._branches[: self._opened])

    @property
    def intervals(self) -> int:
        """Steps taken: probe steps, final steps and whole reads (``replay.billing``)."""
        return sum(branch_intervals(b.consumed, b.mode == READ) for b in self._branches[: self._opened])

    @property
    def signals(self):
        """``signals(i)``: per-interval signals of branch ``i`` so far (with top-k logprobs)."""
        if not self._cfg.top_logprobs:
            raise AttributeError("this live episode has no per-interval signals (top_logprobs is 0)")
        return self._branch_signals

    def _branch_signals(self, i: int) -> dict[str, list[float]]:
        b = self._branches[self._check_open(i)]
        # what replay shows: the signals of the probe steps taken (all recorded ones if read)
        upto = b.probed_prefix() if b.mode == READ else min(b.consumed, b.nonfinal(self._interval))
        out: dict[str, list[float]] = {CONFIDENCE: [], GROUP_CONFIDENCE: []}
        for k in range(1, upto + 1):
            for name, value in self.interval_signals(b, k).items():
                out[name].append(value)
        return out

    def interval_signals(self, b: LiveBranch, k: int) -> dict[str, float]:
        """The signals of interval ``k`` (1-based) of branch ``b`` (``live/signals.py``)."""
        return interval_signals(b.confidence, self._interval, k, self._cfg.group_window)

    def stats(self) -> LiveStats:
        wall = (self._t_last - self._t_first) if self._t_first is not None else 0.0
        return LiveStats(
            billed_tokens=self.tokens_used, generated_tokens=self._generated, probe_tokens=self._probe_tokens,
            prompt_tokens=self._prompt_tokens, cached_prompt_tokens=self._cached,
            generation_calls=self._gen_calls, probe_calls=self._probe_calls, branches_opened=self._opened,
            branches_generated=sum(1 for b in self._branches if b.ids), wall_seconds=wall,
            engine_seconds=self._engine_s)

    def _check_open(self, i: Any) -> int:
        """``i`` as a plain int if it names an open branch, else ``ValueError`` (as replay)."""
        return open_branch(i, self._opened)

    # ----------------------------------------------------------------------- actions
    def probe_new(self) -> tuple[str, int, bool]:
        """Open the next branch and advance it one interval."""
        i = self._open(PROBE)
        self.actions.append(("probe_new", i))
        try:
            self._admit_step(i, opening=True)
            answer, finished = self._step(i, opening=True)
        except EpisodeStopped:
            self._unopen(i)
            raise
        finally:
            self._t_last = time.monotonic()
        self._report("probe_new", i, answer, finished)
        return answer, i, finished

    def probe_more(self, i: int) -> tuple[str, bool]:
        """Advance branch ``i`` one interval; a finished branch answers again for free."""
        i = self._check_open(i)
        b = self._branches[i]
        if b.done:
            self._check_stop(0)
            self.actions.append(("probe_more", i))
            return self._final(i), True
        self.actions.append(("probe_more", i))
        self._start()
        try:
            self._admit_step(i, opening=False)
            answer, finished = self._step(i, opening=False)
        except EpisodeStopped:
            self.actions.pop()
            raise
        finally:
            self._t_last = time.monotonic()
        self._report("probe_more", i, answer, finished)
        return answer, finished

    def get_new_branch_final_answer(self) -> str:
        """Open the next branch and read it whole."""
        i = self._open(READ)
        self.actions.append(("read", i))
        b = self._branches[i]
        try:
            while not b.finished:
                self._generate(i, opening=True)
                self._check_stop(0 if b.finished else 1)  # b's tokens so far are in the bill already
            answer = self._final(i)
            b.done = True
        except EpisodeStopped:
            self._unopen(i)
            raise
        finally:
            self._t_last = time.monotonic()
        self._report("read", i, answer, True)
        return answer

    # ----------------------------------------------------------------- limits, progress
    def _check_stop(self, cost: int | None) -> None:
        """Raise ``EpisodeStopped`` if stopped, cancelled, past the deadline, or if ``cost``
        more tokens would take the bill past the cap (``None``: no tokens are billed here)."""
        if self.stopped is None and self._limits is not None:
            lim = self._limits
            if lim.cancelled is not None and lim.cancelled.is_set():
                self.stopped = CANCELLED
            elif lim.deadline is not None and time.monotonic() >= lim.deadline:
                self.stopped = DEADLINE
            elif cost is not None and lim.max_billed_tokens is not None and \
                    self.tokens_used + cost > lim.max_billed_tokens:
                self.stopped = MAX_TOKENS
        if self.stopped is not None:
            cap = self._limits.max_billed_tokens if self._limits is not None else None
            raise EpisodeStopped(self.stopped, {
                MAX_TOKENS: f"the token cap ({cap}) is reached", DEADLINE: "the deadline passed",
                CANCELLED: "the caller cancelled the episode"}[self.stopped])

    def _step_cost(self, b: LiveBranch) -> int:
        """What the next probe step of ``b`` adds to the bill: exact when it is generated
        already, else a whole interval (an upper bound)."""
        interval, k = self._interval, b.consumed + 1
        if b.finished and k == b.steps(interval):  # its final step
            return max(interval * (k - 1), len(b.ids)) - interval * (k - 1)
        return interval

    def _admit_step(self, i: int, opening: bool) -> None:
        """``EpisodeStopped`` unless the next probe step of branch ``i`` fits the limits. Its
        exact cost is known once it is generated; when less than an interval is left under
        the cap, it is generated first (kept, unbilled, if refused), so that a cap the
        controller would never reach changes nothing."""
        b = self._branches[i]
        lim = self._limits
        if (lim is not None and lim.max_billed_tokens is not None and b.consumed + 1 > b.steps(self._interval)
                and self.tokens_used + self._interval > lim.max_billed_tokens):
            self._generate(i, opening)
        self._check_stop(self._step_cost(b))

    @staticmethod
    def _read_cost(b: LiveBranch) -> int:
        """At least what reading unopened ``b`` whole bills: its length, one more while unfinished."""
        return len(b.ids) + (0 if b.finished else 1)

    def _unopen(self, i: int) -> None:
        """Undo opening branch ``i`` (the last opened) when its first action was stopped: it
        is an unopened branch again, its tokens generated ahead, not billed."""
        b = self._branches[i]
        b.mode, b.consumed, b.done = None, 0, False
        self._opened = i
        self.actions.pop()

    def _report(self, action: str, i: int, answer: str, finished: bool) -> None:
        if self._observer is not None:
            b = self._branches[i]
            self._observer(self, Progress(action, i, 1 if b.mode == READ else b.consumed, answer, finished,
                                          self.tokens_used))

    def vote(self) -> Vote:
        """The plurality (first seen breaks ties) of the final answers of the finished
        branches, else of the latest probe answer of each open branch the controller saw."""
        opened = self._branches[: self._opened]
        finals = [b.final for b in opened if b.done and b.final is not None and b.final != NO_ANSWER]
        if finals:
            return Vote(plurality(finals), dict(Counter(finals)), "final")
        latest = [b.probes[b.consumed] for b in opened
                  if b.mode == PROBE and b.consumed in b.probes and b.probes[b.consumed] != NO_ANSWER]
        if latest:
            return Vote(plurality(latest), dict(Counter(latest)), "probes")
        return Vote(None, {}, "none")

    # ------------------------------------------------------------------- internals
    def _start(self) -> None:
        if self._t_first is None:
            self._t_first = time.monotonic()

    def _open(self, mode: str) -> int:
        i = self._opened
        if i >= self._cfg.max_branches:
            raise ValueError("no unopened branch left")
        if mode == READ:
            self._check_stop(self._read_cost(self._branch(i)))
        self._start()
        self._opened = i + 1
        self._speculate = mode
        self._branch(i).mode = mode
        return i

    def _branch(self, j: int) -> LiveBranch:
        while len(self._branches) <= j:
            self._branches.append(LiveBranch())
        return self._branches[j]

    def _step(self, i: int, opening: bool) -> tuple[str, bool]:
        b = self._branches[i]
        k = b.consumed + 1
        if k > b.steps(self._interval):
            self._generate(i, opening)
        # the step is taken (and billed) once its answer is known: a stop in between leaves it untaken
        if b.finished and k == b.steps(self._interval):
            answer = self._final(i)
            b.consumed, b.done = k, True
            return answer, True
        if k not in b.probes:
            self._probe_missing(i, k)
        b.consumed = k
        return b.probes[k], False

    def _timeout(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise LiveTimeout(f"question not answered within overall_timeout ({self._cfg.overall_timeout:g} s)")
        timeout = min(self._cfg.request_timeout, left)
        if self._limits is not None and self._limits.deadline is not None:
            timeout = min(timeout, max(self._limits.deadline - time.monotonic(), 0.001))
        return timeout

    def _call(self, requests: list[GenerationRequest], kind: str, branches: Sequence[int]) -> list[Generation]:
        self._check_stop(None)  # cancelled or past the deadline: no further engine call
        timeout = self._timeout()
        cancel = self._limits.cancelled if self._limits is not None else None
        started, t0 = time.time(), time.monotonic()
        outs: list[Generation] = []
        error: str | None = None
        try:
            outs = self._backend.generate(requests, timeout, cancel)
            return outs
        except GenerationCancelled:  # the caller went away: its requests were aborted in the engine
            error = "cancelled"
            self._check_stop(None)
            raise
        except BackendUnavailable as exc:
            error = safe_text(exc)
            # the request's own deadline cut the call (the backend cancels what it sent)
            if self._limits is not None and self._limits.deadline is not None \
                    and time.monotonic() >= self._limits.deadline:
                self._check_stop(None)
            raise
        except BackendError as exc:
            error = safe_text(exc)
            raise
        finally:
            seconds = time.monotonic() - t0
            self._engine_s += seconds
            self.calls.append(EngineCall(kind, tuple(branches), started, seconds,
                                         sum(o.prompt_tokens for o in outs), sum(o.cached_tokens for o in outs),
                                         sum(len(o.token_ids) for o in outs), error))

    def _lookahead(self, i: int, opening: bool) -> list[int]:
        """Branch ``i`` and up to ``lookahead - 1`` others worth generating one interval of.

        Open probed branches with nothing buffered come first (after ``i``, in order: the
        order controllers advance them in). Branches not yet opened are generated ahead only
        when ``i`` is being opened: a controller that is advancing its open branches may
        never open another, and what it never consumes is waste.
        """
        picks = [i]
        want = self._cfg.lookahead
        if want == 1:
            return picks
        interval, n_open = self._interval, self._opened
        # open probed branches after i, in order: first those with nothing buffered, then,
        # while the call has room, those holding fewer than lookahead_depth intervals ahead
        for depth in range(1, self._cfg.lookahead_depth + 1):
            for d in range(1, n_open):
                j = (i + d) % n_open
                b = self._branches[j]
                if (b.mode == PROBE and not b.finished and j not in picks
                        and b.steps(interval) - b.consumed < depth):
                    picks.append(j)
                    if len(picks) == want:
                        return picks
        if not opening:
            return picks
        # while the controller opens branches, the next ones to open: one interval ahead
        # when it probes them, onwards to their end when it reads them whole
        for j in range(n_open, min(self._cfg.max_branches, n_open + want - 1)):
            b = self._branch(j)
            if b.finished or (self._speculate == PROBE and b.steps(interval) >= 1):
                continue
            picks.append(j)
            if len(picks) == want:
                break
        return picks

    def _generate(self, i: int, opening: bool) -> None:
        """Generate the next interval of branch ``i`` (and of its lookahead) in one call."""
        cfg, interval = self._cfg, self._interval
        picks = self._lookahead(i, opening)
        requests = []
        for j in picks:
            b = self._branches[j]
            requests.append(GenerationRequest(
                self._prompt + tuple(b.ids), min(interval, cfg.max_tokens_per_branch - len(b.ids)),
                temperature=cfg.temperature, top_p=cfg.top_p, seed=interval_seed(cfg.seed, j, len(b.ids) // interval),
                top_logprobs=cfg.top_logprobs))
        outs = self._call(requests, "generate", picks)
        self._gen_calls += 1
        needs: list[tuple[int, int]] = []
        for j, req, out in zip(picks, requests, outs):
            b = self._branches[j]
            b.ids.extend(out.token_ids)
            if cfg.top_logprobs:
                if len(out.top_logprobs) != len(out.token_ids):  # the signals need one per token
                    raise BackendError(f"the backend returned top-k logprobs for {len(out.top_logprobs)} of "
                                       f"{len(out.token_ids)} generated tokens (top_logprobs={cfg.top_logprobs})")
                b.confidence.extend(token_confidence(lps) for lps in out.top_logprobs)
            self._generated += len(out.token_ids)
            self._prompt_tokens += out.prompt_tokens
            self._cached += out.cached_tokens
            short = out.finish_reason == "length" and len(out.token_ids) < req.max_tokens  # context full
            if out.ended or short or len(b.ids) >= cfg.max_tokens_per_branch or (b.ids and b.ids[-1] in self._eos):
                b.finished = True
                answer = extract_answer(self._prompts.decode(b.ids))
                if answer != NO_ANSWER:
                    b.final = answer
                else:
                    needs.append((j, 0))
            elif self._wants_probes(b):
                needs.append((j, len(b.ids) // interval))
        if needs:
            self._probe(needs)

    def _wants_probes(self, b: LiveBranch) -> bool:
        return self._cfg.probe_reads or b.mode == PROBE or (b.mode is None and self._speculate == PROBE)

    def _probe_missing(self, i: int, k: int) -> None:
        """Probe interval ``k`` of branch ``i`` and other open branches' next missing probes."""
        needs = [(i, k)]
        interval = self._interval
        for j in range(self._opened):
            if len(needs) >= self._cfg.lookahead:
                break
            b = self._branches[j]
            nxt = b.consumed + 1
            if j != i and b.mode == PROBE and not b.done and nxt <= b.nonfinal(interval) and nxt not in b.probes:
                needs.append((j, nxt))
        self._probe(needs)

    def _final(self, i: int) -> str:
        b = self._branches[i]
        if b.final is None:
            self._probe([(i, 0)])
        return b.final  # type: ignore[return-value]

    def _probe(self, needs: list[tuple[int, int]]) -> None:
        """Probe ``(branch, k)`` pairs in one call; ``k = 0`` probes the finished branch's end.

        A probe stops at the first ``}``; when that closes an inner brace (``\\frac{1}{2}``),
        it is continued in a further call until the box closes or ``probe_tokens`` run out.
        """
        cfg, interval = self._cfg, self._interval
        prompts: list[tuple[int, ...]] = []
        for j, k in needs:
            ids = self._branches[j].ids
            if k == 0:
                body = ids[:-1] if ids and ids[-1] in self._eos else ids
            else:
                body = ids[: k * interval]
            prompts.append(self._prompt + tuple(body) + self._suffix)
        texts = [""] * len(needs)
        used = [0] * len(needs)
        todo = list(range(len(needs)))
        while todo:
            outs = self._call([GenerationRequest(prompts[n], cfg.probe_tokens - used[n], stop=("}",)) for n in todo],
                              "probe", [needs[n][0] for n in todo])
            self._probe_calls += 1
            again = []
            for n, out in zip(todo, outs):
                texts[n] += out.text
                used[n] += len(out.token_ids)
                self._probe_tokens += len(out.token_ids)
                self._prompt_tokens += out.prompt_tokens
                self._cached += out.cached_tokens
                if out.stopped_by_string and box_is_open(texts[n]) and used[n] < cfg.probe_tokens:
                    prompts[n] = prompts[n] + out.token_ids
                    again.append(n)
            todo = again
        for (j, k), text in zip(needs, texts):
            answer = probe_answer(text)
            if k == 0:
                self._branches[j].final = answer
            else:
                self._branches[j].probes[k] = answer


@dataclass(frozen=True)
class LiveResult:
    """A controller's answer to one question, with its episode and what it cost."""

    answer: str | None
    stats: LiveStats
    episode: LiveEpisode
    stopped: str | None = None
    """Why the episode was cut short (``EpisodeStopped.reason``); the answer is then its
    ``vote()``, not the controller's."""
    vote: Vote | None = None
    """The vote that answered, when stopped."""


class LiveRunner:
    """A backend, the model's prompts and the settings: answers questions with controllers.

    Thread-safe: each question gets its own episode, and the backend batches the engine
    calls of concurrent questions.
    """

    def __init__(self, config: LiveConfig, backend: GenerationBackend | None = None, prompts: ChatPrompts | None = None):
        self.config = config
        self.prompts = prompts or ChatPrompts.from_pretrained(config.tokenizer_path, config.instruction, config.probe_suffix)
        self._own_backend = backend is None
        self.backend = backend if backend is not None else make_backend(config)

    def episode(self, question: str | Sequence[Message], limits: EpisodeLimits | None = None,
                observer: Observer | None = None) -> LiveEpisode:
        return LiveEpisode(question, self.backend, self.config, self.prompts, limits, observer)

    def check_question(self, question: str) -> None:
        """``QuestionTooLong`` when ``question`` does not fit the model's context (the
        episode's own check, without generating: a collection checks every question first)."""
        self.episode(question)

    def solve(self, controller: Any, question: str | Sequence[Message], limits: EpisodeLimits | None = None,
              observer: Observer | None = None) -> LiveResult:
        """Run ``controller.solve`` on a new live episode of ``question``; when ``limits``
        stop it, the answer is the episode's ``vote()`` (see the module docstring)."""
        ep = self.episode(question, limits, observer)
        t0 = time.monotonic()
        try:
            answer = controller.solve(ep)
        except EpisodeStopped:
            if ep.stopped is None:  # not this episode's stop: not ours to answer
                raise
            answer = None
        stats = replace(ep.stats(), wall_seconds=time.monotonic() - t0)
        if ep.stopped is not None:  # even if the controller swallowed the stop and answered
            vote = ep.vote()
            return LiveResult(vote.answer, stats, ep, ep.stopped, vote)
        return LiveResult(answer, stats, ep)

    def close(self) -> None:
        if self._own_backend:
            self.backend.close()

    def __enter__(self) -> LiveRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "CANCELLED",
    "DEADLINE",
    "MAX_TOKENS",
    "EpisodeLimits",
    "EpisodeStopped",
    "EngineCall",
    "LiveBranch",
    "LiveEpisode",
    "LiveResult",
    "LiveRunner",
    "LiveStats",
    "LiveTimeout",
    "Observer",
    "Progress",
    "QuestionTooLong",
    "Vote",
    "check_prompt",
    "interval_seed",
]
