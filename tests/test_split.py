"""The fixed-seed search/validation split of a dataset's problems."""

from __future__ import annotations

import pytest

from mlflow_autotts.data.json_io import read_json
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.search.split import split_problems, validation_indices

MODELS = ["Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B"]


def make_set(questions: list[str], model: str = "m") -> TrajectorySet:
    problems = [Problem(Branches.from_lists(q, 500, [["1"]], [600], ["1"]), "1") for q in questions]
    return TrajectorySet(problems, Provenance(model, "bench"))


QUESTIONS = [f"question number {i}" for i in range(30)]


def test_sizes_disjoint_and_complete():
    ts = make_set(QUESTIONS)
    search, val = split_problems(ts)
    assert (len(search), len(val)) == (20, 10)
    s_q = [p.question for p in search.problems]
    v_q = [p.question for p in val.problems]
    assert not set(s_q) & set(v_q)
    assert sorted(s_q + v_q) == sorted(QUESTIONS)
    # problems keep their original order on each side
    assert s_q == [q for q in QUESTIONS if q in set(s_q)]
    assert v_q == [q for q in QUESTIONS if q in set(v_q)]


def test_names_carry_the_side():
    search, val = split_problems(make_set(QUESTIONS, "Qwen3-4B"))
    assert search.name == "Qwen3-4B/bench:search"
    assert val.name == "Qwen3-4B/bench:validation"


def test_deterministic_and_seeded():
    ts = make_set(QUESTIONS)
    assert validation_indices(ts, seed=0) == validation_indices(ts, seed=0)
    assert len({tuple(validation_indices(ts, seed=s)) for s in range(6)}) > 1


def test_a_question_lands_on_the_same_side_whatever_the_file_order():
    a = make_set(QUESTIONS)
    b = make_set(list(reversed(QUESTIONS)))
    val_a = {p.question for p in split_problems(a, seed=3)[1].problems}
    val_b = {p.question for p in split_problems(b, seed=3)[1].problems}
    assert val_a == val_b


@pytest.mark.parametrize("n, fraction, expected", [(30, 1 / 3, 10), (3, 1 / 3, 1), (2, 0.1, 1), (5, 0.0, 0), (1, 0.5, 0)])
def test_validation_size(n, fraction, expected):
    ts = make_set(QUESTIONS[:n])
    assert len(validation_indices(ts, validation_fraction=fraction)) == expected


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan"), "half"])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        validation_indices(make_set(QUESTIONS), validation_fraction=fraction)


def test_published_data_same_questions_for_every_model(data_dir):
    sides = []
    for m in MODELS:
        ts = read_json(data_dir / m / "aime24.json", Provenance(m, "aime24"))
        search, val = split_problems(ts)
        assert (len(search), len(val)) == (20, 10)
        sides.append(({p.question for p in search.problems}, {p.question for p in val.problems}))
    assert all(s == sides[0] for s in sides)


def test_three_folds_hold_out_every_problem_exactly_once_and_fold_0_is_the_default_split():
    ts = make_set(QUESTIONS)
    folds = [validation_indices(ts, seed=2, fold=k) for k in range(3)]
    assert folds[0] == validation_indices(ts, seed=2)
    assert sorted(p for f in folds for p in f) == list(range(30))
    assert [len(f) for f in folds] == [10, 10, 10]
    # the same question lands in the same fold for every model
    other = make_set(list(reversed(QUESTIONS)), "Qwen3-8B")
    for k in range(3):
        assert {ts.problems[p].question for p in folds[k]} == {
            other.problems[p].question for p in validation_indices(other, seed=2, fold=k)}
    search, val = split_problems(ts, seed=2, fold=1)
    assert {p.question for p in val.problems} == {ts.problems[p].question for p in folds[1]}
    assert len(search) == 20
    with pytest.raises(ValueError, match="fold"):
        validation_indices(ts, fold=3)
