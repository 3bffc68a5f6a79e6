import pytest

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.search.config import SearchConfig, build_config
from mlflow_autotts.search.selection import Point, pick


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("max_candidates: 7\nbetas: [0, 0.5]\ndata: [a.json, b.json]\n")
    cfg = build_config(f, {"max_candidates": 9, "seed": None})
    assert cfg.max_candidates == 9 and cfg.betas == (0.0, 0.5) and cfg.data == ("a.json", "b.json")
    assert build_config(None, {"betas": "0,1"}).betas == (0.0, 1.0)
    assert build_config(f, {"max_candidates": ""}).max_candidates == 7  # "" (an unset -P) is not given


@pytest.mark.parametrize("text, message", [
    ("max_candidates: 0\n", "max_candidates must be >= 1"),
    ("- a\n- b\n", "expected a mapping"),
    ("explorer: gpt\n", "explorer must be 'evolve' or 'openai:<model>'"),
    ("betas: [0, 2]\n", "betas must be values in [0, 1]"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_config_names_the_problem(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(AutoTTSError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        build_config(f)


def test_params_are_flat_strings():
    p = SearchConfig().params()
    assert p["betas"] == "0.0,0.2,0.4,0.6,0.8,1.0" and p["explorer"] == "evolve"


def test_pick_takes_the_cheapest_point_that_reaches_the_bar():
    pts = [Point("a", 0.0, 70.0, 100.0), Point("a", 1.0, 72.0, 300.0), Point("b", 0.5, 71.0, 90.0),
           Point("b", 0.2, 71.0, 90.0), Point("c", 0.1, 60.0, 10.0)]
    best, reached = pick(pts, 70.5)
    assert reached and (best.label, best.beta) == ("b", 0.5)  # tie on tokens and accuracy: first listed
    best, reached = pick(pts, 80.0)
    assert not reached and (best.label, best.beta) == ("a", 1.0)  # none reaches: most accurate
    assert pick([], 50.0) == (None, False)


def test_validation_data_is_a_separate_set_or_a_fixed_split(tmp_path):
    from mlflow_autotts.data.json_io import write_json
    from mlflow_autotts.search.job import split_data
    from tests.helpers import random_set

    a, b = tmp_path / "M" / "a.json", tmp_path / "M" / "b.json"
    a.parent.mkdir()
    write_json(random_set(9, 4, seed=1), a)
    write_json(random_set(3, 4, seed=2), b)
    search, validation = split_data(SearchConfig(data=(str(a),)))
    assert [len(search[0]), len(validation[0])] == [6, 3]
    assert {p.question for p in search[0].problems}.isdisjoint(p.question for p in validation[0].problems)
    search, validation = split_data(SearchConfig(data=(str(a),), validation=(str(b),)))
    assert [len(search[0]), len(validation[0])] == [9, 3] and validation[0].name == "M/b"
