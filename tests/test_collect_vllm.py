"""``autotts collect`` on a real vLLM (CPU build, the tiny seeded model): the in-process
engine and the OpenAI server, signals live vs replay, bad input, and SIGKILL + ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_autotts.cli.main import main
from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.collect.run import collect
from mlflow_autotts.collect.shards import work_dir
from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.data.arithmetic import arithmetic_questions
from mlflow_autotts.data.parquet_io import read_parquet
from mlflow_autotts.live.collection import collect_question
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.live.episode import LiveRunner
from mlflow_autotts.live.recording import record_episode
from mlflow_autotts.live.server import free_port
from mlflow_autotts.replay.episode import RecordingEpisode
from tests.live_fixtures import TINY_LEN

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

SMALL = dict(branches=4, interval_tokens=16, max_tokens_per_branch=64, top_logprobs=3, group_window=8,
             live={"max_model_len": TINY_LEN, "request_timeout": 120.0})


def questions(tmp_path: Path, n: int = 3) -> str:
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_questions(n, seed=1)), encoding="utf-8")
    return str(path)


class ProbeEveryBranch(Controller):
    """Opens ``n`` branches and advances each to its end by probe steps, noting the signals
    the episode shows after every step."""

    name = "probe_every_branch"

    def __init__(self, n: int = 3):
        super().__init__(0.5)
        self.n, self.seen = n, []

    def solve(self, episode):
        for _ in range(self.n):
            _, i, done = episode.probe_new()
            self.seen.append((i, episode.signals(i)))
            while not done:
                _, done = episode.probe_more(i)
                self.seen.append((i, episode.signals(i)))
        return None


def test_signals_in_replay_equal_the_signals_of_the_live_episode(vllm_engine, tiny_prompts, tiny_model):
    cfg = LiveConfig(tiny_model, interval_tokens=16, max_tokens_per_branch=64, top_logprobs=3, group_window=8,
                     lookahead=3, max_model_len=TINY_LEN)
    live_ctrl = ProbeEveryBranch()
    result = LiveRunner(cfg, backend=vllm_engine, prompts=tiny_prompts).solve(live_ctrl, "What is 2 + 3?")
    replay_ctrl = ProbeEveryBranch()
    replay_ctrl.solve(RecordingEpisode(record_episode(result.episode).branches))
    assert live_ctrl.seen == replay_ctrl.seen
    assert any(s["group_confidence"] for _, s in live_ctrl.seen)  # signals were there to compare


def test_collection_stores_the_signals_and_answers_the_live_episode_computed(vllm_engine, tiny_prompts, tiny_model,
                                                                            tmp_path):
    cfg = CollectConfig(questions(tmp_path), str(tmp_path / "c.parquet"), tiny_model, **SMALL)
    runner = LiveRunner(cfg.generation, backend=vllm_engine, prompts=tiny_prompts)
    got = collect_question(runner, "What is 2 + 3?", "5")
    br = got.problem.branches
    assert br.n_branches == 4 and got.problem.gold_answer == "5"
    replay = RecordingEpisode(br)
    for j, b in enumerate(got.episode.branches):  # read whole: every probe and signal so far
        assert replay.get_new_branch_final_answer() == b.final
        assert replay.signals(j) == got.episode.signals(j) == br.branch_signals(j)
        assert br.probes(j) == [b.probes[k] for k in range(1, br.n_probes[j] + 1)]
    # the same branches probed step by step in another episode: same tokens (seeded per
    # interval); logprobs differ only by floating-point batch effects
    again = runner.solve(ProbeEveryBranch(4), "What is 2 + 3?").episode
    for j, b in enumerate(again.branches):
        assert b.ids == got.episode.branches[j].ids
        for name, values in again.signals(j).items():
            assert values == pytest.approx(br.branch_signals(j)[name][: len(values)], rel=1e-4)


def test_collect_on_the_engine_then_evaluate_and_search_the_collected_file(vllm_engine, tiny_prompts, tiny_model,
                                                                          tmp_path, mlflow_store):
    cfg = CollectConfig(questions(tmp_path, 4), str(tmp_path / "out" / "c.parquet"), tiny_model, mlflow=False,
                        progress=False, **SMALL)
    report = collect(cfg, backend=vllm_engine, prompts=tiny_prompts)
    ts = read_parquet(cfg.output)
    assert len(ts) == 4 and all(p.branches.n_branches == 4 for p in ts.problems)
    assert report.validation.passed and report.totals.questions == 4 and report.totals.cache_hit_rate > 0.5
    assert ts.provenance.sampling["engine"].startswith("vllm ")
    res = CliRunner().invoke(main, ["evaluate", cfg.output, "-c", "cmc", "--beta", "0.5", "--shuffles", "3",
                                    "--no-mlflow", "--no-progress", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "cmc" in res.output and "c" in res.output
    res = CliRunner().invoke(main, ["search", "--data", cfg.output, "--validation", cfg.output, "--max-candidates", "3",
                                    "--population", "3", "--betas", "0.5", "--search-shuffles", "2",
                                    "--final-shuffles", "2", "--finalists", "1", "--workers", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "3 candidates" in res.output


def test_collect_cli_through_the_server_logs_the_dataset_to_mlflow(vllm_server, tiny_model, tmp_path, mlflow_store):
    import mlflow

    out = tmp_path / "c.parquet"
    res = CliRunner().invoke(main, [
        "collect", "-q", questions(tmp_path, 2), "-o", str(out), "--model", tiny_model, "--backend", "openai",
        "--base-url", vllm_server.base_url, "--branches", "3", "--interval-tokens", "16", "--max-tokens-per-branch",
        "48", "--top-logprobs", "3", "--group-window", "8", "--no-progress"])
    assert res.exit_code == 0, res.output
    # its own experiment; a name that says what it collected: the model and the number of questions
    name = f"collect-{Path(tiny_model).name}-2"
    run = mlflow.search_runs(experiment_names=["autotts-collect"], filter_string=f"tags.mlflow.runName = '{name}'",
                             output_format="list")[0]
    assert run.data.tags["autotts.command"] == "collect"
    assert run.data.params["branches"] == "3" and run.data.params["engine.engine"].startswith("vllm")
    assert run.data.metrics["questions"] == 2 and run.data.metrics["tokens_per_second"] > 0
    inputs = run.inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == [read_parquet(out).name]
    assert [t.value for d in inputs for t in d.tags if t.key == "mlflow.data.context"] == ["collect"]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert "validation.json" in arts


def _bad(args, tmp_path):
    out = tmp_path / "new" / "c.parquet"
    res = CliRunner().invoke(main, ["collect", "-o", str(out), "--no-progress", "--no-mlflow", *args])
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "new").exists()  # nothing half-written
    line = res.output.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in line
    return line


def test_bad_input_gets_one_line_exit_2_and_writes_nothing(tmp_path, tiny_model, vllm_server):
    q = questions(tmp_path)
    nocol = tmp_path / "nocol.jsonl"
    nocol.write_text('{"prompt": "x", "answer": "1"}\n')
    assert "no question column 'question'" in _bad(["-q", str(nocol), "--model", tiny_model], tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty.csv: the file is empty" in _bad(["-q", str(empty), "--model", tiny_model], tmp_path)
    port = free_port()
    line = _bad(["-q", q, "--model", tiny_model, "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1",
                 "--live", "max_retries=0"], tmp_path)
    assert f"127.0.0.1:{port}" in line and "cannot reach the server" in line
    line = _bad(["-q", q, "--model", "some-other-model", "--tokenizer", tiny_model, "--backend", "openai",
                 "--base-url", vllm_server.base_url], tmp_path)
    assert "does not serve model 'some-other-model'" in line and tiny_model in line
    line = _bad(["-q", q, "--model", str(tmp_path / "no-model")], tmp_path)
    assert "is not a model folder" in line


def test_sigkill_then_resume_loses_nothing_and_repeats_nothing(vllm_server, tiny_model, tmp_path):
    q = questions(tmp_path, 8)
    out = tmp_path / "c.parquet"
    args = [sys.executable, "-m", "mlflow_autotts.cli.main", "collect", "-q", q, "-o", str(out), "--model", tiny_model,
            "--backend", "openai", "--base-url", vllm_server.base_url, "--branches", "3", "--interval-tokens", "16",
            "--max-tokens-per-branch", "96", "--top-logprobs", "2", "--concurrency", "1", "--no-progress", "--no-mlflow"]
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    shards = work_dir(out)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list(shards.glob("q*.parquet"))) < 2:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    kept = sorted(p.name for p in shards.glob("q*.parquet"))
    assert 2 <= len(kept) < 8 and not out.exists()
    res = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"({len(kept)} resumed)" in res.stdout
    ts = read_parquet(out)
    assert len(ts) == 8 and [p.question for p in ts.problems] == [r["question"] for r in arithmetic_questions(8, seed=1)]
    assert not shards.exists()
