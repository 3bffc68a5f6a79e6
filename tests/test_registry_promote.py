"""The promotion gate: first promotion, a refused worse challenger, an accepted better one.

Real sqlite registry; the gate replays the published Qwen3-1.7B/aime24 with all 100
shuffles (about a second per controller), and every number checked here is recomputed
in-process rather than hard-coded.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mlflow_autotts.cli.main import main
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.json_io import read_json
from mlflow_autotts.data.trajectory import Provenance
from mlflow_autotts.replay.runner import ReplayConfig, evaluate_many
from mlflow_autotts.data.digest import content_digest
from mlflow_autotts.data.uris import load_dataset
from mlflow_autotts.promotion.gate import GATE_TAG
from mlflow_autotts.tracking.datasets import DIGEST_CHARS
from mlflow_autotts.tracking.mlflow_utils import GATE_EXPERIMENT
from mlflow_autotts.tracking.model_registry import version_model_id

NAME = "autotts-controller"
KEY = "Qwen3-1.7B.aime24"


@pytest.fixture(scope="module")
def gate(data_dir):
    path = data_dir / "Qwen3-1.7B" / "aime24.json"
    ts = read_json(path, Provenance("Qwen3-1.7B", "aime24"))
    specs = [ControllerSpec("cmc", 0.5), ControllerSpec("sc", None, {"n": 8}), ControllerSpec("cmc", 0.75)]
    results = evaluate_many(specs, [ts], ReplayConfig(shuffles=100, workers=1, progress=False), keep_episodes=False)
    return str(path), dict(zip(("cmc0.5", "sc8", "cmc0.75"), results))


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def register(*args: str) -> None:
    r = invoke("register", *args, "--alias", "challenger")
    assert r.exit_code == 0, r.output


def promote(data: str, *extra: str):
    return invoke("promote", "--from", "challenger", "--to", "champion", "--gate", data, "--workers", "1",
                  "--no-progress", *extra)


def gate_runs(client) -> list:
    exp = client.get_experiment_by_name(GATE_EXPERIMENT)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]) if exp else []


def test_gate_refuses_worse_and_promotes_better(mlflow_store, gate):
    from mlflow.tracking import MlflowClient

    data, expect = gate
    client = MlflowClient()

    # 1. no champion yet: the first promotion passes after its own evaluation
    register("cmc", "--beta", "0.5")
    r = promote(data)
    assert r.exit_code == 0, r.output
    assert "no incumbent" in r.output and "promoted" in r.output
    assert f"gate run: gate-{NAME}-v1 (" in r.output and f"in experiment {GATE_EXPERIMENT}" in r.output
    assert str(client.get_registered_model(NAME).aliases["champion"]) == "1"
    v1 = client.get_model_version(NAME, "1")
    cmc = expect["cmc0.5"]
    assert {k: v for k, v in v1.tags.items() if k.startswith(f"{GATE_TAG}.")} == {
        f"{GATE_TAG}.decision": "promoted", f"{GATE_TAG}.accuracy": f"{cmc.accuracy:.2f}%",
        f"{GATE_TAG}.tokens": f"{cmc.mean_tokens:,.0f}", f"{GATE_TAG}.gain": "first promotion"}
    (run1,) = gate_runs(client)
    assert run1.info.run_name == f"gate-{NAME}-v1" and run1.data.tags["autotts.command"] == "gate"
    # the full numbers are the gate run's metrics; its input is the gate data with its content digest
    assert run1.data.metrics[f"candidate.accuracy.{KEY}"] == pytest.approx(cmc.accuracy)
    assert run1.data.metrics[f"candidate.mean_tokens.{KEY}"] == pytest.approx(cmc.mean_tokens)
    assert run1.data.metrics["passed"] == 1.0
    (inp,) = run1.inputs.dataset_inputs
    assert inp.dataset.digest == content_digest(load_dataset(data))[:DIGEST_CHARS]
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "gate"
    # its model inputs: the versions' logged models (MLflow returns them with get_run, not search_runs)
    assert [m.model_id for m in client.get_run(run1.info.run_id).inputs.model_inputs] == [version_model_id(v1)]
    assert "gate.png" in [f.path for f in client.list_artifacts(run1.info.run_id)]
    # the version's description is the report: the table, and the link to the run with its plot
    assert v1.description.startswith("### Gate: v1 promoted to `@champion`\n")
    assert f"[gate-{NAME}-v1](#/experiments/{run1.info.experiment_id}/runs/{run1.info.run_id}" \
           f"?workflowType=machine_learning)" in v1.description
    assert f"(get-artifact?path=gate.png&run_uuid={run1.info.run_id})" in v1.description
    assert f"| **mean** | {cmc.accuracy:.2f}% | {cmc.mean_tokens:,.0f} |" in v1.description

    # 2. SC@8: far fewer tokens but less accurate -> refused, with the numbers, exit 1
    register("sc", "--param", "n=8")
    r = promote(data)
    assert r.exit_code == 1, r.output
    sc8 = expect["sc8"]
    assert sc8.accuracy < cmc.accuracy  # the premise of the test
    assert "refused" in r.output and "accuracy" in r.output
    for number in (f"{sc8.accuracy:.2f}", f"{cmc.accuracy:.2f}", f"{sc8.mean_tokens:,.0f}", f"{cmc.mean_tokens:,.0f}"):
        assert number in r.output, (number, r.output)
    assert str(client.get_registered_model(NAME).aliases["champion"]) == "1"
    v2, v1 = client.get_model_version(NAME, "2"), client.get_model_version(NAME, "1")
    gain = f"{sc8.accuracy - cmc.accuracy:+.2f} pts, {sc8.mean_tokens / cmc.mean_tokens:.2f}x tokens vs v1"
    assert v2.tags[f"{GATE_TAG}.decision"] == "refused" and v2.tags[f"{GATE_TAG}.gain"] == gain
    assert v2.tags[f"{GATE_TAG}.accuracy"] == f"{sc8.accuracy:.2f}%"
    assert v1.tags[f"{GATE_TAG}.decision"] == "kept" and v1.tags[f"{GATE_TAG}.accuracy"] == f"{cmc.accuracy:.2f}%"
    assert v2.description.startswith("### Gate: v2 refused; `@champion` stays on v1\n")
    assert gate_runs(client)[-1].data.metrics["passed"] == 0.0

    # 3. cmc at β=0.75: more accurate, within a 1.5x token allowance -> promoted
    register("cmc", "--beta", "0.75")
    better = expect["cmc0.75"]
    assert better.accuracy >= cmc.accuracy and better.mean_tokens <= 1.5 * cmc.mean_tokens  # the premise
    r = promote(data, "--max-token-ratio", "1.5")
    assert r.exit_code == 0, r.output
    assert "promoted" in r.output and f"{better.accuracy:.2f}" in r.output
    assert str(client.get_registered_model(NAME).aliases["champion"]) == "3"
    v3 = client.get_model_version(NAME, "3")
    assert v3.tags[f"{GATE_TAG}.decision"] == "promoted"
    assert v3.tags[f"{GATE_TAG}.tokens"] == f"{better.mean_tokens:,.0f}"
    assert v3.tags["autotts.controller"] == "cmc" and v3.tags["autotts.beta"] == "0.75"
    assert v3.description.startswith("### Gate: v3 promoted to `@champion`, replacing v1\n")
    assert f"{better.accuracy:.2f}%" in v3.description
    assert client.get_model_version(NAME, "1").tags[f"{GATE_TAG}.decision"] == "replaced"  # as incumbent of gate 3
    run3 = gate_runs(client)[-1]
    assert run3.info.run_name == f"gate-{NAME}-v3" and run3.data.params["max_token_ratio"] == "1.5"
    assert run3.data.metrics["token_ratio"] == pytest.approx(better.mean_tokens / cmc.mean_tokens)
    assert run3.data.metrics[f"incumbent.accuracy.{KEY}"] == pytest.approx(cmc.accuracy)
    assert len(gate_runs(client)) == 3

    # what the registry page shows: each version's tags are a few short ones
    for version in ("1", "2", "3"):
        tags = client.get_model_version(NAME, version).tags
        assert len(tags) <= 8, tags
        assert all(len(v) <= 40 for k, v in tags.items() if k != "autotts.model_sha256"), tags


def test_an_earlier_autotts_s_many_gate_tags_are_replaced_by_the_four(mlflow_store, gate):
    from mlflow.tracking import MlflowClient

    data, _ = gate
    client = MlflowClient()
    register("cmc", "--beta", "0.5")
    for key in ("role", "rule", "reason", "digests", "time", f"accuracy.{KEY}", f"mean_tokens.{KEY}"):
        client.set_model_version_tag(NAME, "1", f"{GATE_TAG}.{key}", "from an earlier autotts")
    client.update_model_version(NAME, "1", description="my own notes on this version")
    assert promote(data).exit_code == 0
    v1 = client.get_model_version(NAME, "1")
    assert sorted(k for k in v1.tags if k.startswith(f"{GATE_TAG}.")) == \
        sorted(f"{GATE_TAG}.{k}" for k in ("decision", "accuracy", "tokens", "gain"))
    assert v1.description.startswith("### Gate: v1 promoted") and v1.description.rstrip().endswith(
        "my own notes on this version")
