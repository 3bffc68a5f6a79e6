"""The MLproject entry points: generated from the settings, and run for real with
``mlflow run --env-manager local``."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlflow_autotts import settings
from mlflow_autotts.cli.main import main
from mlflow_autotts.cli.mlproject import ENTRY_POINTS, render
from mlflow_autotts.data.json_io import write_json
from mlflow_autotts.search.config import SearchConfig
from tests.helpers import mlflow_env, random_set
from tests.openai_stub import VALID_CONTROLLER, OpenAIStub, StubReply, fenced

ROOT = Path(__file__).resolve().parent.parent
LLM_RECIPE = "projects/llm-local-vllm/search.yaml"


def entry_command(entry: str, params: dict[str, str]) -> list[str]:
    """The command line ``mlflow run -e entry -P k=v…`` executes, as MLflow computes it."""
    from mlflow.projects._project_spec import load_project

    command = load_project(str(ROOT)).get_entry_point(entry).compute_command(params, None)
    return shlex.split(command)


def test_mlproject_is_generated_from_the_settings():
    assert (ROOT / "MLproject").read_text(encoding="utf-8") == render(), \
        "MLproject is out of date: run python -m mlflow_autotts.cli.mlproject"
    spec = yaml.safe_load((ROOT / "MLproject").read_text(encoding="utf-8"))
    assert set(spec["entry_points"]) == {e.name for e in ENTRY_POINTS}
    for entry in ENTRY_POINTS:
        params = spec["entry_points"][entry.name]["parameters"]
        exposed = [n for n in settings.names(entry.settings) if n not in entry.exclude]
        assert list(params) == ["config", *exposed]
        assert all(params[n]["default"] == "" for n in exposed)  # "" = not given
        assert params["config"]["default"] == entry.default_config


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[e.name for e in ENTRY_POINTS])
def test_mlflow_run_without_params_runs_the_default_recipe(entry):
    args = entry_command(entry.name, {})
    assert args[:2] == ["autotts", entry.name]
    r = CliRunner().invoke(main, [*args[1:], "--print-config"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout) == settings.to_dict(settings.build(entry.settings, ROOT / entry.default_config))


def test_mlflow_run_passes_only_what_p_gives_so_the_recipe_is_not_overridden(tmp_path):
    args = entry_command("search", {"config": str(ROOT / LLM_RECIPE), "search_shuffles": "3"})
    r = CliRunner().invoke(main, [*args[1:], "--print-config"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    recipe = settings.build(SearchConfig, ROOT / LLM_RECIPE)
    assert yaml.safe_load(r.stdout) == {**settings.to_dict(recipe), "search_shuffles": 3}


@pytest.mark.slow
def test_mlflow_run_evaluate(mlflow_store, data_dir):
    from mlflow.tracking import MlflowClient

    p = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", "evaluate", "--env-manager", "local",
         "--experiment-name", "autotts-evaluate",
         "-P", "data=autotts:Qwen3-4B/aime24,autotts:Qwen3-8B/aime24", "-P", "beta=0.25,0.5", "-P", "shuffles=5"],
        capture_output=True, text=True, env=mlflow_env(mlflow_store, data_dir), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("autotts-evaluate")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    # mlflow run made up a name; the run is named after what it did, its experiment declared model training
    assert runs[0].info.run_name == "evaluate-cmc-aime24"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    metrics = runs[0].data.metrics
    assert 70 < metrics["accuracy.Qwen3-4B.aime24.beta_0.5"] <= 100
    assert metrics["token_reduction_vs_sc64.Qwen3-8B.aime24.beta_0.25"] > 50
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"results.json", "episodes.parquet", "accuracy_vs_tokens.png"} <= artifacts


@pytest.mark.slow
def test_mlflow_run_search_leaves_a_challenger(mlflow_store, data_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    small = tmp_path / "small.yaml"
    small.write_text("data: [autotts:Qwen3-4B/aime24, autotts:Qwen3-8B/aime24]\npopulation: 2\nsearch_shuffles: 2\n"
                     "final_shuffles: 3\nfinalists: 1\nbetas: [0.0, 1.0]\n")
    p = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", "search", "--env-manager", "local",
         "--experiment-name", "autotts-search", "--run-name", "my-small-search", "-P", f"config={small}",
         "-P", "max_candidates=3"],
        capture_output=True, text=True, env=mlflow_env(mlflow_store, data_dir), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    client = MlflowClient(mlflow_store)
    version = client.get_model_version_by_alias("autotts-controller", "challenger")
    parent = client.get_run(version.run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["max_candidates"] == "3"
    assert parent.info.run_name == "my-small-search"  # a name given to mlflow run is kept
    assert "search:" in p.stderr  # the progress bar


@pytest.mark.slow
def test_mlflow_run_search_with_the_llm_recipe_runs_its_explorer_and_candidate_count(mlflow_store, tmp_path):
    """The recipe's explorer and max_candidates reach the search; -P only shrinks data and shuffles."""
    from mlflow.tracking import MlflowClient

    recipe = yaml.safe_load((ROOT / LLM_RECIPE).read_text(encoding="utf-8"))
    data = tmp_path / "Synth" / "toy.json"
    data.parent.mkdir()
    write_json(random_set(n_problems=6, n_branches=16, seed=3), data)
    replies = [StubReply(fenced(VALID_CONTROLLER), prompt_tokens=900, completion_tokens=300)] * (
        2 * recipe["max_candidates"])
    with OpenAIStub(replies) as stub:
        env = mlflow_env(mlflow_store, OPENAI_BASE_URL=stub.base_url, OPENAI_API_KEY="test")
        p = subprocess.run(
            [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", "search", "--env-manager", "local",
             "--experiment-name", "autotts-search", "-P", f"config={LLM_RECIPE}", "-P", f"data={data}",
             "-P", "betas=0,1", "-P", "search_shuffles=2", "-P", "final_shuffles=2", "-P", "finalists=1",
             "-P", "workers=2", "-P", "log_models=false"],
            capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
        requests = stub.chat_requests
    assert p.returncode == 0, p.stderr[-3000:]
    client = MlflowClient(mlflow_store)
    [parent] = client.search_runs([client.get_experiment_by_name("autotts-search").experiment_id],
                                  filter_string="tags.`autotts.command` = 'search'")
    assert parent.info.run_name == f"search-toy-{recipe['max_candidates']}"  # not mlflow run's made-up name
    params, tags = parent.data.params, parent.data.tags
    assert params["config"] == LLM_RECIPE
    assert tags["autotts.explorer"] == recipe["explorer"]
    assert params["explorer.resolved"] == recipe["explorer"]  # MLflow logged -P explorer as '' (not given)
    assert params["max_candidates.resolved"] == str(recipe["max_candidates"])
    assert params["search_shuffles"] == "2"  # given with -P: MLflow's value is the setting's
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == recipe["max_candidates"]
    assert {c.data.tags["autotts.explorer"] for c in children} == {recipe["explorer"]}
    assert requests and {r.body["model"] for r in requests} == {recipe["explorer"].split(":", 1)[1]}
