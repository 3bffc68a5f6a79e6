"""The one result record of a replay evaluation and the two formulas every caller shares.

``EvalResult`` is what the in-process runner, the sandbox's trusted side, the search's
scoring, selection and the promotion gate all produce and read; ``shuffle_means`` is the
protocol's aggregation (mean over shuffles of the share correct and of the mean tokens per
problem), and ``mean_over_datasets`` the one way several datasets are summarised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np


@dataclass
class EvalResult:
    """One controller configuration on one dataset (at one β): what the runner, the
    sandbox, the search's scores, selection and the gate all report."""

    data: str
    """Dataset name."""
    beta: float | None
    """β, or None for a controller that ignores it."""
    accuracy: float
    """Mean over shuffles of the share answered correctly, in percent (unrounded)."""
    mean_tokens: float
    """Mean over shuffles of the mean tokens per problem."""
    controller: str = ""
    """The controller's label."""
    params: dict[str, Any] = field(default_factory=dict)
    """The controller's parameters other than β."""
    shuffles: int = 0
    """Runs averaged over."""
    n_problems: int = 0
    """Problems in the dataset."""
    episodes: Any = field(default=None, repr=False, compare=False)
    """Per-episode table (pandas DataFrame), when kept; never serialised."""

    def summary(self) -> dict[str, Any]:
        return {"data": self.data, "controller": self.controller, "beta": self.beta,
                "accuracy": self.accuracy, "mean_tokens": self.mean_tokens, "shuffles": self.shuffles}

    def to_dict(self) -> dict[str, Any]:
        """Everything but the episodes, as plain JSON values (search runs store these)."""
        return {"data": self.data, "beta": self.beta, "accuracy": self.accuracy, "mean_tokens": self.mean_tokens,
                "controller": self.controller, "params": self.params, "shuffles": self.shuffles,
                "n_problems": self.n_problems}


def shuffle_means(per_shuffle: Iterable[tuple[int, int]], n_problems: int) -> tuple[float, float]:
    """(accuracy %, mean tokens per problem) from ``(correct, tokens)`` sums per shuffle.

    The exact float operations of the reference evaluator, in its order, so every caller
    (runner, sandbox) reports identical numbers."""
    if not n_problems:
        return 0.0, 0.0
    blocks = list(per_shuffle)
    accs = [c / n_problems for c, _ in blocks]
    costs = [t / n_problems for _, t in blocks]
    return 100 * float(np.mean(accs)), sum(costs) / len(costs)


def by_beta(results: Iterable[EvalResult]) -> dict[float | None, list[EvalResult]]:
    """Results grouped by β, in ascending β (None first)."""
    groups: dict[float | None, list[EvalResult]] = {}
    for r in results:
        groups.setdefault(r.beta, []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0.0)))


def mean_over_datasets(results: Sequence[Any]) -> tuple[float, float]:
    """(mean accuracy, mean of mean tokens) over ``results`` (one per dataset), each dataset
    weighted equally."""
    if not results:
        raise ValueError("mean_over_datasets needs at least one result")
    n = len(results)
    return sum(r.accuracy for r in results) / n, sum(r.mean_tokens for r in results) / n
