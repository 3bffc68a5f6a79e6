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


def test_gate_refuses_worse_and_promotes_better(mlflow_store, gate):
    from mlflow.tracking import MlflowClient

    data, expect = gate
    client = MlflowClient()
    fmt = lambda x: repr(round(float(x), 6))  # noqa: E731

    # 1. no champion yet: the first promotion passes after its own evaluation
    register("cmc", "--beta", "0.5")
    r = promote(data)
    assert r.exit_code == 0, r.output
    assert "no incumbent" in r.output and "promoted" in r.output
    assert str(client.get_registered_model(NAME).aliases["champion"]) == "1"
    v1 = client.get_model_version(NAME, "1")
    assert v1.tags[f"{GATE_TAG}.accuracy"] == fmt(expect["cmc0.5"].accuracy)
    assert v1.tags[f"{GATE_TAG}.mean_tokens.{KEY}"] == fmt(expect["cmc0.5"].mean_tokens)
    # lineage: the gate data's content digest, as a run's dataset input shows it
    assert v1.tags[f"{GATE_TAG}.digests"] == content_digest(load_dataset(data))[:DIGEST_CHARS]

    # 2. SC@8: far fewer tokens but less accurate -> refused, with the numbers, exit 1
    register("sc", "--param", "n=8")
    r = promote(data)
    assert r.exit_code == 1, r.output
    sc8, cmc = expect["sc8"], expect["cmc0.5"]
    assert sc8.accuracy < cmc.accuracy  # the premise of the test
    assert "refused" in r.output and "accuracy" in r.output
    for number in (f"{sc8.accuracy:.2f}", f"{cmc.accuracy:.2f}", f"{sc8.mean_tokens:,.0f}", f"{cmc.mean_tokens:,.0f}"):
        assert number in r.output, (number, r.output)
    assert str(client.get_registered_model(NAME).aliases["champion"]) == "1"
    v2, v1 = client.get_model_version(NAME, "2"), client.get_model_version(NAME, "1")
    assert v2.tags[f"{GATE_TAG}.decision"] == "refused" and v2.tags[f"{GATE_TAG}.role"] == "candidate"
    assert v2.tags[f"{GATE_TAG}.against"] == "v1"
    assert v2.tags[f"{GATE_TAG}.accuracy.{KEY}"] == fmt(sc8.accuracy)
    assert v1.tags[f"{GATE_TAG}.role"] == "incumbent" and v1.tags[f"{GATE_TAG}.decision"] == "refused"
    assert v1.tags[f"{GATE_TAG}.accuracy.{KEY}"] == fmt(cmc.accuracy)

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
    assert v3.tags[f"{GATE_TAG}.mean_tokens"] == fmt(better.mean_tokens)
    assert v3.tags["autotts.controller"] == "cmc" and v3.tags["autotts.beta"] == "0.75"
    assert "Promoted to @champion" in v3.description and f"{better.accuracy:.2f}" in v3.description
    assert client.get_model_version(NAME, "1").tags[f"{GATE_TAG}.decision"] == "promoted"  # as incumbent of gate 3
