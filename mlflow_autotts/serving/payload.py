"""Parsing a request to a served controller: its rows (question, trajectory, interval) and
its params, free of MLflow and pandas-agnostic.

Two kinds of failure, kept apart because they are answered differently:
``TrajectoryError`` is one row's bad input (that row's ``error``; the other rows are still
answered), ``RequestError`` is the request's (a missing column, a bad param: the whole
call is refused, HTTP 400). Each message names what is wrong and where ("branch 4:
branch_tokens must be >= 0"), and no input makes the parser raise anything else.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from mlflow_autotts.controllers.base import check_beta
from mlflow_autotts.data import triples
from mlflow_autotts.data.trajectory import Branches
from mlflow_autotts.data.triples import BRANCH_FIELDS, Fault, TripleRules, parse_triples
from mlflow_autotts.errors import ControllerError

DEFAULT_INTERVAL = 500
"""``interval_tokens`` of a row that does not give one (the published data's probe_freq)."""
QUESTION, TRAJECTORY, INTERVAL = "question", "trajectory", "interval_tokens"
"""The request's input columns; only ``question`` is always required."""
TRIPLE_FIELDS = BRANCH_FIELDS
AUTO_MODE = "auto"
"""The default ``mode`` param: ``replay`` for a request with a ``trajectory`` column,
``live`` (real generation) for one with questions only."""
LEGACY_MODE_PARAM = "backend"
"""The ``mode`` param's earlier name, still accepted (it is not a generation backend)."""
DEFAULT_MODE = AUTO_MODE
_SEQ = (list, tuple, np.ndarray)


class TrajectoryError(ValueError):
    """One row's input cannot be used; the message says what and where."""


class RequestError(ValueError):
    """The request as a whole is malformed (a missing column, a bad param)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One question of a request, as sent (parsed by the serving mode that answers it)."""

    question: Any
    trajectory: Any = None
    interval_tokens: Any = None


@dataclass(frozen=True)
class RequestParams:
    """The request's params, checked."""

    mode: str = DEFAULT_MODE
    """Which serving mode answers (``replay``, ``live``, or ``auto``: replay when rows bring a trajectory)."""
    beta: float | None = None
    """β for this request; None means the model's logged β."""
    shuffle_seed: int = -1
    """Branch order: ``random.Random(seed).shuffle``; negative keeps the given order."""
    return_actions: bool = False
    """Also return each row's actions (JSON), to audit or replay its bill."""


# ------------------------------------------------------------------------ params, columns
def _show(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters, so an error line stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _integer(value: Any) -> int | None:
    """``value`` as an int when it is an integer number (not a bool), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _mode(params: Mapping[str, Any]) -> str:
    """The ``mode`` param, or its legacy name ``backend`` (empty or ``auto`` means not chosen);
    both chosen and different is an error."""
    chosen = {}
    for key in ("mode", LEGACY_MODE_PARAM):
        value = params.get(key)
        if value is None or value == "" or value == AUTO_MODE:
            continue
        if not isinstance(value, str):
            raise RequestError(f"param {key} must be a string, got {_show(value)}")
        chosen[key] = value
    if len(set(chosen.values())) > 1:
        raise RequestError(f"params mode={chosen['mode']!r} and {LEGACY_MODE_PARAM}={chosen[LEGACY_MODE_PARAM]!r} "
                           "disagree; give mode only")
    return next(iter(chosen.values()), DEFAULT_MODE)


def parse_params(params: Mapping[str, Any] | None) -> RequestParams:
    """The request's params (MLflow has already applied the signature's types and defaults
    when called through pyfunc; direct calls get the same checks here)."""
    params = params or {}
    mode = _mode(params)
    beta = params.get("beta")
    if beta is not None:
        try:
            beta = check_beta(beta)
        except ControllerError as exc:
            raise RequestError(str(exc)) from None
    seed = params.get("shuffle_seed")
    if seed is None:
        seed = -1
    elif (seed := _integer(seed)) is None:
        raise RequestError(f"param shuffle_seed must be an integer, got {_show(params['shuffle_seed'])}")
    record = params.get("return_actions", False)
    if record is None:
        record = False
    if not isinstance(record, (bool, np.bool_)):
        raise RequestError(f"param return_actions must be true or false, got {_show(record)}")
    return RequestParams(mode, beta, seed, bool(record))


def request_rows(columns: Mapping[str, Sequence[Any]], n_rows: int, required: Mapping[str, str],
                 mode: str) -> list[Row]:
    """The request's rows from its columns (``DataFrame`` column name -> values).

    ``required`` maps the columns the answering mode needs beyond ``question`` to what
    they hold, for the error message."""
    if QUESTION not in columns:
        raise RequestError(f"input is missing the column {QUESTION!r} (one row per question)")
    for col, what in required.items():
        if col not in columns:
            raise RequestError(f"the {mode} mode needs the column {col!r} ({what})")
    none = [None] * n_rows
    questions = list(columns[QUESTION])
    trajectories = list(columns[TRAJECTORY]) if TRAJECTORY in columns else none
    intervals = list(columns[INTERVAL]) if INTERVAL in columns else none
    return [Row(q, t, i) for q, t, i in zip(questions, trajectories, intervals)]


# ------------------------------------------------------------------------ one row
def parse_question(value: Any) -> str:
    """The row's question text; a missing one is the empty string (replay needs none)."""
    if _is_missing(value):
        return ""
    if type(value) is not str:
        raise TrajectoryError(f"question must be a string, got {type(value).__name__}")
    return value


def parse_interval(value: Any) -> int:
    """The row's ``interval_tokens``, ``DEFAULT_INTERVAL`` when absent."""
    if _is_missing(value):
        return DEFAULT_INTERVAL
    tokens = _integer(value)
    if tokens is None or tokens <= 0:
        raise TrajectoryError(f"interval_tokens must be a positive integer, got {_show(value)}")
    return tokens


def _is_seq(value: Any) -> bool:
    return isinstance(value, _SEQ) and not (isinstance(value, np.ndarray) and value.ndim != 1)


def _triples(value: Any) -> Any:
    """The branch list of a trajectory in triple form, from any accepted encoding."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise TrajectoryError(f"trajectory is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(value, Mapping):
        finals_key = "final_answer" if "final_answer" in value else "final_answers"
        missing = [k for k in ("probe_answers", "branch_tokens", finals_key) if k not in value]
        if missing:
            raise TrajectoryError(f"trajectory columns miss {', '.join(missing)} "
                                  f"(expected {', '.join(TRIPLE_FIELDS)})")
        cols = [value["probe_answers"], value["branch_tokens"], value[finals_key]]
        for key, col in zip(TRIPLE_FIELDS, cols):
            if not _is_seq(col):
                raise TrajectoryError(f"trajectory column {key} must be a list, got {type(col).__name__}")
        lengths = {len(c) for c in cols}
        if len(lengths) != 1:
            raise TrajectoryError("trajectory columns have different lengths: "
                                  + ", ".join(f"{k}={len(c)}" for k, c in zip(TRIPLE_FIELDS, cols)))
        return list(zip(*cols))
    if not _is_seq(value):
        raise TrajectoryError("trajectory must be a list of [probe_answers, branch_tokens, final_answer] "
                              f"triples or a dict of those columns, got {type(value).__name__}")
    return value


REQUEST_TRIPLES = TripleRules(_is_seq, _integer)
"""Lists, tuples or 1-D arrays; integral numbers of any numeric type; no bound on tokens."""
_NAMED_FIRST = {triples.SHAPE: 0, triples.PROBES: 1, triples.PROBE: 1, triples.FINAL: 2}
"""Of a branch's faults, the one refused: shape, probe answers, final answer, tokens."""


def _refuse_triple(b: int, faults: list[Fault]) -> None:
    f = min(faults, key=lambda f: _NAMED_FIRST.get(f.what, 3))
    v = f.value
    if f.what == triples.SHAPE:
        why = f"expected 3 fields [{', '.join(TRIPLE_FIELDS)}], got " + (
            f"{len(v)} fields" if _is_seq(v) else type(v).__name__)
    elif f.what == triples.PROBES:
        why = f"probe_answers must be a list of strings, got {type(v).__name__}"
    elif f.what == triples.PROBE:
        why = f"probe_answers[{f.k}] must be a string, got {_show(v)}"
    elif f.what == triples.FINAL:
        why = f"final_answer must be a string, got {_show(v)}"
    elif f.what == triples.TOKENS:
        why = f"branch_tokens must be an integer, got {_show(v)}"
    else:
        why = f"branch_tokens must be >= 0, got {v}"
    raise TrajectoryError(f"branch {b}: {why}")


def parse_trajectory(value: Any, question: str, interval_tokens: int = DEFAULT_INTERVAL) -> Branches:
    """One question's branches from a request cell.

    Accepted: a list of ``[probe_answers, branch_tokens, final_answer]`` triples (the
    published form), a dict of the columns ``probe_answers``, ``branch_tokens``,
    ``final_answer`` (the Parquet form), or a JSON string of either. Sequences may be
    lists, tuples or one-dimensional numpy arrays (as pandas gives them from Parquet).
    """
    if _is_missing(value):
        raise TrajectoryError("trajectory is missing")
    branches = _triples(value)
    if len(branches) == 0:
        raise TrajectoryError("trajectory has no branches")
    flat, offsets, tokens, finals = parse_triples(branches, REQUEST_TRIPLES, _refuse_triple)
    return Branches(question, interval_tokens, flat, offsets, tokens, finals)
