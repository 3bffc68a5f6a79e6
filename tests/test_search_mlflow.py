"""The search recorded in MLflow: end to end with a challenger, and resume after SIGKILL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mlflow_autotts.search.config import build_config
from tests.helpers import SMALL_SEARCH, children, kill_and_resume


def test_offline_search_records_every_candidate_and_leaves_a_challenger(mlflow_store, data_dir, monkeypatch):
    from mlflow.tracking import MlflowClient

    from mlflow_autotts.tracking.search_job import run_search_job

    monkeypatch.setenv("AUTOTTS_DATA_DIR", str(data_dir))
    result = run_search_job(build_config(None, SMALL_SEARCH), progress=False)
    client = MlflowClient()
    parent = client.get_run(result.run_id)
    assert parent.data.params["explorer"] == "evolve" and parent.data.params["max_candidates"] == "5"
    assert client.get_metric_history(result.run_id, "candidates_done")[-1].value == 5
    # the isolation in force is recorded on the search run (as root here: all of it)
    iso = {k.removeprefix("autotts.isolation."): v for k, v in parent.data.tags.items()
           if k.startswith("autotts.isolation.")}
    assert iso["missing"] == "" and iso["network_namespace"] == "True" and iso["chroot"] == "True"
    assert iso["own_uid"] == "True" and iso["rlimit_fsize"] == "0" and iso["audit_hook"] == "True"
    assert {"pareto.png", "progress.png", "selection.json", "archive.json", "search_config.json"} <= {
        a.path for a in client.list_artifacts(result.run_id)}
    kids = children(client, result.run_id)
    assert sorted(kids) == [f"c{k:04d}" for k in range(5)]
    for cid, run in kids.items():
        assert run.data.tags["autotts.state"] in ("scored", "failed")
        assert run.data.tags["autotts.explorer"] == "evolve" and "autotts.generation" in run.data.tags
        assert "candidate/controller.py" in {a.path for a in client.list_artifacts(run.info.run_id, "candidate")}
        if run.data.tags["autotts.state"] == "scored":
            assert any(k.startswith("accuracy.Qwen3-4B.aime24") for k in run.data.metrics)
            assert run.data.tags["autotts.isolation.missing"] == ""
            assert run.data.tags["autotts.isolation.network_namespace"] == "True"
            models = client.search_logged_models([run.info.experiment_id],
                                                 filter_string=f"source_run_id = '{run.info.run_id}'")
            assert len(models) == 1
    # one experiment per kind of work; a run name that says what the run did
    assert client.get_experiment(parent.info.experiment_id).name == "autotts-search"
    assert parent.info.run_name == "search-aime24-5"
    version = client.get_model_version_by_alias("autotts-controller", "challenger")
    assert str(version.version) == result.challenger_version
    assert version.run_id == result.run_id  # the version's source run is the search
    winner = result.selection.winner_point
    assert {k: v for k, v in version.tags.items() if k != "autotts.model_sha256"} == {
        "autotts.controller": version.tags["autotts.controller"], "autotts.beta": f"{winner.beta:g}",
        "autotts.validation.accuracy": f"{winner.accuracy:.2f}%",
        "autotts.validation.tokens": f"{winner.mean_tokens:,.0f}",
        "autotts.validation.vs_sc64": f"{winner.accuracy - result.selection.sc64.accuracy:+.2f} pts, "
                                      f"{winner.mean_tokens / result.selection.sc64.mean_tokens:.2f}x tokens"}
    # the description: where it comes from (a link to the search run) and the validation table
    assert version.description.startswith(
        f"**Search winner** of [search-aime24-5](#/experiments/{parent.info.experiment_id}/runs/{result.run_id}"
        f"?workflowType=machine_learning): candidate `{result.selection.winner.id}`")
    assert f"| **winner** | {winner.accuracy:.2f}% | {winner.mean_tokens:,.0f} |" in version.description
    assert f"| SC@64 | {result.selection.sc64.accuracy:.2f}% |" in version.description
    assert not re.search(r"(^|\s)@\w", version.description)  # an @name would render as a GitHub user's link
    # the logged model ("controller", not the alias) keeps every number of the search
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.name == "controller" and logged.source_run_id == result.run_id
    assert logged.tags["autotts.search_run"] == result.run_id
    assert float(logged.tags["autotts.validation.accuracy"]) == pytest.approx(winner.accuracy)
    assert logged.tags["autotts.candidate_id"] == result.selection.winner.id
    rows = json.loads(client.download_artifacts(result.run_id, "selection.json") and
                      Path(client.download_artifacts(result.run_id, "selection.json")).read_text())
    assert {"sc@64", "cmc", "asc", "esc"} <= {r["controller"] for r in rows}
    # the objective (gain over CMC's curve) after every candidate, and the bounds of the selection
    objective = sorted(client.get_metric_history(result.run_id, "best_objective"), key=lambda m: m.step)
    assert [m.step for m in objective] == [1, 2, 3, 4, 5]
    assert all(b.value >= a.value for a, b in zip(objective, objective[1:]))
    finalist_rows = [r for r in rows if r["controller"].startswith("c0")]
    assert finalist_rows and all(r["vs_sc64_lcb"] <= r["vs_sc64"] <= r["vs_sc64_ucb"] for r in finalist_rows)
    assert all(r["gain_over_cmc_lcb"] <= r["gain_over_cmc"] for r in finalist_rows)
    assert sum(r["winner"] for r in rows) == 1
    assert logged.tags["autotts.selection.tier"] == str(result.selection.tier)
    assert logged.tags["autotts.validation.gain_over_cmc"].count("[") == 1


@pytest.mark.slow
def test_resume_after_sigkill_loses_nothing_and_scores_nothing_twice(mlflow_store, data_dir, tmp_path):
    kill_and_resume(mlflow_store, data_dir, tmp_path, workers=1)


def test_a_candidate_killed_before_its_proposal_was_written_reuses_its_run_on_resume(mlflow_store):
    """The window between creating a child run and writing its proposal: on resume the
    candidate does not exist yet, and when it is proposed again it takes over that run
    instead of leaving it orphaned in state "created"."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from mlflow_autotts.search.types import Candidate, Proposal
    from mlflow_autotts.tracking.search_run import CANDIDATE, STATE, MlflowRecorder

    with mlflow.start_run() as parent:
        pass
    client = MlflowClient()
    orphan = client.create_run(parent.info.experiment_id, run_name="c0000", tags={
        "mlflow.parentRunId": parent.info.run_id, CANDIDATE: "c0000", STATE: "created"})
    recorder = MlflowRecorder(parent.info.run_id, log_models=False)
    assert recorder.recorded() == []
    recorder.created(Candidate("c0000", Proposal(source="pass", explorer="evolve")))
    kids = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [k.info.run_id for k in kids] == [orphan.info.run_id]
    assert [c.id for c in MlflowRecorder(parent.info.run_id, log_models=False).recorded()] == ["c0000"]


def test_a_candidate_killed_between_ending_its_run_and_tagging_it_scored_is_scored_again_once(mlflow_store):
    """The state tag is written last: a search killed after a candidate's run ended but
    before it was tagged ``scored`` finds that candidate unscored on resume and scores it
    again in the same run, with each metric value logged once."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from mlflow_autotts.replay.results import EvalResult
    from mlflow_autotts.search.types import Candidate, Proposal
    from mlflow_autotts.tracking.search_run import STATE, MlflowRecorder

    class Killed(Exception):
        pass

    with mlflow.start_run() as parent:
        pass
    client = MlflowClient()
    recorder = MlflowRecorder(parent.info.run_id, log_models=False)
    c = Candidate("c0000", Proposal(source="pass", explorer="evolve"))
    recorder.created(c)
    c.scores = [EvalResult("d", b, 60.0 + 10 * b, 1000.0 * (1 + b)) for b in (0.0, 0.5, 1.0)]
    set_tag = recorder.client.set_tag

    def killed_at_the_state_tag(run_id, key, value):
        if key == STATE:
            raise Killed
        set_tag(run_id, key, value)

    recorder.client.set_tag = killed_at_the_state_tag
    with pytest.raises(Killed):
        recorder.scored(c, None)
    run_id = recorder.child_ids["c0000"]
    assert client.get_run(run_id).info.status == "FINISHED"

    resumed = MlflowRecorder(parent.info.run_id, log_models=False)
    (again,) = resumed.recorded()
    assert again.id == "c0000" and not again.scores and again.failure is None  # to be scored again
    again.scores = c.scores
    resumed.scored(again, None)
    run = client.get_run(run_id)
    assert run.data.tags[STATE] == "scored" and run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run_id, "accuracy.mean")] == [60.0, 65.0, 70.0]
    assert [c.id for c in MlflowRecorder(parent.info.run_id, log_models=False).recorded()] == ["c0000"]


def test_a_search_against_a_reference_under_the_minimum_says_why_and_registers_nothing(mlflow_store, data_dir,
                                                                                       monkeypatch):
    """The refusal as a user meets it: ``autotts search`` prints why there is no challenger, the
    search run's tag says it, and no version of the model exists (SC@64 on AIME scores well
    under 100%, so a 100% minimum refuses on the published data)."""
    from click.testing import CliRunner
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from mlflow_autotts.cli import main

    monkeypatch.setenv("AUTOTTS_DATA_DIR", str(data_dir))
    res = CliRunner().invoke(main, ["search", "--data", "autotts:Qwen3-1.7B/aime24", "--max-candidates", "2",
                                    "--population", "2", "--search-shuffles", "2", "--final-shuffles", "2",
                                    "--finalists", "1", "--betas", "0.5", "--workers", "2", "--no-log-models",
                                    "--min-reference-accuracy", "100", "--no-progress"])
    assert res.exit_code == 0, res.output
    reason = re.search(r"^no challenger: (SC@64 scores (\d+\.\d)% on validation, under min_reference_accuracy "
                       r"\(100%\).*)$", res.output, re.M)
    assert reason, res.output
    assert float(reason.group(2)) < 100 and "challenger: models:/" not in res.output
    run_id = re.search(r"^search run (\w+):", res.output, re.M).group(1)
    client = MlflowClient()
    assert client.get_run(run_id).data.tags["autotts.challenger"] == f"none: {reason.group(1)}"
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("autotts-controller", "challenger")
