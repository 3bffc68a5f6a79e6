"""The ``Sandbox`` interface the search loop, selection and trusted scoring depend on.

FunSearch's ``implementation/evaluator.py`` pattern: callers hold an abstract sandbox, so
the executor (a local process per candidate today, a Ray cluster later) can change without
touching them. Whatever runs the code, the contract is the same (``docs/architecture.md``,
"The trust boundary"): gold answers never reach the untrusted code, costs are recomputed and
answers checked on the trusted side, every outcome records the isolation in force, and a
sandbox refuses to run under weaker isolation than its limits ask unless told otherwise.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Sequence

from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.sandbox.limits import Isolation, SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateOutcome, SandboxIsolationError


class Sandbox(ABC):
    """Runs untrusted controller source on replay data and scores it on the trusted side."""

    limits: SandboxLimits

    @abstractmethod
    def score(self, source: str, datasets: Sequence[TrajectorySet], betas: Sequence[float | None],
              seeds: Sequence[int], *, class_name: str | None = None, params: dict[str, Any] | None = None,
              full_actions: bool = False) -> CandidateOutcome:
        """Score ``source`` on every (β, dataset) over ``seeds`` (β None: the class default).

        Thread-safe. Bad arguments raise ``ValueError``; a sandbox that cannot run raises
        ``SandboxError`` (``SandboxIsolationError`` for weaker isolation than configured);
        everything the candidate does becomes ``outcome.failure``.
        """

    def parallelism(self) -> int:
        """Candidates worth scoring at once: this machine's cores (a cluster's sandbox: its CPUs)."""
        return os.cpu_count() or 1

    @abstractmethod
    def isolation(self) -> Isolation:
        """The isolation this sandbox gives on this machine, observed on a child that runs
        no candidate (for the record of a search run); never raises for weaker isolation."""

    def checked_isolation(self) -> Isolation:
        """``isolation()``, or ``SandboxIsolationError`` when it is weaker than the limits ask
        and that was not allowed: call once before a run, to fail before any candidate."""
        iso = self.isolation()
        if iso.missing and not self.limits.allow_weaker_isolation:
            raise SandboxIsolationError(iso)
        return iso
