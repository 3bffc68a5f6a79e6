"""Serving modes by name: what answers a request's rows (``replay``: from branches the row
brings; ``live``: by generating on a generation backend). ``ControllerModel.predict`` looks
the request's ``mode`` param up in ``MODES`` and never changes when a mode is added: a new
mode is a module that registers itself and is imported by ``serving.pyfunc``.

A mode is built once per loaded model from its ``model_config`` (the live mode reads its
server and model from it, or from the environment), so building must be cheap and must not
connect anywhere; ``solve_row`` does the work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from mlflow_autotts.plugins import Registry
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
    """Mode-specific columns (the live mode's generated and probe tokens, timings)."""


class ServingMode(Protocol):
    name: str
    required_columns: Mapping[str, str]
    """Input columns this mode needs beyond ``question``, with what they hold."""

    def solve_row(self, controller: BoundController, row: Row, request: RequestParams) -> RowResult:
        """Answer one row; bad input and ``ControllerFailed`` become the row's error."""


ModeFactory = Callable[[Mapping[str, Any]], ServingMode]
"""Builds a mode from a model's ``model_config``."""

MODES: Registry[ModeFactory] = Registry("serving mode")


def register_mode(name: str) -> Callable[[ModeFactory], ModeFactory]:
    """Class or factory decorator: make ``name`` a valid value of the ``mode`` param."""
    return MODES.register(name)


def mode_names() -> list[str]:
    return MODES.names()


def build_modes(config: Mapping[str, Any]) -> dict[str, ServingMode]:
    """Every registered mode, built for one model."""
    return {name: MODES.get(name)(config) for name in MODES}
