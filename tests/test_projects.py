"""The ready-made recipes in ``projects/``: each file loads into its command's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_autotts import settings
from mlflow_autotts.cli.mlproject import ENTRY_POINTS
from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.evaluation import EvaluateConfig
from mlflow_autotts.search.config import SearchConfig

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "projects").rglob("*.yaml"))
SETTINGS = {"search": SearchConfig, "evaluate": EvaluateConfig, "collect": CollectConfig}
"""A recipe file is named after the command it configures."""


def test_there_are_recipes_and_each_default_config_exists():
    assert RECIPES
    for entry in ENTRY_POINTS:
        assert (ROOT / entry.default_config).is_file(), entry.name


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(ROOT)) for p in RECIPES])
def test_every_recipe_loads_into_its_settings(path):
    assert path.stem in SETTINGS, f"{path}: name a recipe after its command ({', '.join(SETTINGS)})"
    config = settings.build(SETTINGS[path.stem], path)
    given = settings.read_file(SETTINGS[path.stem], path)
    assert given and all(settings.value(config, k) == v for k, v in given.items())


def test_the_default_search_recipe_states_the_search_defaults():
    """``autotts search`` without --config runs what projects/qwen3-aime24/search.yaml says."""
    assert settings.build(SearchConfig, ROOT / "projects/qwen3-aime24/search.yaml") == SearchConfig()


def test_the_llm_recipe_uses_an_llm_explorer():
    config = settings.build(SearchConfig, ROOT / "projects/llm-local-vllm/search.yaml")
    assert config.exploration.explorer.startswith("openai:") and config.exploration != SearchConfig().exploration
