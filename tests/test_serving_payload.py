"""Request parsing of the serving layer, by property: every valid trajectory round-trips in
every accepted encoding, and every malformed one is a ``TrajectoryError`` that names the
branch and field at fault, never another exception."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_autotts.serving.payload import (
    DEFAULT_INTERVAL,
    RequestError,
    TrajectoryError,
    parse_interval,
    parse_params,
    parse_trajectory,
)

answers = st.text(max_size=6)
branch = st.tuples(st.lists(answers, max_size=5), st.integers(min_value=0, max_value=10**7), answers)
trajectories = st.lists(branch.map(list), min_size=1, max_size=8)


def _objects(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for k, x in enumerate(items):
        out[k] = x
    return out


def encode(t: list, form: str):
    """``t`` (a list of [probes, tokens, final]) in one of the accepted request encodings."""
    if form == "triples":
        return t
    if form == "tuples":
        return tuple(tuple(b) for b in t)
    if form == "json":
        return json.dumps(t)
    if form == "bytes":
        return json.dumps(t).encode()
    if form in ("columns", "columns_plural"):
        finals = "final_answer" if form == "columns" else "final_answers"
        return {"probe_answers": [b[0] for b in t], "branch_tokens": [b[1] for b in t], finals: [b[2] for b in t]}
    if form == "numpy":  # what pandas gives for a Parquet list column
        return _objects([_objects([np.array(b[0], dtype=object), np.int64(b[1]), b[2]]) for b in t])
    raise AssertionError(form)


FORMS = ["triples", "tuples", "json", "bytes", "columns", "columns_plural", "numpy"]


@settings(max_examples=300, deadline=None)
@given(t=trajectories, form=st.sampled_from(FORMS), question=st.text(max_size=20),
       interval=st.integers(min_value=1, max_value=5000))
def test_any_valid_trajectory_round_trips_in_every_encoding(t, form, question, interval):
    branches = parse_trajectory(encode(t, form), question, interval)
    assert branches.triples() == t
    assert (branches.question, branches.interval_tokens, branches.n_branches) == (question, interval, len(t))


not_a_sequence = st.one_of(st.none(), st.integers(), st.text(max_size=3),
                           st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
not_a_string = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(),
                         st.lists(st.integers(), max_size=2))
bad_tokens = st.one_of(st.integers(max_value=-1), st.booleans(), st.none(), st.text(max_size=3),
                       st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
                       st.lists(st.integers(), max_size=2))


@st.composite
def malformed(draw):
    """A valid trajectory with one branch broken in one field: (trajectory, branch, field)."""
    t = draw(trajectories)
    b = draw(st.integers(min_value=0, max_value=len(t) - 1))
    kind = draw(st.sampled_from(["shape", "probes", "probe_item", "tokens", "final"]))
    br = list(t[b])
    if kind == "shape":
        bad = draw(st.one_of(not_a_sequence, st.lists(st.integers(), max_size=6).filter(lambda x: len(x) != 3)))
        field = "expected 3 fields"
    elif kind == "probes":
        br[0], bad, field = draw(not_a_sequence), None, "probe_answers must be a list"
    elif kind == "probe_item":
        k = draw(st.integers(min_value=0, max_value=len(br[0])))
        br[0] = [*br[0][:k], draw(not_a_string), *br[0][k:]]
        bad, field = None, f"probe_answers[{k}] must be a string"
    elif kind == "tokens":
        br[1], bad, field = draw(bad_tokens), None, "branch_tokens must be"
    else:
        br[2], bad, field = draw(not_a_string), None, "final_answer must be a string"
    t[b] = bad if kind == "shape" else br
    return t, b, field


@settings(max_examples=400, deadline=None)
@given(case=malformed(), form=st.sampled_from(["triples", "json"]))
def test_any_malformed_branch_is_named_by_branch_and_field(case, form):
    t, b, field = case
    value = json.dumps(t) if form == "json" else t
    with pytest.raises(TrajectoryError) as err:
        parse_trajectory(value, "q")
    assert str(err.value).startswith(f"branch {b}: ") and field in str(err.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["probe_answers", "branch_tokens", "final_answer", "final_answers", "x"]), inner, max_size=4),
    max_leaves=25)


@settings(max_examples=500, deadline=None)
@given(value=st.one_of(json_values, json_values.map(lambda v: json.dumps(v)), st.binary(max_size=20),
                       st.text(max_size=20), json_values.map(lambda v: np.array(v, dtype=object))))
def test_any_input_parses_or_raises_trajectory_error_and_nothing_else(value):
    try:
        branches = parse_trajectory(value, "q")
    except TrajectoryError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert branches.n_branches >= 1


def test_absurdly_deep_json_is_a_trajectory_error():
    with pytest.raises(TrajectoryError, match="trajectory is not valid JSON"):
        parse_trajectory("[" * 100_000, "q")


@given(value=st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.text(max_size=4)))
def test_interval_is_a_positive_integer_or_a_trajectory_error(value):
    try:
        got = parse_interval(value)
    except TrajectoryError as exc:
        assert "interval_tokens must be a positive integer" in str(exc)
    else:
        assert type(got) is int and got > 0
        assert got == (DEFAULT_INTERVAL if value is None or math.isnan(value) else value)


@pytest.mark.parametrize("params,message", [
    ({"beta": 1.5}, "invalid beta 1.5"),
    ({"shuffle_seed": "3"}, "param shuffle_seed must be an integer, got '3'"),
    ({"shuffle_seed": 2.5}, "param shuffle_seed must be an integer"),
    ({"return_actions": "false"}, "param return_actions must be true or false, got 'false'"),
    ({"mode": 7}, "param mode must be a string"),
    ({"backend": 7}, "param backend must be a string"),
    ({"mode": "live", "backend": "replay"}, "params mode='live' and backend='replay' disagree"),
])
def test_bad_params_are_request_errors_naming_the_param(params, message):
    with pytest.raises(RequestError) as err:
        parse_params(params)
    assert message in str(err.value)


def test_params_default_to_the_automatic_mode_in_the_given_order_at_the_logged_beta():
    p = parse_params(None)
    assert (p.mode, p.beta, p.shuffle_seed, p.return_actions) == ("auto", None, -1, False)
    p = parse_params({"beta": 1, "shuffle_seed": np.int64(4), "return_actions": np.bool_(True)})
    assert (p.beta, p.shuffle_seed, p.return_actions) == (1.0, 4, True)
