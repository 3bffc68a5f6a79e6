"""How autotts's runs look in MLflow's UI: one experiment per kind of work, run names that say
what a run did, and why MLflow 3.17's UI listed a collection under "Evaluations".

The cause, read from the UI MLflow installs (``mlflow/server/js``): the UI opens in its GenAI
view unless told otherwise (the side bar's switch, kept in the browser; a ``workflowType``
URL parameter overrides it), and there an experiment's runs are split by whether they logged
a model: a run with a logged-model output is a training run, every other one an "evaluation
run". A collection logs a dataset, never a model, so it is listed under "Evaluations" (so are
evaluations and gates; a search, which logs its winner, is not). autotts cannot change the
browser's view, nor should a collection log a model it did not make; what it controls: every
link it writes opens the "Model training" view, and every experiment it uses declares itself
model training (``mlflow.experimentKind``, the tag MLflow's UI writes from its experiment
type picker; UIs that go by it, or infer the kind from traces an LLM explorer leaves, then
agree). The first test keeps that reading of the UI's code honest (if MLflow changes the rule,
it fails and the links deserve another look); a slow one shows it in a real browser: the same
collection's run page says "Evaluations" as the UI opens it by default, "Runs" through the
link autotts writes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlflow_autotts import settings
from mlflow_autotts.cli.gatekeeper import GatekeeperConfig
from mlflow_autotts.cli.model_registry import PromoteConfig, RegisterConfig
from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.collect.run import collect
from mlflow_autotts.evaluation import EvaluateConfig
from mlflow_autotts.search.config import SearchConfig
from mlflow_autotts.tracking.collect_run import log_collection
from mlflow_autotts.tracking.mlflow_utils import (EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, UI_VIEW, is_generated_name,
                                                  ui_artifact, ui_route, ui_url)
from mlflow_autotts.tracking.naming import benchmarks, run_name
from tests.browser import artifacts_dir, browser, chromium  # noqa: F401  (chromium is a fixture)
from tests.helpers import COLLECT_LENGTHS, collect_config
from tests.live_fixtures import ScriptedBackend, char_prompts
from tests.servers import tracking_server


def _ui_bundle() -> str:
    import mlflow

    js = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    files = sorted(js.glob("*.js"))
    assert files, f"no UI bundle under {js}"
    return "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


def test_mlflow_ui_lists_runs_without_a_logged_model_as_evaluations_unless_opened_in_its_model_training_view():
    ui = _ui_bundle()
    # runs split by their logged-model outputs: with one a training run, else an evaluation run
    assert re.search(r"modelOutputs[^;]{0,160}?\?\w+\.trainingRuns\.push\(\w+\):\w+\.evaluationRuns\.push\(\w+\)", ui)
    # the view: kept in the browser, GenAI unless chosen, a URL parameter overrides it
    default = re.search(r'key:"mlflow\.workflowType",version:\d+,initialValue:(\w+)', ui)
    assert default and re.search(rf"[,;\s]{default.group(1)}=\w+\.GENAI[,;]", ui)
    key, value = UI_VIEW.split("=")
    assert f'.get("{key}")' in ui and f'MACHINE_LEARNING="{value}"' in ui


@pytest.mark.slow
def test_in_a_browser_a_collection_is_an_evaluation_in_the_genai_view_and_a_run_through_autotts_links(
        chromium, tmp_path, monkeypatch):
    """The run page's breadcrumb names the list a run is in: "Evaluations" when MLflow's UI opens
    the run as it would by default, "Runs" through the link autotts writes."""
    import mlflow
    from playwright.sync_api import expect

    shots = artifacts_dir("ui-runs")
    for folder in ("server", "work"):
        (tmp_path / folder).mkdir()
    with tracking_server(tmp_path / "server") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        try:
            cfg = collect_config(tmp_path / "work")
            report = collect(cfg, backend=ScriptedBackend(COLLECT_LENGTHS, interval=4), prompts=char_prompts())
            run_id = log_collection(cfg, report)
            link = ui_url(ui_route(mlflow.get_run(run_id).info.experiment_id, run_id))
        finally:
            mlflow.set_tracking_uri(None)
        assert link.startswith(url + "/#/")  # absolute for a tracking server
        with browser(chromium, tmp_path / "profile") as context:
            page = context.new_page()
            crumb = page.get_by_test_id("experiment-observatory-link-runs")
            page.goto(link)
            expect(page.get_by_text(f"collect-scripted-{len(report.dataset)}").first).to_be_visible()
            expect(crumb).to_have_text("Runs")
            page.screenshot(path=shots / "1-through-the-link.png")
            page.goto(link.removesuffix("?" + UI_VIEW))  # the same run, as the UI opens it unless told
            expect(crumb).to_have_text("Evaluations")
            page.screenshot(path=shots / "2-default-view.png")


def test_a_collection_logs_to_its_own_model_training_experiment_under_a_name_that_says_what_it_did(
        tmp_path, mlflow_store):
    from mlflow import MlflowClient

    cfg = collect_config(tmp_path)
    report = collect(cfg, backend=ScriptedBackend(COLLECT_LENGTHS, interval=4), prompts=char_prompts())
    run_id = log_collection(cfg, report)
    client = MlflowClient()
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "autotts-collect"
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND == "custom_model_development"
    assert run.info.run_name == f"collect-scripted-{len(report.dataset)}"
    assert run.outputs.model_outputs == []  # a collection makes data, not a model: the GenAI view's "evaluation"
    link = ui_route(experiment.experiment_id, run_id)
    assert link == f"#/experiments/{experiment.experiment_id}/runs/{run_id}?workflowType=machine_learning"

    # a kind someone chose for the experiment in the UI is kept
    client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, "finetuning")
    log_collection(settings_replace(cfg, run_name="again"), report)
    assert client.get_experiment(experiment.experiment_id).tags[EXPERIMENT_KIND_TAG] == "finetuning"


def settings_replace(cfg: CollectConfig, **kw) -> CollectConfig:
    return settings.build(CollectConfig, None, {**settings.to_dict(cfg), **kw})


@pytest.mark.parametrize("cls, experiment", [
    (CollectConfig, "autotts-collect"), (SearchConfig, "autotts-search"), (EvaluateConfig, "autotts-evaluate"),
    (RegisterConfig, "autotts-register"), (PromoteConfig, "autotts-gate"), (GatekeeperConfig, "autotts-gate")])
def test_each_kind_of_work_has_its_own_default_experiment(cls, experiment):
    assert settings.setting(cls, "experiment").default == experiment


def test_run_names_say_what_was_done_in_a_few_safe_characters():
    assert run_name("search", benchmarks(["Qwen3-4B/aime24", "Qwen3-8B/aime24:search"]), 24) == "search-aime24-24"
    assert benchmarks(["collected/arithmetic.parquet", "/d/Qwen3-4B/aime25.json", "arithmetic"]) == "arithmetic+aime25"
    assert run_name("evaluate", "my ctl/v2", "", None, "aime24") == "evaluate-my_ctl_v2-aime24"
    long = run_name("collect", "m" * 300, 40)
    assert len(long) == 120 and long != run_name("collect", "m" * 300, 41)
    from mlflow.utils.name_utils import _generate_random_name

    assert all(is_generated_name(_generate_random_name()) for _ in range(20))  # the names MLflow makes up
    assert not is_generated_name("search-aime24-24") and not is_generated_name("my-small-search")


def test_links_are_relative_to_the_ui_unless_the_tracking_uri_is_a_server(monkeypatch):
    import mlflow

    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "sqlite:///x.db")
    assert ui_url(ui_route("3", "abc")) == "#/experiments/3/runs/abc?workflowType=machine_learning"
    assert ui_url(ui_artifact("abc", "gate.png")) == "get-artifact?path=gate.png&run_uuid=abc"
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "http://10.0.0.5:5000/")
    assert ui_url(ui_route("3")) == "http://10.0.0.5:5000/#/experiments/3?workflowType=machine_learning"
    assert ui_url(ui_artifact("abc", "plots/a b.png")) == \
        "http://10.0.0.5:5000/get-artifact?path=plots%2Fa%20b.png&run_uuid=abc"
