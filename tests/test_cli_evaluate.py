"""``autotts evaluate``: terminal table, JSON output, MLflow run, and one-line errors."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mlflow_autotts.cli.main import main
from mlflow_autotts.data.json_io import write_json
from tests.helpers import random_set


@pytest.fixture
def toy_json(tmp_path):
    path = tmp_path / "Synth" / "toy.json"
    path.parent.mkdir()
    write_json(random_set(n_problems=4, n_branches=12, seed=5), path)
    return path


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_evaluate_writes_table_json_and_an_mlflow_run(toy_json, tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "res.json"
    r = run(["evaluate", str(toy_json), "--controller", "cmc", "--beta", "0,1", "--shuffles", "3", "--workers", "1",
             "--output-json", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "Synth/toy" in r.stdout and "cmc" in r.stdout
    results = json.loads(out.read_text())["results"]
    assert [(x["controller"], x["beta"], x["shuffles"]) for x in results] == [("cmc", 0.0, 3), ("cmc", 1.0, 3)]
    assert all(0 <= x["accuracy"] <= 100 and x["mean_tokens"] > 0 for x in results)
    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("autotts-evaluate").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == "evaluate-cmc-toy"
    m = runs[0].data.metrics
    assert m["accuracy.Synth.toy.beta_1.0"] == pytest.approx(results[1]["accuracy"])
    assert m["mean_tokens.Synth.toy.beta_0.0"] == pytest.approx(results[0]["mean_tokens"])


def test_source_file_controller_and_params(toy_json, tmp_path):
    src = tmp_path / "first.py"
    src.write_text("from mlflow_autotts.controllers.base import Controller\n\n"
                   "class First(Controller):\n    name = 'first'\n"
                   "    def __init__(self, beta=0.5, reads=1):\n        super().__init__(beta, reads=reads)\n"
                   "        self.reads = reads\n"
                   "    def solve(self, episode):\n"
                   "        return [episode.get_new_branch_final_answer() for _ in range(self.reads)][-1]\n")
    out = tmp_path / "res.json"
    r = run(["evaluate", str(toy_json), "-c", f"{src}:First", "--param", "reads=2", "--shuffles", "2",
             "--workers", "1", "--no-mlflow", "--no-progress", "--output-json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["results"][0]["controller"] == "first"


@pytest.mark.parametrize("case, args, message", [
    ("unknown controller", ["-c", "nope"], "unknown controller 'nope'; valid:"),
    ("invalid beta", ["-c", "cmc", "--beta", "1.5"], "invalid beta"),
    ("bad beta text", ["-c", "cmc", "--beta", "high"], "invalid beta"),
    ("unknown param", ["-c", "sc", "--param", "m=3"], "has no parameter 'm'"),
])
def test_bad_controller_input_is_one_line_exit_2(toy_json, case, args, message):
    r = run(["evaluate", str(toy_json), *args, "--no-mlflow", "--no-progress"])
    assert r.exit_code == 2, case
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_source_file_without_controller(toy_json, tmp_path):
    src = tmp_path / "none.py"
    src.write_text("def solve(episode):\n    return None\n")
    r = run(["evaluate", str(toy_json), "-c", str(src), "--no-mlflow"])
    assert r.exit_code == 2 and "defines no Controller subclass" in r.stderr


@pytest.mark.parametrize("content, where", [
    ('[{"question": "q", "gold_answer": "1", "probe_freq": 500, "each_br', "not valid JSON"),
    ('[{"question": "q", "gold_answer": "1", "probe_freq": 500, "each_branch": [[["1"], 700]]}]', "problem 0"),
    ('[{"question": "q", "gold_answer": "1", "probe_freq": 500, "each_branch": [[["1"], -5, "1"]]}]', "problem 0"),
    ('[{"question": "q", "gold_answer": "1", "probe_freq": 500, "each_branch": [[["1"], 700, 1]]}]', "problem 0"),
    ('[{"question": "q", "gold_answer": "1", "probe_freq": 500, "each_branch": []}]', "problem 0"),
])
def test_bad_data_is_one_line_exit_2_naming_the_file(tmp_path, content, where):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = run(["evaluate", str(bad), "-c", "sc", "--no-mlflow", "--no-progress"])
    assert r.exit_code == 2
    assert str(bad) in r.stderr and where in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_real_console_script_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    p = subprocess.run([sys.executable, "-m", "mlflow_autotts.cli", "evaluate", str(bad), "-c", "sc", "--no-mlflow"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.startswith("error: ") and "Traceback" not in p.stderr


def test_evaluate_runs_from_a_config_file_with_options_over_it(toy_json, tmp_path):
    cfg = tmp_path / "evaluate.yaml"
    cfg.write_text(f"data: [{toy_json}]\ncontroller: asc\nbeta: [0.5]\nparams: {{max_samples: 8}}\nshuffles: 9\n"
                   "mlflow: false\nprogress: false\n")
    out = tmp_path / "res.json"
    r = run(["evaluate", "--config", str(cfg), "--shuffles", "2", "--workers", "1", "--output-json", str(out)])
    assert r.exit_code == 0, r.output
    [row] = json.loads(out.read_text())["results"]
    assert (row["data"], row["controller"], row["shuffles"]) == ("Synth/toy", "asc", 2)


# ------------------------------------------------------------------ replay beside MLflow's start-up
def _evaluate_json(args, out):
    r = run(["evaluate", *args, "--output-json", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())["results"]


def test_a_logged_run_replays_in_a_child_with_the_same_numbers(toy_json, tmp_path, mlflow_store, monkeypatch):
    """With MLflow the replay runs in a forked child (while MLflow starts here); without it,
    in this process: the numbers are identical, and the run holds the evaluated episodes only."""
    import os

    import pandas as pd
    from mlflow.tracking import MlflowClient

    from mlflow_autotts.cli import evaluate as cmd
    from mlflow_autotts.evaluation import EvaluationPlan

    pids = []
    real_replay = EvaluationPlan.replay
    monkeypatch.setattr(EvaluationPlan, "replay", lambda self: (pids.append(os.getpid()), real_replay(self))[1])
    real_beside = cmd.run_beside
    monkeypatch.setattr(cmd, "run_beside", lambda work, meanwhile: (pids.append("beside"),
                                                                     real_beside(work, meanwhile))[1])
    common = [str(toy_json), "-c", "cmc", "--beta", "0.5,1", "--shuffles", "40", "--workers", "2"]
    logged = _evaluate_json(common, tmp_path / "logged.json")
    assert pids == ["beside"]  # replay ran in the child, where this list is a copy
    local = _evaluate_json([*common, "--no-mlflow"], tmp_path / "local.json")
    assert pids == ["beside", os.getpid()]
    assert logged == local and len(logged) == 2

    client = MlflowClient()
    [run_] = client.search_runs([client.get_experiment_by_name("autotts-evaluate").experiment_id])
    eps = pd.read_parquet(client.download_artifacts(run_.info.run_id, "episodes.parquet", str(tmp_path)))
    assert set(eps.role) == {"evaluated"} and len(eps) == 2 * 40 * 4
    for row in logged:
        part = eps[eps.beta == row["beta"]]
        assert 100 * part.correct.mean() == pytest.approx(row["accuracy"])
        assert part.tokens.mean() == pytest.approx(row["mean_tokens"])


def test_a_controller_failing_in_the_child_is_one_line_and_logs_nothing(toy_json, mlflow_store, monkeypatch):
    from mlflow.tracking import MlflowClient

    from mlflow_autotts.controllers.cmc import ConfidenceMomentum

    def broken(self, episode):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(ConfidenceMomentum, "solve", broken)  # the forked child inherits the patch
    r = run(["evaluate", str(toy_json), "-c", "cmc", "--shuffles", "2", "--no-progress"])
    assert r.exit_code == 2
    assert r.stderr.strip() == ("error: controller 'cmc' raised RuntimeError on Synth/toy, problem 0, shuffle 0: "
                                "broken on purpose")
    assert MlflowClient().get_experiment_by_name("autotts-evaluate") is None  # the warm-up only read the store


def test_unlogged_or_sandboxed_runs_replay_in_this_process(toy_json, tmp_path, mlflow_store, monkeypatch):
    from mlflow_autotts.cli import evaluate as cmd

    def no_fork(work, meanwhile):
        raise AssertionError("run_beside must not be used here")

    monkeypatch.setattr(cmd, "run_beside", no_fork)
    _evaluate_json([str(toy_json), "-c", "sc", "--shuffles", "2", "--no-mlflow"], tmp_path / "a.json")
    src = tmp_path / "first.py"
    src.write_text("from mlflow_autotts.controllers.base import Controller\n\n"
                   "class First(Controller):\n    name = 'first'\n"
                   "    def solve(self, episode):\n        return episode.get_new_branch_final_answer()\n")
    _evaluate_json([str(toy_json), "-c", f"{src}:First", "--shuffles", "2", "--workers", "1"], tmp_path / "b.json")
