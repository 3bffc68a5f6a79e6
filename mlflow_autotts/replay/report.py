"""An evaluation's results with the SC@64 baseline they are measured against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.replay.results import EvalResult


def token_reduction(result: EvalResult, baseline: EvalResult) -> float:
    """Percent fewer tokens than ``baseline`` (negative when it spends more)."""
    if baseline.mean_tokens <= 0:
        return 0.0
    return 100.0 * (1.0 - result.mean_tokens / baseline.mean_tokens)


@dataclass
class EvaluationReport:
    """What ``autotts evaluate`` produced: the controller's results per β and dataset, and
    the baselines on the same data (SC@64 always; the other reference controllers when
    several β are compared, as points for the accuracy/token plot)."""

    results: list[EvalResult]
    """The evaluated controller: one entry per (β, dataset)."""
    sc64: dict[str, EvalResult] = field(default_factory=dict)
    """SC@64 per dataset name."""
    references: list[EvalResult] = field(default_factory=list)
    """Other reference controllers (asc, esc, parallel_probe, …) per dataset."""
    trajectories: list[TrajectorySet] = field(default_factory=list)
    """The trajectory sets the results were computed on (a tracked run logs them as its
    dataset inputs: which data the numbers are about)."""

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.data for r in self.results))

    @property
    def betas(self) -> list[float | None]:
        return list(dict.fromkeys(r.beta for r in self.results))

    def reduction_vs_sc64(self, result: EvalResult) -> float | None:
        base = self.sc64.get(result.data)
        return None if base is None else token_reduction(result, base)

    def rows(self) -> list[dict[str, Any]]:
        """One summary row per result, as written to ``--output-json`` and the results table."""
        out = []
        for r in self.results:
            row = r.summary()
            red = self.reduction_vs_sc64(r)
            if red is not None:
                row["token_reduction_vs_sc64"] = red
            out.append(row)
        return out
