"""``ControllerModel``: a logged controller behind MLflow's pyfunc interface.

The model is logged *from code* (``pyfunc_code.py`` calls ``mlflow.models.set_model``), so
nothing is pickled: what makes one model differ from another is its ``model_config``
(``serving.model_config``) and its source artifact. ``load_context`` picks the controller
runner (``serving.runners``: where the code runs) and builds the backends
(``serving.backend``: what answers a row); ``predict`` only parses, dispatches and
assembles, so a new runner or backend plugs in without touching it.

``predict`` takes one row per question and returns one row per question: ``answer``,
``tokens`` (billed), ``branches_opened``, ``intervals``, ``error``, ``actions`` when asked
for, and any backend-specific columns. Bad input in a row is reported in that row's
``error``; only when *every* row is bad, or the request itself is (a missing column, an
unknown backend, a bad param), the call fails with ``MlflowException(INVALID_PARAMETER_VALUE)``,
which the scoring server turns into HTTP 400 with the message.

No ``from __future__ import annotations`` here: MLflow reads ``predict``'s type hints at
class creation, and ``pd.DataFrame`` must be a real type for it to skip hint-based checks.
"""

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from mlflow_autotts.serving import live_backend, replay_backend  # noqa: F401  (register "live" and "replay")
from mlflow_autotts.serving.backend import Backend, RowResult, build_backends
from mlflow_autotts.serving.model_config import SOURCE_ARTIFACT, is_controller_config
from mlflow_autotts.serving.payload import (
    AUTO_BACKEND,
    INTERVAL,
    QUESTION,
    TRAJECTORY,
    RequestError,
    parse_params,
    request_rows,
)
from mlflow_autotts.serving.runners import ControllerRunner, make_runner
from mlflow_autotts.serving.shipping import is_loading_refused

OUTPUT_COLUMNS = ("answer", "tokens", "branches_opened", "intervals", "error")
"""The response's columns, in order (then ``actions`` when asked for, then extras)."""


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class ControllerModel(PythonModel):
    """A controller behind the pyfunc interface; see the module docstring for the contract."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.runner: ControllerRunner | None = None
        self._backends: dict[str, Backend] = {}

    # ------------------------------------------------------------------ loading
    def load_context(self, context) -> None:
        if is_loading_refused():
            raise MlflowException("refusing to load a controller model while logging it: that would run its source "
                                  "in the logging process")
        config = dict(context.model_config or {})
        if not is_controller_config(config):
            raise MlflowException("this model's model_config does not describe an autotts controller")
        self.setup(config, (context.artifacts or {}).get(SOURCE_ARTIFACT))

    def setup(self, config: Mapping[str, Any], source_path: "str | Path | None") -> None:
        """Choose the runner and build the backends from a model config (also used without
        MLflow's loader, e.g. in tests and benchmarks)."""
        self.config = dict(config)
        self.runner = make_runner(self.config, source_path)
        self._backends = build_backends(self.config)

    @property
    def backends(self) -> list[str]:
        return sorted(self._backends)

    # --------------------------------------------------------------- prediction
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        try:
            request = parse_params(params)
            if request.backend == AUTO_BACKEND:  # rows that bring their branches are replayed, others generated
                has_branches = TRAJECTORY in model_input.columns and model_input[TRAJECTORY].notna().any()
                request = replace(request, backend="replay" if has_branches else "live")
            backend = self._backends.get(request.backend)
            if backend is None:
                raise RequestError(f"unknown backend {request.backend!r}; valid backends: {', '.join(self.backends)}")
            wanted = {QUESTION, TRAJECTORY, INTERVAL, *backend.required_columns}
            columns = {c: model_input[c].tolist() for c in model_input.columns if c in wanted}
            rows = request_rows(columns, len(model_input), backend.required_columns, backend.name)
        except RequestError as exc:
            raise _bad_request(str(exc)) from None
        controller = self.runner.bind(self.runner.default_beta if request.beta is None else request.beta)
        solve_rows = getattr(backend, "solve_rows", None)  # a backend may answer rows concurrently
        results = solve_rows(controller, rows, request) if solve_rows else [
            backend.solve_row(controller, row, request) for row in rows]
        return _response(results, request.return_actions)


def _response(rows: list[RowResult], record: bool) -> pd.DataFrame:
    bad = [(k, r.error) for k, r in enumerate(rows) if r.bad_input]
    if bad and len(bad) == len(rows):
        shown = "; ".join(f"row {k}: {e}" for k, e in bad[:5])
        more = f" (and {len(bad) - 5} more rows)" if len(bad) > 5 else ""
        raise _bad_request(f"no row could be answered: {shown}{more}")
    failed = any(r.error is not None for r in rows)
    ints = (lambda v: pd.array(v, dtype="Int64")) if failed else (lambda v: np.array(v, dtype=np.int64))
    data: dict[str, Any] = {
        "answer": _texts([r.answer for r in rows]),
        "tokens": ints([r.tokens for r in rows]),
        "branches_opened": ints([r.branches_opened for r in rows]),
        "intervals": ints([r.intervals for r in rows]),
        "error": _texts([r.error for r in rows]),
    }
    if record:
        data["actions"] = _texts([r.actions for r in rows])
    for key in dict.fromkeys(k for r in rows for k in r.extra):
        data[key] = pd.Series([r.extra.get(key) for r in rows], dtype=object)
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)), copy=False)  # fresh arrays: nothing to copy


def _texts(values: list[str | None]) -> Any:
    """A text column that keeps None as None: pandas 3 turns a mix of str and None into a
    str column with NaN, which the scoring server would write as an invalid JSON ``NaN``."""
    if None in values and any(v is not None for v in values):
        return pd.Series(values, dtype=object)
    return np.array(values, dtype=object)  # cheaper; all-str or all-None never meets NaN
