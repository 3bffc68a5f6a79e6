"""The runner for served controller code that is not built in: the sandbox decides, this
process keeps the episode (``docs/architecture.md``, "The trust boundary").

Each request's episode (a replay of the row's branches, or live generation) stays in the
serving process; ``SandboxedController`` runs the controller in locked-down children that
send each action here to be executed, so a served candidate has no network, files or
credentials and cannot touch the bookkeeping. One pool of children per β amortises their
start-up across requests. ``AUTOTTS_ALLOW_WEAKER_ISOLATION=true`` at serve time lets it run
where the full isolation is not available (e.g. not root); it is refused otherwise.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Mapping

from mlflow_autotts.controllers.base import check_beta
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateFailedError
from mlflow_autotts.sandbox.session import SandboxedController
from mlflow_autotts.serving.runners import Bound, ControllerFailed

ALLOW_WEAKER_ENV = "AUTOTTS_ALLOW_WEAKER_ISOLATION"


def serving_limits() -> SandboxLimits:
    """Sandbox limits for serving, from the serving process's environment (never a request)."""
    allow = os.environ.get(ALLOW_WEAKER_ENV, "").strip().lower() in ("1", "true", "yes")
    return SandboxLimits(allow_weaker_isolation=allow)


class SandboxRunner:
    """Runs a model's controller source in the sandbox; never imports it here."""

    def __init__(self, config: Mapping[str, Any], source_path: str | Path | None):
        self.label = str(config.get("controller", "?"))
        if source_path is None:
            raise ControllerError(f"controller {self.label!r}: the model has no source artifact")
        self.source = Path(source_path).read_text(encoding="utf-8")
        digest = hashlib.sha256(self.source.encode("utf-8")).hexdigest()
        if digest != config.get("source_sha256"):
            raise ControllerError(f"controller {self.label!r}: its source does not match the recorded sha256")
        self.class_name = str(config["class_name"])
        self.params = dict(config.get("params") or {})
        self.default_beta = check_beta(config.get("beta", 0.5))
        self.limits = serving_limits()
        self._lock = threading.Lock()
        self._bound: dict[float, Bound] = {}
        self.bind(self.default_beta)  # a source that does not load fails at model load time

    def bind(self, beta: float) -> Bound:
        with self._lock:
            bound = self._bound.get(beta)
            if bound is None:
                try:
                    ctrl = SandboxedController(self.source, self.class_name, beta, self.params, self.limits)
                except CandidateFailedError as exc:
                    raise ControllerFailed(str(exc)) from exc
                # only the candidate's own failures are the row's; a backend error passes through
                bound = self._bound[beta] = Bound(ctrl, self.label, CandidateFailedError, str)
            return bound
