"""The runner for served controller code that is not built in: the sandbox decides, this
process keeps the episode (``docs/architecture.md``, "The trust boundary").

Each request's episode (a replay of the row's branches, or live generation) stays in the
serving process; one ``SandboxedController`` per loaded model runs the controller in
locked-down children that send each action here to be executed, so a served candidate has no
network, files or credentials and cannot touch the bookkeeping. Every solve runs in a fresh
fork built at the request's β, so requests share no state and β never multiplies children.

What the server spends on candidates is set by the operator, never by a request
(``ServingSandbox.from_env``): at most ``children`` children (each with its one episode fork
under ``memory_mb`` of address space), stopped after ``idle_seconds`` without work; a solve
ends with its request (``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``, what ``mlflow models serve
-t`` sets) and after ``SandboxLimits.max_episode_calls`` calls.
``AUTOTTS_ALLOW_WEAKER_ISOLATION=true`` lets it run where the full isolation is not available
(e.g. not root); it is refused otherwise.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlflow_autotts.controllers.base import check_beta
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateFailedError
from mlflow_autotts.sandbox.session import IDLE_SECONDS, SandboxedController
from mlflow_autotts.serving.runners import Bound, ControllerFailed

ALLOW_WEAKER_ENV = "AUTOTTS_ALLOW_WEAKER_ISOLATION"
REQUEST_TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"
"""MLflow's scoring-server request timeout (seconds, default 60): a solve ends with its request."""


@dataclass(frozen=True)
class ServingSandbox:
    """What the serving process may spend on sandboxed controllers; read from its environment."""

    children: int = 4
    """Most sandbox children at once (``AUTOTTS_SANDBOX_CHILDREN``): concurrent solves beyond it wait."""
    memory_mb: int = 1024
    """Address space of each child and of its episode fork, MiB (``AUTOTTS_SANDBOX_MEMORY_MB``)."""
    idle_seconds: float = IDLE_SECONDS
    """A child idle this long is stopped (``AUTOTTS_SANDBOX_IDLE_SECONDS``)."""
    request_seconds: float = 60.0
    """A solve is stopped this long after its request started (``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``)."""
    allow_weaker_isolation: bool = False
    """Run where the sandbox's full isolation is not available (``AUTOTTS_ALLOW_WEAKER_ISOLATION``)."""

    ENV = {"children": "AUTOTTS_SANDBOX_CHILDREN", "memory_mb": "AUTOTTS_SANDBOX_MEMORY_MB",
           "idle_seconds": "AUTOTTS_SANDBOX_IDLE_SECONDS", "request_seconds": REQUEST_TIMEOUT_ENV}

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "ServingSandbox":
        values: dict[str, Any] = {}
        for name, var in cls.ENV.items():
            text = env.get(var, "").strip()
            if not text:
                continue
            kind = int if name in ("children", "memory_mb") else float
            try:
                value = kind(text)
            except ValueError:
                raise ControllerError(f"{var}={text!r}: must be a {'whole ' if kind is int else ''}number") from None
            if not value > 0 or value != value or value == float("inf"):
                raise ControllerError(f"{var}={text!r}: must be a positive, finite number")
            values[name] = value
        allow = env.get(ALLOW_WEAKER_ENV, "").strip().lower() in ("1", "true", "yes")
        return cls(**values, allow_weaker_isolation=allow)

    def limits(self) -> SandboxLimits:
        return SandboxLimits(memory_mb=self.memory_mb, allow_weaker_isolation=self.allow_weaker_isolation)


class _AtBeta:
    """The model's sandboxed controller at one β, for one request (its deadline)."""

    __slots__ = ("beta", "controller", "deadline")

    def __init__(self, controller: SandboxedController, beta: float, deadline: float):
        self.controller, self.beta, self.deadline = controller, beta, deadline

    def solve(self, episode: Any) -> Any:
        return self.controller.solve(episode, self.beta, self.deadline)


class SandboxRunner:
    """Runs a model's controller source in the sandbox; never imports it here."""

    def __init__(self, config: Mapping[str, Any], source_path: str | Path | None,
                 settings: ServingSandbox | None = None):
        self.label = str(config.get("controller", "?"))
        if source_path is None:
            raise ControllerError(f"controller {self.label!r}: the model has no source artifact")
        source = Path(source_path).read_text(encoding="utf-8")
        if hashlib.sha256(source.encode("utf-8")).hexdigest() != config.get("source_sha256"):
            raise ControllerError(f"controller {self.label!r}: its source does not match the recorded sha256")
        self.settings = settings or ServingSandbox.from_env()
        self.default_beta = check_beta(config.get("beta", 0.5))
        try:  # a source that does not load fails at model load time
            self.controller = SandboxedController(source, str(config["class_name"]), self.default_beta,
                                                  dict(config.get("params") or {}), self.settings.limits(),
                                                  max_children=self.settings.children,
                                                  idle_seconds=self.settings.idle_seconds)
        except CandidateFailedError as exc:
            raise ControllerError(str(exc)) from exc

    def bind(self, beta: float, deadline: float | None = None) -> Bound:
        """The controller at ``beta`` for one request: the pool is shared, the deadline is this
        request's (``autotts serve`` passes its own; ``mlflow models serve``'s is
        ``request_seconds`` from now)."""
        if deadline is None:
            deadline = time.monotonic() + self.settings.request_seconds
        at = _AtBeta(self.controller, check_beta(beta), deadline)
        # only the candidate's own failures are the row's; a backend error passes through
        return Bound(at, self.label, CandidateFailedError, str)
