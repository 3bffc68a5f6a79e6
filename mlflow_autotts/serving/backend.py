"""Backends by name: what answers a request's rows (``replay``, ``live``).
``ControllerModel.predict`` looks the request's ``backend`` param up here and
never changes when a backend is added: a new backend is a module that calls
``register_backend`` and is imported by ``serving.pyfunc`` (the registry imports none).

A backend is built once per loaded model from its ``model_config`` (a live backend reads
its server and model from it, or from the environment), so building must be cheap and
must not connect anywhere; ``solve_row`` does the work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from mlflow_autotts.serving.payload import RequestParams, Row
from mlflow_autotts.serving.runners import BoundController


@dataclass(slots=True)
class RowResult:
    """One row of the response (see ``serving.pyfunc`` for the columns)."""

    answer: str | None = None
    tokens: int | None = None
    """Billed tokens."""
    branches_opened: int | None = None
    intervals: int | None = None
    error: str | None = None
    """Why this row has no answer (its own input, or its controller's failure)."""
    bad_input: bool = False
    """The row's input was malformed (when every row is, the request is a 400)."""
    actions: str | None = None
    """The actions taken, as JSON, when the request asked for them."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific columns (a live backend's generated and probe tokens, timings)."""


class Backend(Protocol):
    name: str
    required_columns: Mapping[str, str]
    """Input columns this backend needs beyond ``question``, with what they hold."""

    def solve_row(self, controller: BoundController, row: Row, request: RequestParams) -> RowResult:
        """Answer one row; bad input and ``ControllerFailed`` become the row's error."""


BackendFactory = Callable[[Mapping[str, Any]], Backend]
"""Builds a backend from a model's ``model_config``."""

_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Class or factory decorator: make ``name`` a valid value of the ``backend`` param."""
    def add(factory: BackendFactory) -> BackendFactory:
        if name in _BACKENDS:
            raise ValueError(f"backend {name!r} is already registered")
        _BACKENDS[name] = factory
        return factory
    return add


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def build_backends(config: Mapping[str, Any]) -> dict[str, Backend]:
    """Every registered backend, built for one model."""
    return {name: factory(config) for name, factory in _BACKENDS.items()}
