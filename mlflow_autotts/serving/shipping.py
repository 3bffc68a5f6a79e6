"""What logging a controller model needs to know about serving, without importing it.

``tracking.model`` logs models from code: the entry file below is copied into each model
and executed at load time, and the model carries the ``mlflow_autotts`` modules that entry
imports (their import closure, computed by ``tracking.code_closure``) plus what its
controller runner starts by name (``runners.RunnerEntry.roots``: the sandbox worker for code
that is not built in), which no import statement reveals. The guard keeps a model from
being loaded (and so its controller source from running) in the process logging it.
This module imports neither MLflow nor the pyfunc, so logging can read it cheaply.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from mlflow_autotts.serving.runners import RUNNERS, runner_kind

ENTRY_MODULE = "mlflow_autotts.serving.pyfunc_code"
"""The models-from-code entry module (calls ``mlflow.models.set_model``)."""
ENTRY_FILE = Path(__file__).with_name("pyfunc_code.py")
"""Its file, which MLflow copies into every logged model."""


def code_roots(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The modules whose import closure a model with this ``model_config`` ships."""
    return (ENTRY_MODULE, *RUNNERS.get(runner_kind(config)).roots)


_LOADING_REFUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("autotts_loading_refused", default=False)


@contextmanager
def loading_refused() -> Iterator[None]:
    """While active, ``ControllerModel.load_context`` refuses to load: a model being logged
    must not run its controller source in the logging process."""
    token = _LOADING_REFUSED.set(True)
    try:
        yield
    finally:
        _LOADING_REFUSED.reset(token)


def is_loading_refused() -> bool:
    return _LOADING_REFUSED.get()
