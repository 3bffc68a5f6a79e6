"""Trusted numbers about controller code that is not built in: replay it in the sandbox.

``score_source`` is what ``autotts evaluate`` (a source file, a registered model's
source), promote's gate and any other command call instead of importing the code: the
candidate runs locked down, its costs are recomputed and its answers checked here, and the
results are the in-process runner's ``EvalResult``s, equal to it for honest code. A
candidate that fails raises ``CandidateFailedError`` (a ``ControllerError``: one line with
the kind, message and episode) (``docs/architecture.md``, "The trust boundary").
"""

from __future__ import annotations

from typing import Any, Sequence

from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.replay.results import EvalResult
from mlflow_autotts.sandbox.interface import Sandbox
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.process import ProcessSandbox


def score_source(source: str, datasets: Sequence[TrajectorySet], betas: Sequence[float | None],
                 seeds: Sequence[int], *, class_name: str | None = None, label: str | None = None,
                 params: dict[str, Any] | None = None, limits: SandboxLimits | None = None,
                 sandbox: Sandbox | None = None) -> list[EvalResult]:
    """Replay ``source`` on every dataset at every β (None: the class default) over ``seeds``.

    Results are in (β, dataset) order, shaped as ``replay.runner.evaluate`` shapes them:
    ``controller`` is ``label`` (default: the class's ``name``), ``beta`` is None for a
    controller that ignores β (then only the first β is reported), ``params`` is the
    controller's own ``config()`` without β, ``episodes`` holds the per-episode frame. Raises ``CandidateFailedError`` when the candidate fails,
    ``SandboxError`` when the sandbox cannot run here, ``ValueError`` on bad arguments.
    """
    box = sandbox or ProcessSandbox(limits or SandboxLimits())
    outcome = box.score(source, datasets, betas, seeds, class_name=class_name, params=params)
    outcome.raise_for_failure(label)
    results = outcome.as_eval_results(label)
    if not outcome.uses_beta:
        results = results[: len(datasets)]
    return results
