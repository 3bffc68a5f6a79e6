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
    """What a controller may call; replay and live episodes both provide it."""

    question: str
    max_branches: int
    interval_tokens: int
    tokens_used: int

    def probe_new(self) -> tuple[str, int, bool]: ...
    def probe_more(self, i: int) -> tuple[str, bool]: ...
    def get_new_branch_final_answer(self) -> str: ...


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
