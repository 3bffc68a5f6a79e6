"""Lineage: runs carry the trajectory sets they used as MLflow dataset inputs, against a real
sqlite store (the digest, source, schema and profile a user sees in the UI)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mlflow_autotts.data.digest import content_digest
from mlflow_autotts.data.json_io import write_json
from mlflow_autotts.data.parquet_io import write_parquet
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.data.uris import load_dataset, published_url
from mlflow_autotts.search.config import build_config
from mlflow_autotts.tracking.datasets import (
    DIGEST_CHARS,
    dataset_entity,
    log_collected_dataset,
    log_datasets,
)
from tests.helpers import random_set

PUBLISHED = "autotts:Qwen3-4B/aime24"


def _inputs(run_id: str) -> dict[str, tuple]:
    """{name: (digest, context, source_type, source dict, profile dict, other tags)} of a run."""
    from mlflow import MlflowClient

    out = {}
    for di in MlflowClient().get_run(run_id).inputs.dataset_inputs:
        d = di.dataset
        tags = {t.key: t.value for t in di.tags}
        context = tags.pop("mlflow.data.context")
        out[d.name] = (d.digest, context, d.source_type, json.loads(d.source), json.loads(d.profile), tags)
    return out


def _with_signals(name: str = "Synth/signals") -> TrajectorySet:
    """Two problems, one with a per-interval confidence signal and one without."""
    with_sig = Branches.from_lists("q0", 100, [["1", "2"], ["3"]], [250, 120], ["2", "3"],
                                   signals={"confidence": [[0.5, 0.25], [1.0]]})
    without = Branches.from_lists("q1", 100, [["4"], []], [90, 40], ["4", "5"])
    model, _, bench = name.partition("/")
    return TrajectorySet([Problem(with_sig, "2"), Problem(without, "4")], Provenance(model, bench, source=name))


def _start_run() -> str:
    from mlflow import MlflowClient

    from mlflow_autotts.tracking.mlflow_utils import experiment_id

    return MlflowClient().create_run(experiment_id("autotts")).info.run_id


# ---------------------------------------------------------------------------- digest
def test_digest_follows_the_content_not_the_file(data_dir, tmp_path):
    published = load_dataset(PUBLISHED)
    copy = tmp_path / "Qwen3-4B" / "aime24.parquet"
    copy.parent.mkdir()
    write_parquet(published, copy)
    again = load_dataset(str(copy))
    assert again.provenance.source == str(copy) and again.name == published.name
    assert content_digest(again) == content_digest(published) == content_digest(load_dataset(PUBLISHED))

    # any replayed value changes it: a gold answer, a branch length, a probe answer, the order
    p0 = published.problems[0]
    changed = [
        Problem(p0.branches, p0.gold_answer + "0"),
        Problem(replace(p0.branches, branch_tokens=[p0.branches.branch_tokens[0] + 1, *p0.branches.branch_tokens[1:]]),
                p0.gold_answer),
        Problem(replace(p0.branches, probe_answers=["?", *p0.branches.probe_answers[1:]]), p0.gold_answer),
    ]
    digests = {content_digest(published)}
    for problem in changed:
        digests.add(content_digest(TrajectorySet([problem, *published.problems[1:]], published.provenance)))
    digests.add(content_digest(TrajectorySet(published.problems[::-1], published.provenance)))
    digests.add(content_digest(published.subset(range(29))))
    assert len(digests) == 6
    # provenance names the data but is not part of it
    assert content_digest(TrajectorySet(published.problems, Provenance("other", "name", "x"))) == \
        content_digest(published)
    # signals are part of the data
    sig = _with_signals()
    plain = TrajectorySet([Problem(replace(p.branches, signals={}), p.gold_answer) for p in sig.problems])
    assert content_digest(sig) != content_digest(plain)


def test_entity_shows_name_source_schema_and_profile(data_dir, tmp_path):
    published = load_dataset(PUBLISHED)
    e = dataset_entity(published)
    assert (e.name, e.digest, e.source_type) == ("Qwen3-4B/aime24", content_digest(published)[:DIGEST_CHARS], "http")
    assert json.loads(e.source) == {"url": published_url(PUBLISHED)}
    assert published_url(PUBLISHED).endswith("/Qwen3-4B/aime24.json") and "3cd98d12c7cb" in published_url(PUBLISHED)
    profile = json.loads(e.profile)
    assert profile["num_rows"] == 30 * 128 and profile["num_problems"] == 30
    assert profile["branches_per_problem"] == 128 and profile["interval_tokens"] == 500
    assert profile["uri"] == PUBLISHED and profile["sha256"] == content_digest(published)
    assert profile["model"] == "Qwen3-4B" and profile["benchmark"] == "aime24"
    columns = {c["name"]: c for c in json.loads(e.schema)["mlflow_colspec"]}
    assert list(columns) == ["problem", "branch", "question", "gold_answer", "interval_tokens", "probe_answers",
                             "branch_tokens", "final_answer"]
    assert columns["probe_answers"]["type"] == "array" and columns["probe_answers"]["items"] == {"type": "string"}

    # a local file: its absolute path; a signal column, optional when some problems lack it
    path = tmp_path / "Synth" / "signals.parquet"
    path.parent.mkdir()
    write_parquet(_with_signals(), path)
    local = load_dataset(str(path))
    e = dataset_entity(local)
    assert e.source_type == "local" and json.loads(e.source) == {"uri": str(path)}
    columns = {c["name"]: c for c in json.loads(e.schema)["mlflow_colspec"]}
    assert columns["signal.confidence"] == {"type": "array", "items": {"type": "double"},
                                            "name": "signal.confidence", "required": False}
    profile = json.loads(e.profile)
    assert profile["signals"] == ["confidence"] and profile["num_rows"] == 4 and profile["probe_answers"] == 4
    uneven = TrajectorySet([random_set(1, 3).problems[0], random_set(1, 5).problems[0]], Provenance(source="x.json"))
    assert json.loads(dataset_entity(uneven).profile)["branches_per_problem"] == {"min": 3, "max": 5}

    with pytest.raises(ValueError, match="has no source"):
        dataset_entity(TrajectorySet(local.problems, Provenance("m", "b")))


# ---------------------------------------------------------------------------- runs
def test_evaluate_run_logs_its_datasets(mlflow_store, data_dir, tmp_path):
    from mlflow_autotts.controllers.loading import ControllerSpec
    from mlflow_autotts.evaluation import EvaluateConfig, run_evaluation
    from mlflow_autotts.tracking.evaluate_run import log_evaluation

    local = tmp_path / "Synth" / "toy.json"
    local.parent.mkdir()
    toy = random_set(n_problems=5, n_branches=16, seed=3)
    write_json(toy, local)
    config = EvaluateConfig(data=(PUBLISHED, str(local)), controller="cmc", shuffles=2, workers=1, progress=False)
    report = run_evaluation(config, ControllerSpec("cmc"))
    assert [ts.name for ts in report.trajectories] == ["Qwen3-4B/aime24", "Synth/toy"]
    run_id = log_evaluation(report)
    inputs = _inputs(run_id)
    published = load_dataset(PUBLISHED)
    assert inputs["Qwen3-4B/aime24"][:4] == (content_digest(published)[:DIGEST_CHARS], "evaluation", "http",
                                              {"url": published_url(PUBLISHED)})
    assert inputs["Synth/toy"][:4] == (content_digest(toy)[:DIGEST_CHARS], "evaluation", "local", {"uri": str(local)})
    assert inputs["Synth/toy"][4]["num_rows"] == 5 * 16
    assert set(inputs) == {"Qwen3-4B/aime24", "Synth/toy"}
    # evaluate references its inputs, it does not copy them
    from mlflow import MlflowClient

    assert not any(a.path.startswith("data") for a in MlflowClient().list_artifacts(run_id))


def test_same_data_twice_is_one_dataset_and_other_data_another(mlflow_store, tmp_path):
    from mlflow import MlflowClient

    toy = random_set(n_problems=4, n_branches=8, seed=1)
    path = tmp_path / "Synth" / "toy.parquet"
    path.parent.mkdir()
    write_parquet(toy, path)
    first, second, other = _start_run(), _start_run(), _start_run()
    log_datasets(first, [load_dataset(str(path))], "evaluation")
    log_datasets(first, [load_dataset(str(path))], "evaluation")  # again in the same run: nothing added
    log_datasets(second, [load_dataset(str(path))], "search")
    log_datasets(other, [random_set(n_problems=4, n_branches=8, seed=2)], "evaluation",
                 sources=[str(tmp_path / "elsewhere.json")])
    a, b, c = (_inputs(r)["Synth/toy"] for r in (first, second, other))
    assert len(MlflowClient().get_run(first).inputs.dataset_inputs) == 1
    assert a[0] == b[0] == content_digest(toy)[:DIGEST_CHARS]
    assert (a[1], b[1]) == ("evaluation", "search")
    assert c[0] != a[0] and c[3] == {"uri": str(tmp_path / "elsewhere.json")}
    with pytest.raises(ValueError, match="unknown dataset context"):
        log_datasets(first, [toy], "training")
    with pytest.raises(ValueError, match="2 sources for 1 datasets"):
        log_datasets(first, [toy], "evaluation", sources=["a", "b"])


def test_collected_dataset_is_an_artifact_and_a_collect_input(mlflow_store, tmp_path):
    from mlflow import MlflowClient

    collected = _with_signals("SmolLM2-135M-Instruct/arith")
    path = tmp_path / "out" / "collected.parquet"
    path.parent.mkdir()
    write_parquet(collected, path)
    run_id = _start_run()
    entry = log_collected_dataset(run_id, collected, path)
    assert entry.dataset.digest == content_digest(collected)[:DIGEST_CHARS]
    digest, context, source_type, source, profile, tags = _inputs(run_id)["SmolLM2-135M-Instruct/arith"]
    assert (digest, context, source_type, source) == (entry.dataset.digest, "collect", "local", {"uri": str(path)})
    assert tags == {"autotts.artifact": f"runs:/{run_id}/data/collected.parquet"}
    local = Path(MlflowClient().download_artifacts(run_id, "data/collected.parquet", str(tmp_path / "dl")))
    assert local.read_bytes() == path.read_bytes()
    # a later run on the collected file shows the same dataset
    later = _start_run()
    log_datasets(later, [load_dataset(str(path))], "search")
    assert _inputs(later)["SmolLM2-135M-Instruct/arith"][0] == digest


def test_search_run_logs_its_split(mlflow_store, data_dir, tmp_path, monkeypatch):
    from mlflow_autotts.search.job import split_data
    from mlflow_autotts.tracking.search_job import run_search_job

    local = tmp_path / "Synth" / "toy.parquet"
    local.parent.mkdir()
    write_parquet(random_set(n_problems=9, n_branches=16, seed=5), local)
    monkeypatch.setenv("AUTOTTS_DATA_DIR", str(data_dir))
    config = build_config(None, {"data": [PUBLISHED, str(local)], "max_candidates": 2, "population": 2,
                                 "search_shuffles": 1, "final_shuffles": 1, "finalists": 1, "betas": [0.5],
                                 "workers": 2, "log_models": False})
    result = run_search_job(config, progress=False)
    search_sets, validation_sets = split_data(config.data, config.selection)
    inputs = _inputs(result.run_id)
    assert set(inputs) == {"Qwen3-4B/aime24:search", "Qwen3-4B/aime24:validation", "Synth/toy:search",
                           "Synth/toy:validation"}
    for sets, context in ((search_sets, "search"), (validation_sets, "validation")):
        for ts in sets:
            digest, ctx, source_type, source, profile, _ = inputs[ts.name]
            assert (digest, ctx) == (content_digest(ts)[:DIGEST_CHARS], context)
            assert profile["num_problems"] == len(ts)
            if ts.name.startswith("Qwen3-4B"):
                assert (source_type, source) == ("http", {"url": published_url(PUBLISHED)})
            else:
                assert (source_type, source) == ("local", {"uri": str(local)})
    assert inputs["Synth/toy:search"][4]["num_problems"] + inputs["Synth/toy:validation"][4]["num_problems"] == 9
