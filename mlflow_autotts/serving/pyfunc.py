"""``ControllerModel``: a logged controller behind MLflow's pyfunc interface.

The model is logged *from code* (``pyfunc_code.py`` calls ``mlflow.models.set_model``), so
nothing is pickled: what makes one model differ from another is its ``model_config``
(``serving.model_config``) and its source artifact. ``load_context`` picks the controller
runner (``serving.runners``: where the code runs) and builds the serving modes
(``serving.modes``: what answers a row); ``predict`` only parses, dispatches and
assembles, so a new runner or mode plugs in without touching it.

Before any of the model's config or source is used, ``load_context`` checks the model's
folder against the digest recorded at registration (``serving.integrity``, ``verify_served``)
and the live API-key variable against the operator's allowlist (``serving.live_policy``); a
built-in must be a name in the built-in registry (``model_config.is_builtin``). What these
checks inside the loaded model can and cannot protect: ``docs/architecture.md``, "The trust
boundary".

``predict`` takes one row per question and returns one row per question: ``answer``,
``tokens`` (billed), ``branches_opened``, ``intervals``, ``error``, ``actions`` when asked
for, and any mode-specific columns (all declared in ``serving/columns.py``, which the logged
signature lists). Bad input in a row is reported in that row's
``error``; only when *every* row is bad, or the request itself is (a missing column, an
unknown mode, a bad param), the call fails with ``MlflowException(INVALID_PARAMETER_VALUE)``,
which the scoring server turns into HTTP 400 with the message.

No ``from __future__ import annotations`` here: MLflow reads ``predict``'s type hints at
class creation, and ``pd.DataFrame`` must be a real type for it to skip hint-based checks.
"""

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from mlflow_autotts.errors import first_line
from mlflow_autotts.serving import live_mode, replay_mode  # noqa: F401  (register "live" and "replay")
from mlflow_autotts.serving.columns import ACTIONS_COLUMN
from mlflow_autotts.serving.modes import RowResult, ServingMode, build_modes
from mlflow_autotts.serving.integrity import EXPECTED_DIGEST_ENV, LOCAL_ONLY, MODEL_DIGEST_TAG, verify
from mlflow_autotts.serving.live_policy import check_api_key_env
from mlflow_autotts.serving.model_config import SOURCE_ARTIFACT, is_builtin, is_controller_config
from mlflow_autotts.serving.payload import (
    AUTO_MODE,
    INTERVAL,
    QUESTION,
    TRAJECTORY,
    RequestError,
    parse_params,
    request_rows,
)
from mlflow_autotts.serving.runners import ControllerRunner, make_runner
from mlflow_autotts.serving.shipping import is_loading_refused

_log = logging.getLogger(__name__)
REGISTERED_META = next(iter(LOCAL_ONLY))
"""What MLflow writes into a model it downloads from the registry: the name and version."""


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class ControllerModel(PythonModel):
    """A controller behind the pyfunc interface; see the module docstring for the contract."""

    def __init__(self, model_dir: "str | Path | None" = None) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else None
        """The loaded model's folder (the entry file's), checked at load; None: not checked."""
        self.config: dict[str, Any] = {}
        self.runner: ControllerRunner | None = None
        self._modes: dict[str, ServingMode] = {}

    # ------------------------------------------------------------------ loading
    def load_context(self, context) -> None:
        if is_loading_refused():
            raise MlflowException("refusing to load a controller model while logging it: that would run its source "
                                  "in the logging process")
        if self.model_dir is not None:
            verify_served(self.model_dir)
        config = dict(context.model_config or {})
        if not is_controller_config(config):
            raise MlflowException("this model's model_config does not describe an autotts controller")
        self.setup(config, (context.artifacts or {}).get(SOURCE_ARTIFACT))

    def setup(self, config: Mapping[str, Any], source_path: "str | Path | None") -> None:
        """Choose the runner and build the serving modes from a model config (also used without
        MLflow's loader, e.g. in tests and benchmarks). The config's claims are checked first:
        a built-in must be a registry name, the API-key variable one the operator allowed."""
        is_builtin(config)  # refuses a registry_name that is not a built-in's
        check_api_key_env(config)
        self.config = dict(config)
        self.runner = make_runner(self.config, source_path)
        self._modes = build_modes(self.config)

    @property
    def modes(self) -> list[str]:
        return sorted(self._modes)

    def mode(self, name: str) -> ServingMode:
        """The serving mode ``name`` built at load (``KeyError`` when this model has none)."""
        return self._modes[name]

    # --------------------------------------------------------------- prediction
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        try:
            request = parse_params(params)
            if request.mode == AUTO_MODE:  # rows that bring their branches are replayed, others generated
                has_branches = TRAJECTORY in model_input.columns and model_input[TRAJECTORY].notna().any()
                request = replace(request, mode="replay" if has_branches else "live")
            mode = self._modes.get(request.mode)
            if mode is None:
                raise RequestError(f"unknown mode {request.mode!r}; valid modes: {', '.join(self.modes)}")
            wanted = {QUESTION, TRAJECTORY, INTERVAL, *mode.required_columns}
            columns = {c: model_input[c].tolist() for c in model_input.columns if c in wanted}
            rows = request_rows(columns, len(model_input), mode.required_columns, mode.name)
        except RequestError as exc:
            raise _bad_request(str(exc)) from None
        controller = self.runner.bind(self.runner.default_beta if request.beta is None else request.beta)
        solve_rows = getattr(mode, "solve_rows", None)  # a mode may answer rows concurrently
        results = solve_rows(controller, rows, request) if solve_rows else [
            mode.solve_row(controller, row, request) for row in rows]
        return _response(results, request.return_actions)


def expected_digest(model_dir: Path) -> str | None:
    """The digest this serving process expects of ``model_dir``, from the operator or the
    tracking store, never from the folder alone: ``AUTOTTS_MODEL_SHA256``; else, when MLflow
    downloaded the model from the registry (it writes the name and version beside it), that
    version's tag (unreadable: refused); else the tag of the logged model its ``MLmodel``
    names (the digest covers that file, so only that model's own files can match), when the
    store knows it; else None (nothing to check against)."""
    pinned = os.environ.get(EXPECTED_DIGEST_ENV, "").strip()
    if pinned:
        return pinned
    client = MlflowClient()
    meta = model_dir / REGISTERED_META
    registered = _yaml(meta) if meta.is_file() else {}
    if registered.get("model_name") and registered.get("model_version") is not None:
        try:
            version = client.get_model_version(str(registered["model_name"]), str(registered["model_version"]))
        except Exception as exc:  # no registry here: unverifiable, so refused
            raise MlflowException(f"cannot read the digest recorded for registered model "
                                  f"{registered['model_name']} version {registered['model_version']} "
                                  f"({MODEL_DIGEST_TAG}): {_first_line(exc)}; set {EXPECTED_DIGEST_ENV} to the "
                                  "digest to check against") from None
        return version.tags.get(MODEL_DIGEST_TAG) or ""
    model_id = _yaml(model_dir / "MLmodel").get("model_id")
    if not model_id:
        return None
    try:
        return client.get_logged_model(str(model_id)).tags.get(MODEL_DIGEST_TAG) or ""
    except Exception:  # not in this tracking store: a folder the operator chose, unchecked
        return None


def _yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MlflowException(f"unreadable model file {path.name}: {_first_line(exc)}") from None
    return loaded if isinstance(loaded, dict) else {}


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"


def verify_served(model_dir: Path) -> None:
    """Refuse a served model whose folder differs from the digest recorded at registration.

    Runs inside the loaded model, so it holds only while the model's own entry and package
    are intact (``docs/architecture.md``, "The trust boundary"). A folder with no recorded
    digest to compare (see ``expected_digest``) cannot be checked: a warning says so. ``__pycache__`` folders are left out (this process writes them)."""
    expected = expected_digest(model_dir)
    if expected is None:
        _log.warning("serving a controller model whose files are not checked against a recorded digest "
                     "(not known to this tracking store, %s unset): %s", EXPECTED_DIGEST_ENV, model_dir)
        return
    verify(model_dir, expected, f"controller model at {model_dir}", skip_bytecode=True)


def _response(rows: list[RowResult], record: bool) -> pd.DataFrame:
    bad = [(k, r.error) for k, r in enumerate(rows) if r.bad_input]
    if bad and len(bad) == len(rows):
        shown = "; ".join(f"row {k}: {e}" for k, e in bad[:5])
        more = f" (and {len(bad) - 5} more rows)" if len(bad) > 5 else ""
        raise _bad_request(f"no row could be answered: {shown}{more}")
    failed = any(r.error is not None for r in rows)
    ints = (lambda v: pd.array(v, dtype="Int64")) if failed else (lambda v: np.array(v, dtype=np.int64))
    data: dict[str, Any] = {  # the order of columns.ROW_COLUMNS
        "answer": _texts([r.answer for r in rows]),
        "tokens": ints([r.tokens for r in rows]),
        "branches_opened": ints([r.branches_opened for r in rows]),
        "intervals": ints([r.intervals for r in rows]),
        "error": _texts([r.error for r in rows]),
    }
    if record:
        data[ACTIONS_COLUMN] = _texts([r.actions for r in rows])
    for key in dict.fromkeys(k for r in rows for k in r.extra):
        data[key] = pd.Series([r.extra.get(key) for r in rows], dtype=object)
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)), copy=False)  # fresh arrays: nothing to copy


def _texts(values: list[str | None]) -> Any:
    """A text column that keeps None as None: pandas 3 turns a mix of str and None into a
    str column with NaN, which the scoring server would write as an invalid JSON ``NaN``."""
    if None in values and any(v is not None for v in values):
        return pd.Series(values, dtype=object)
    return np.array(values, dtype=object)  # cheaper; all-str or all-None never meets NaN
