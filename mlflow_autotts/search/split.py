"""The fixed-seed search/validation split of a dataset's problems.

Selection must not use the data the explorer searched on, so each dataset's problems are
split into a search part (seen by explorers) and a validation part (used only to pick the
winner). A problem's side is decided by a seeded hash of its *question text*, not its
position: the same question lands on the same side for every model's trajectory set, so
no question is searched on with one model and validated on with another, and reordering
a file does not move problems between sides.
"""

from __future__ import annotations

import hashlib
import math

from mlflow_autotts.data.trajectory import TrajectorySet

SEARCH_SUFFIX = ":search"
VALIDATION_SUFFIX = ":validation"


def _rank_key(seed: int, question: str, position: int) -> tuple[str, int]:
    digest = hashlib.sha256(f"{seed}\x00{question}".encode("utf-8")).hexdigest()
    return digest, position  # position breaks ties between identical questions


def validation_indices(ts: TrajectorySet, seed: int = 0, validation_fraction: float = 1 / 3,
                       fold: int = 0) -> list[int]:
    """Positions (ascending) of the problems that go to validation.

    ``round(n * validation_fraction)`` problems, at least one of each side when ``n >= 2``
    and the fraction is strictly between 0 and 1. ``fold`` k takes the k-th such block of
    the seeded ranking instead of the first, so folds 0, 1, … (up to 1 / fraction of them)
    hold out disjoint problems: a cross-validation that uses every problem once.
    """
    if not isinstance(validation_fraction, (int, float)) or not math.isfinite(validation_fraction) \
            or not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    folds = max(1, int(round(1 / validation_fraction))) if validation_fraction > 0 else 1
    if not isinstance(fold, int) or not 0 <= fold < folds:
        raise ValueError(f"fold must be an integer in [0, {folds - 1}] for validation_fraction "
                         f"{validation_fraction:g}, got {fold!r}")
    n = len(ts)
    k = int(round(n * validation_fraction))
    if validation_fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    ranked = sorted(range(n), key=lambda p: _rank_key(seed, ts.problems[p].question, p))
    if fold == 0:
        return sorted(ranked[:k])
    start, stop = round(fold * n / folds), round((fold + 1) * n / folds)
    return sorted(ranked[start:stop] if fold < folds - 1 else ranked[start:])


def split_problems(ts: TrajectorySet, seed: int = 0, validation_fraction: float = 1 / 3,
                   fold: int = 0) -> tuple[TrajectorySet, TrajectorySet]:
    """``(search, validation)`` subsets of ``ts``, named with ``:search`` / ``:validation``.

    Deterministic in ``seed``, ``fold`` and the questions; problems keep their original order.
    """
    val = validation_indices(ts, seed, validation_fraction, fold)
    chosen = set(val)
    search = [p for p in range(len(ts)) if p not in chosen]
    return ts.subset(search, SEARCH_SUFFIX), ts.subset(val, VALIDATION_SUFFIX)
