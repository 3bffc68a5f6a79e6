"""The one seam between a served model and its controller's code: a *controller runner*.

``ControllerModel`` never builds or calls a controller itself. At load time it asks
``make_runner`` for the runner that fits where the code came from, and at request time it
asks the runner for a ``BoundController`` at the request's β, whose ``solve(episode)`` is
the only way a serving mode reaches the controller. So the trust boundary is one decision here:

- ``builtin`` (a registered controller shipped with the package): run in process;
- ``source`` (a user's file or a search candidate): in the sandbox
  (``serving.sandbox_runner.SandboxRunner``), whose children only decide while this process
  keeps the episode's bookkeeping (``docs/architecture.md``, "The trust boundary").

Runners are named by module path and imported when a model of that kind loads, so a
built-in model neither imports nor ships the sandbox.

A runner raises ``ControllerFailed`` for anything the controller does wrong, so a serving mode
turns exactly that into the row's error and lets its own bugs surface.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from mlflow_autotts.controllers.base import Controller, build_controller, check_beta
from mlflow_autotts.errors import BackendError
from mlflow_autotts.plugins import Registry
from mlflow_autotts.serving.model_config import is_builtin, spec_from_config


class ControllerFailed(Exception):
    """The controller raised (or, in the sandbox, crashed or timed out) on one episode; the
    message names the controller and what happened."""


class BoundController(Protocol):
    """A controller at one β, ready to solve episodes."""

    label: str
    beta: float

    def solve(self, episode: Any) -> Any:
        """The controller's answer on ``episode``; ``ControllerFailed`` when it fails."""


class ControllerRunner(Protocol):
    """Where and how a model's controller runs; chosen once per loaded model."""

    label: str
    """The controller's label, for messages."""
    default_beta: float
    """The logged β (what a request without ``beta`` gets)."""

    def bind(self, beta: float, deadline: float | None = None) -> BoundController:
        """The controller at ``beta`` (already checked to be in [0, 1]) for one request; a
        runner that bounds a solve's time stops it at ``deadline`` (``time.monotonic()``; None:
        its own default). Built-ins run in this process, under the episode's own limits."""


class Bound:
    """A controller (in this process or sandboxed) with the runner's error contract: the
    exceptions that are the controller's failure become ``ControllerFailed``, with the
    message ``describe`` gives; anything else (a backend's own error) passes through."""

    __slots__ = ("beta", "controller", "describe", "failures", "label", "passthrough")

    def __init__(self, controller: Any, label: str, failures: type[BaseException] | tuple[type[BaseException], ...],
                 describe: Callable[[BaseException], str],
                 passthrough: type[BaseException] | tuple[type[BaseException], ...] = ()):
        self.controller = controller
        self.label = label
        self.beta = controller.beta
        self.failures = failures
        self.describe = describe
        self.passthrough = passthrough

    def solve(self, episode: Any) -> Any:
        try:
            return self.controller.solve(episode)
        except self.passthrough:
            raise
        except self.failures as exc:  # the controller's failure is this row's, not the request's
            raise ControllerFailed(self.describe(exc)) from exc


def in_process(controller: Controller, label: str) -> Bound:
    """A controller object built in this process: what it raises is its failure, except the
    episode's own ``BackendError`` (generation down or slow), which is the server's."""
    return Bound(controller, label, Exception, lambda exc: f"controller {label!r} raised {type(exc).__name__}: {exc}",
                 passthrough=BackendError)


class InProcessRunner:
    """Builds the built-in controller in this process: the logged β once, any other β per
    request (microseconds), so requests' β values never accumulate here."""

    def __init__(self, config: Mapping[str, Any], source_path: str | Path | None):
        self.label = str(config.get("controller", "?"))
        self.spec = spec_from_config(config, source_path)
        self._cls = self.spec.controller_class()
        default = build_controller(self._cls, self.spec.beta, self.spec.params)
        self.default_beta = default.beta
        self._default = in_process(default, self.label)

    def bind(self, beta: float, deadline: float | None = None) -> Bound:
        if beta == self.default_beta:
            return self._default
        return in_process(build_controller(self._cls, check_beta(beta), self.spec.params), self.label)


RunnerFactory = Callable[[Mapping[str, Any], "str | Path | None"], ControllerRunner]

@dataclass(frozen=True)
class RunnerEntry:
    """How to reach one kind's runner without importing it here."""

    target: str
    """The runner factory as ``module:attribute``, imported by name so that a built-in model
    neither imports nor ships the sandbox."""
    roots: tuple[str, ...] = ()
    """Modules the runner starts by name (``python -m mlflow_autotts.sandbox.worker``) rather
    than imports, which a logged model of that kind must ship beside the import closure of its
    entry (``serving.shipping.code_roots``)."""


RUNNERS: Registry[RunnerEntry] = Registry("controller runner")
"""The runner of each kind of code (``runner_kind``)."""
RUNNERS.add("builtin", RunnerEntry(f"{__name__}:InProcessRunner"))
RUNNERS.add("source", RunnerEntry("mlflow_autotts.serving.sandbox_runner:SandboxRunner",
                                  ("mlflow_autotts.serving.sandbox_runner", "mlflow_autotts.sandbox.worker")))


def runner_kind(config: Mapping[str, Any]) -> str:
    """``builtin`` for a registered built-in controller, ``source`` for any other code."""
    return "builtin" if is_builtin(config) else "source"


def make_runner(config: Mapping[str, Any], source_path: str | Path | None) -> ControllerRunner:
    """The runner for a model's ``model_config`` and its downloaded source file."""
    module, _, attr = RUNNERS.get(runner_kind(config)).target.partition(":")
    # by name: a built-in model neither imports nor ships the sandbox (see the module docstring)
    factory: RunnerFactory = getattr(importlib.import_module(module), attr)
    return factory(config, source_path)
