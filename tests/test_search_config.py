import pytest

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts import settings
from mlflow_autotts.search.config import SearchConfig, SelectionConfig, build_config
from mlflow_autotts.search.explorers import EXPLORERS, ExplorerConfig, explorer_kind
from mlflow_autotts.search.selection import Point, pick


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("max_candidates: 7\nbetas: [0, 0.5]\ndata: [a.json, b.json]\n")
    cfg = build_config(f, {"max_candidates": 9, "seed": None})
    assert cfg.budget.max_candidates == 9 and cfg.betas == (0.0, 0.5) and cfg.data == ("a.json", "b.json")
    assert build_config(None, {"betas": "0,1"}).betas == (0.0, 1.0)
    assert build_config(f, {"max_candidates": ""}).budget.max_candidates == 7  # "" (an unset -P) is not given


@pytest.mark.parametrize("text, message", [
    ("max_candidates: 0\n", "max_candidates must be >= 1"),
    ("- a\n- b\n", "expected a mapping"),
    ("explorer: gpt\n", "explorer must be one of evolve, openai:<model>, got 'gpt'"),
    ("explorer: 'openai:'\n", "explorer must be one of evolve, openai:<model>, got 'openai:'"),
    ("betas: [0, 2]\n", "betas must be <= 1, got (0.0, 2.0)"),
    ("split_fold: 3\n", "split_fold must be one of 0, 1, 2, got 3"),
    ("select_confidence: 1.0\n", "select_confidence must be < 1, got 1.0"),
    ("price_output: -1\n", "price_output must be >= 0, got -1.0"),
    ("llm_max_retries: -1\n", "llm_max_retries must be >= 0, got -1"),
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
    search, validation = split_data((str(a),), SelectionConfig())
    assert [len(search[0]), len(validation[0])] == [6, 3]
    assert {p.question for p in search[0].problems}.isdisjoint(p.question for p in validation[0].problems)
    search, validation = split_data((str(a),), SelectionConfig(validation=(str(b),)))
    assert [len(search[0]), len(validation[0])] == [9, 3] and validation[0].name == "M/b"


# the settings before parts were introduced, as a search run stored them (search_config.json)
OLD_STORED = {"data": ["a.json"], "validation": [], "split_seed": 1, "split_fold": 2, "explorer": "openai:m", "seed": 3,
              "max_candidates": 9, "time_budget_minutes": 5.0, "budget_usd": None, "budget_tokens": 1000,
              "price_input": 1.5, "price_output": 2.0, "population": 3, "workers": 2, "executor": "local",
              "betas": [0.0, 1.0], "search_shuffles": 4, "final_shuffles": 7, "finalists": 2, "select_margin": 1.0,
              "select_confidence": 0.9, "bootstrap_resamples": 500, "candidate_timeout_s": 30.0,
              "candidate_memory_mb": 512, "allow_weaker_isolation": True, "experiment": "e", "model_name": "m",
              "alias": "a", "log_models": False}


def test_settings_travel_in_parts_but_are_read_logged_and_stored_flat():
    cfg = build_config(None, OLD_STORED)  # an old flat search_config.json still resumes
    assert (cfg.budget.max_candidates, cfg.budget.population, cfg.budget.budget_tokens) == (9, 3, 1000)
    assert (cfg.selection.split_fold, cfg.selection.finalists, cfg.selection.select_confidence) == (2, 2, 0.9)
    assert (cfg.exploration.explorer, cfg.exploration.seed, cfg.exploration.price_input) == ("openai:m", 3, 1.5)
    assert (cfg.scoring.search_shuffles, cfg.scoring.candidate_memory_mb, cfg.workers) == (4, 512, 2)
    assert all(settings.value(cfg, k) == (tuple(v) if isinstance(v, list) else v) for k, v in OLD_STORED.items())
    params = cfg.params()
    assert set(OLD_STORED) <= set(params) and params["betas"] == "0.0,1.0" and params["max_candidates"] == 9
    assert build_config(None, settings.to_dict(cfg)) == cfg  # what a run stores now reads back the same


def test_every_llm_explorer_option_is_a_setting_and_the_key_only_by_name():
    cfg = build_config(None, {"explorer": "openai:m", "llm_temperature": "0.3", "llm_max_tokens": 100,
                              "llm_extra_body": "chat_template_kwargs={\"enable_thinking\":false}",
                              "llm_api_key_env": "MY_KEY"})
    assert cfg.exploration.llm_temperature == 0.3 and cfg.exploration.llm_max_tokens == 100
    assert cfg.exploration.llm_extra_body == {"chat_template_kwargs": {"enable_thinking": False}}
    with pytest.raises(AutoTTSError, match="llm_api_key_env must be the name of an environment variable") as err:
        build_config(None, {"llm_api_key_env": "sk-secret-123"})
    assert "sk-secret" not in str(err.value)  # a pasted key is not echoed


def test_the_explorer_setting_is_checked_against_the_registry():
    saved = EXPLORERS.snapshot()
    try:
        with pytest.raises(AutoTTSError, match="got 'mine'"):
            ExplorerConfig(explorer="mine")
        explorer_kind("mine", argument="<path>")(lambda config, refs, arg: None)
        assert ExplorerConfig(explorer="mine:x").explorer == "mine:x"
        with pytest.raises(AutoTTSError, match="must be one of evolve, mine:<path>, openai:<model>, got 'mine'"):
            ExplorerConfig(explorer="mine")
    finally:
        EXPLORERS.restore(saved)
