"""MLflow metric names for evaluations: ``<metric>.<model>.<benchmark>[.beta_<β>]``
(``docs/architecture.md``, "MLflow conventions").

MLflow accepts letters, digits, ``_ - . / space`` (and ``:`` except on Windows) in a key, at
most 250 characters, and no path tricks (``..``, leading ``/``). Dataset names are paths or
``<model>/<benchmark>``, so they are mapped to a dotted, portable form here, and distinct
names are kept distinct even when they sanitize to the same text.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

MAX_DATASET_KEY = 180
"""Longest dataset part of a key, leaving room for the metric prefix and the β suffix."""
MEAN_KEY = "mean"
"""The dataset part of the across-datasets mean (``accuracy.mean``)."""

_BAD = re.compile(r"[^A-Za-z0-9_\-. ]+")
_DOTS = re.compile(r"\.{2,}")


def sanitize_key(text: str) -> str:
    """``text`` as a portable MLflow key part: separators become dots, other odd characters
    ``_``, no empty or path-like parts."""
    s = text.replace("\\", "/").replace("/", ".")
    s = _BAD.sub("_", s)
    s = _DOTS.sub(".", s).strip(". ")
    return s or "_"


def _shorten(key: str, original: str, limit: int) -> str:
    if len(key) <= limit:
        return key
    digest = hashlib.sha256(original.encode()).hexdigest()[:8]
    return key[: limit - 9].rstrip(". ") + "-" + digest


def dataset_key(name: str) -> str:
    """The key part for one dataset name: ``Qwen3-4B/aime24`` -> ``Qwen3-4B.aime24``."""
    return _shorten(sanitize_key(name), name, MAX_DATASET_KEY)


def dataset_keys(names: Iterable[str]) -> dict[str, str]:
    """Key parts for several datasets, unique among themselves and distinct from ``mean``
    (a clash gets a short hash of the original name appended)."""
    out: dict[str, str] = {}
    taken = {MEAN_KEY}
    for name in dict.fromkeys(names):
        key = dataset_key(name)
        if key in taken:
            digest = hashlib.sha256(name.encode()).hexdigest()[:8]
            key = _shorten(key, name, MAX_DATASET_KEY - 9) + "-" + digest
        taken.add(key)
        out[name] = key
    return out


def beta_label(beta: float) -> str:
    """``beta_0.5``: Python's shortest float repr, so ``1`` and ``1.0`` give ``beta_1.0``."""
    return f"beta_{float(beta)!r}"


def metric_key(metric: str, data_key: str, beta: float | None = None) -> str:
    """``accuracy.Qwen3-4B.aime24`` or, for one β of several, ``accuracy.Qwen3-4B.aime24.beta_0.5``."""
    key = f"{metric}.{data_key}"
    return key if beta is None else f"{key}.{beta_label(beta)}"


# ------------------------------------------------------------------------------ run names
MAX_RUN_NAME = 120
"""Longest run name written (MLflow allows more; the UI's run list shows far less)."""
_RUN_BAD = re.compile(r"[^A-Za-z0-9_.+-]+")


def run_name(*parts: object) -> str:
    """A run name that says what the run did, from its parts: ``search-arithmetic-24``.
    Each part is made of letters, digits and ``_ . + -`` (anything else becomes ``_``);
    empty parts are left out; a long name is cut with a short hash of the whole."""
    clean = [_RUN_BAD.sub("_", str(p)).strip("_") for p in parts if p is not None and str(p).strip()]
    name = "-".join(p for p in clean if p)
    if len(name) <= MAX_RUN_NAME:
        return name
    return name[: MAX_RUN_NAME - 9].rstrip("-_.") + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def benchmarks(names: Iterable[str]) -> str:
    """The benchmarks of dataset names, once each and joined with ``+``: ``Qwen3-4B/aime24`` and
    ``Qwen3-8B/aime24`` give ``aime24``; a name without a model part is its file stem
    (``collected/arithmetic.parquet`` gives ``arithmetic``); a split's ``:search`` suffix is dropped."""
    out = []
    for name in names:
        base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].split(":", 1)[0]
        stem = base.rsplit(".", 1)[0] if base.endswith((".json", ".parquet")) else base
        out.append(stem or name)
    return "+".join(dict.fromkeys(out))
