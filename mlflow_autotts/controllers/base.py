"""The controller base class: one API for replay and live episodes."""

from __future__ import annotations

import inspect
import math
import operator
from typing import Any, ClassVar, Protocol

from mlflow_autotts.errors import ControllerError

MAX_BRANCHES = 64
"""The reference protocol's branch budget: SC@64 reads 64 branches, CMC and generated
controllers open at most 64."""

CONFIDENCE = "confidence"
"""Name of the per-interval signal ``signals(i)[CONFIDENCE]``: the interval's mean token
confidence (DeepConf). Defined here, below every layer that reads or writes it (controllers,
live generation, collection); ``live/signals.py`` computes it."""
GROUP_CONFIDENCE = "group_confidence"
"""Name of the per-interval signal ``signals(i)[GROUP_CONFIDENCE]``: the lowest sliding-window
mean token confidence among windows ending in the interval (DeepConf's group confidence)."""


class Episode(Protocol):
    """What a controller may call: one question, its branches opened and advanced on demand.

    Replay episodes (pre-collected branches), live episodes (generation on vLLM) and the
    sandbox's proxy all offer exactly this; the gold answer is never reachable from it.
    Costs follow the published replay rules and are counted by the episode, never by the
    controller: an *interval* is ``interval_tokens`` tokens (500 in the published data).
    Branches are numbered in the order they were opened, from 0.
    """

    question: str
    """The question's text (read-only)."""
    max_branches: int
    """How many branches the episode holds; opening one more raises ``ValueError``."""
    interval_tokens: int
    """Tokens of one interval, the unit a probe step costs."""
    tokens_used: int
    """Tokens billed so far."""

    def probe_new(self) -> tuple[str, int, bool]:
        """Open the next branch and advance it one interval.

        Returns ``(answer, branch_index, finished)``: the branch's intermediate answer after
        that interval (``"ERR"`` if none), its index for ``probe_more``, and whether it
        already ended (then ``answer`` is its final answer). Costs one interval, or the
        whole branch if it is shorter. Raises ``ValueError`` when no unopened branch is left.
        """

    def probe_more(self, i: int) -> tuple[str, bool]:
        """Advance branch ``i`` one more interval.

        Returns ``(answer, finished)``. Costs one interval; once the branch's probes are used
        up, the rest of the branch, and ``answer`` is then its final answer. On a finished
        branch it keeps returning the final answer at no cost. Raises ``ValueError`` when
        ``i`` is not an opened branch (or not an int).
        """

    def get_new_branch_final_answer(self) -> str:
        """Open the next branch and read it whole: its final answer. Costs the branch's full
        length. Raises ``ValueError`` when no unopened branch is left."""


class SignalsEpisode(Episode, Protocol):
    """An episode whose data carries per-interval signals (e.g. DeepConf's token confidence);
    episodes without them have no ``signals`` attribute (test with ``hasattr``)."""

    def signals(self, i: int) -> dict[str, list[float]]:
        """Branch ``i``'s signals so far, one value per interval it has been advanced, by
        name (``CONFIDENCE``, ``GROUP_CONFIDENCE``); free. Raises ``ValueError`` when ``i``
        is not an opened branch."""


class EpisodeFacts:
    """The read-only facts every episode offers (replay, live, the sandbox's proxy), kept in
    slots its subclass sets, so a controller cannot change them by assignment."""

    __slots__ = ("_question", "_n", "_interval")

    @property
    def question(self) -> str:
        return self._question

    @property
    def max_branches(self) -> int:
        return self._n

    @property
    def interval_tokens(self) -> int:
        return self._interval


def open_branch(i: Any, opened: int) -> int:
    """``i`` as a plain int if it names one of the ``opened`` branches, else the
    ``ValueError`` every episode (replay, live) gives for a bad branch index."""
    if isinstance(i, bool):
        raise ValueError("branch index must be an int, got bool")
    try:
        i = operator.index(i)
    except TypeError:
        raise ValueError(f"branch index must be an int, got {type(i).__name__}") from None
    if not 0 <= i < opened:
        raise ValueError(f"branch {i} is not open (open branches: 0..{opened - 1})")
    return i


def check_beta(beta: Any) -> float:
    """β as a float in [0, 1], or a ``ControllerError`` that says what is wrong."""
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise ControllerError(f"invalid beta {beta!r}: must be a number in [0, 1]") from None
    if not math.isfinite(b) or not 0.0 <= b <= 1.0:
        raise ControllerError(f"invalid beta {beta!r}: must be in [0, 1]")
    return b


class Controller:
    """Base for every controller.

    Subclasses set ``name`` (the registry key), take their parameters as keyword
    arguments of ``__init__`` (with defaults, so the signature documents them), and
    implement ``solve``. A controller must not keep state between ``solve`` calls: the
    evaluator reuses one instance for many episodes.
    """

    name: ClassVar[str] = ""
    uses_beta: ClassVar[bool] = True
    """False for controllers whose behaviour ignores β (the fixed baselines)."""

    def __init__(self, beta: float = 0.5, **params: Any):
        self.beta = check_beta(beta)
        self.params = dict(params)

    def solve(self, episode: Episode) -> str | None:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """β and the parameters, as logged to MLflow and stored in ``model_config``."""
        return {"beta": self.beta, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """The keyword parameters ``__init__`` accepts (besides β), with their defaults."""
        out: dict[str, Any] = {}
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name in ("self", "beta") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            out[p.name] = None if p.default is p.empty else p.default
        return out


def build_controller(cls: type, beta: float | None = None, params: dict[str, Any] | None = None) -> Controller:
    """Instantiate ``cls`` with checked β and parameters; bad ones raise ``ControllerError``."""
    params = dict(params or {})
    label = getattr(cls, "name", "") or cls.__name__
    sig = inspect.signature(cls.__init__)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    if not takes_any:
        known = set(cls.parameters()) if hasattr(cls, "parameters") else {
            n for n in sig.parameters if n not in ("self", "beta")}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ControllerError(
                f"controller {label!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(known)) or '(none)'}")
    kwargs = dict(params)
    if beta is not None:
        kwargs["beta"] = check_beta(beta)
    try:
        return cls(**kwargs)
    except ControllerError:
        raise
    except (TypeError, ValueError) as exc:
        raise ControllerError(f"cannot build controller {label!r} with {kwargs}: {exc}") from None
