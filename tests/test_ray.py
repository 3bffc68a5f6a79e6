"""The Ray executor on a real local cluster (``ray start --head``, 2 CPUs, loopback):
the replay runner and sandboxed scoring give the local numbers, a killed worker is
retried with the same result, and a hostile candidate fails on Ray as it does locally."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlflow_autotts.cluster.choice import chunk_executor, sandbox
from mlflow_autotts.controllers import cmc
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.replay.runner import ReplayConfig, LocalPool, evaluate_many
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.process import ProcessSandbox
from mlflow_autotts.search.config import build_config
from mlflow_autotts.search.job import archive_factory, make_explorer, measure_references, split_data
from mlflow_autotts.search.loop import NullRecorder, Scorer, run_search
from tests.helpers import HONEST, SMALL_SEARCH, hostile, kill_and_resume, random_set, runner_spec

pytestmark = [pytest.mark.slow, pytest.mark.ray]

LIMITS = SandboxLimits(wall_seconds=60, cpu_seconds=30, memory_mb=512)
SPECS = [ControllerSpec("sc", params={"n": 64}), ControllerSpec("cmc", 0.5), ControllerSpec("parallel_probe")]
SYNTH = [random_set(6, 24, seed=5, name="Synth/a"), random_set(5, 20, seed=6, name="Synth/b")]


def published(data_dir: Path) -> list:
    return load_datasets([str(data_dir / "Qwen3-4B" / "aime24.json"), str(data_dir / "Qwen3-0.6B" / "aime24.json")])


def same_results(a, b) -> None:
    assert [(r.data, r.controller, r.beta, r.accuracy, r.mean_tokens) for r in a] == \
           [(r.data, r.controller, r.beta, r.accuracy, r.mean_tokens) for r in b]
    for x, y in zip(a, b):
        assert (x.episodes is None) == (y.episodes is None)
        if x.episodes is not None:
            assert x.episodes.equals(y.episodes)


def test_replay_on_ray_gives_the_local_pool_numbers(ray_cluster, data_dir):
    data = published(data_dir)
    cfg = ReplayConfig(shuffles=6, workers=2, progress=False, in_process_below=0, chunk_shuffles=2)
    local = evaluate_many(SPECS, data, cfg, keep_episodes=[True, True, False])
    on_ray = evaluate_many(SPECS, data, cfg, keep_episodes=[True, True, False], executor=chunk_executor("ray"))
    same_results(on_ray, local)
    assert len(local) == 6 and local[1].episodes.shape[0] == 6 * 30


KILL_ONCE = '''
import os, signal
from pathlib import Path
from mlflow_autotts.controllers.cmc import ConfidenceMomentum


class KillOnce(ConfidenceMomentum):
    """CMC, except that the first process to solve an episode is killed in the middle of it."""

    name = "kill_once"

    def solve(self, episode):
        marker = Path({marker!r})
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().solve(episode)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_worker_killed_mid_chunk_is_retried_and_the_numbers_are_the_same(ray_cluster, tmp_path):
    marker = tmp_path / "killed.pid"
    src = tmp_path / "kill_once.py"
    src.write_text(KILL_ONCE.format(marker=str(marker)), encoding="utf-8")
    cfg = ReplayConfig(shuffles=8, workers=2, progress=False, in_process_below=0, chunk_shuffles=2)
    on_ray = evaluate_many([runner_spec(f"{src}:KillOnce", 0.5)], SYNTH, cfg, executor=chunk_executor("ray"))
    local = evaluate_many([ControllerSpec("cmc", 0.5)], SYNTH, cfg)
    killed = int(marker.read_text())
    assert killed != os.getpid()  # a Ray worker died, not this driver
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    assert [(r.accuracy, r.mean_tokens) for r in on_ray] == [(r.accuracy, r.mean_tokens) for r in local]
    for r, l in zip(on_ray, local):
        assert r.episodes.drop(columns="dataset").equals(l.episodes.drop(columns="dataset"))


def test_a_controller_error_on_ray_is_the_local_error(ray_cluster, tmp_path):
    src = tmp_path / "broken.py"
    src.write_text("from mlflow_autotts.controllers.cmc import ConfidenceMomentum\n\n\n"
                   "class Broken(ConfidenceMomentum):\n    name = 'broken'\n\n    def solve(self, episode):\n"
                   "        if episode.question == 'question 3':\n            raise KeyError('no such branch')\n"
                   "        return super().solve(episode)\n", encoding="utf-8")
    spec = runner_spec(f"{src}:Broken", 0.5)  # the test's own source, replayed as if built in
    # one work item: with several, which failing item is reported first is a race
    cfg = ReplayConfig(shuffles=2, workers=2, progress=False, in_process_below=0, chunk_shuffles=2)
    errors = []
    for executor in (LocalPool(), chunk_executor("ray")):
        with pytest.raises(ControllerError) as info:
            evaluate_many([spec], SYNTH[:1], cfg, executor=executor)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    assert "raised KeyError on Synth/a, problem 3, shuffle 0: 'no such branch'" in errors[1]


def test_candidates_scored_on_ray_equal_the_local_sandbox(ray_cluster, data_dir):
    data = published(data_dir)
    box = sandbox("ray", LIMITS)
    assert box.parallelism() == 2
    for source, cls in ((inspect.getsource(cmc), "ConfidenceMomentum"), (HONEST, None)):
        local = ProcessSandbox(LIMITS).score(source, data, [0.2, 0.8], range(3), class_name=cls)
        remote = box.score(source, data, [0.2, 0.8], range(3), class_name=cls)
        assert local.ok and remote.ok, (local.failure, remote.failure)
        assert remote.episodes == local.episodes
        assert [(r.beta, r.data, r.accuracy, r.mean_tokens) for r in remote.results] == \
               [(r.beta, r.data, r.accuracy, r.mean_tokens) for r in local.results]
        # the worker's sandbox, observed there (each child gets a uid of its own)
        assert replace(remote.isolation, uid=0) == replace(local.isolation, uid=0)
        assert remote.isolation.missing == ()
    assert replace(box.isolation(), uid=0) == replace(ProcessSandbox(LIMITS).isolation(), uid=0)


@pytest.mark.parametrize("body, kind, message", [
    ("return open('/etc/hostname').read()", "forbidden", "open"),
    ("import socket\nsocket.create_connection(('127.0.0.1', 6379), timeout=2)", "forbidden", "socket"),
    ("episode.probe_new()\nreturn 'a guess nobody revealed'", "forbidden", "unrevealed_answer"),
    ("while True:\n    pass", "timeout", "CPU"),
], ids=["file", "network", "unrevealed", "cpu"])
def test_a_hostile_candidate_fails_on_ray_as_it_does_locally(ray_cluster, body, kind, message):
    limits = SandboxLimits(wall_seconds=20, cpu_seconds=2, memory_mb=512)
    local = ProcessSandbox(limits).score(hostile(body), SYNTH, [0.5], [0])
    remote = sandbox("ray", limits).score(hostile(body), SYNTH, [0.5], [0])
    assert local.failure is not None and remote.failure is not None
    assert (remote.failure.kind, message in str(remote.failure)) == (kind, True), remote.failure
    assert (remote.failure.kind, remote.failure.message) == (local.failure.kind, local.failure.message)
    assert not remote.results


SLOW_HONEST = HONEST.replace("        finals = []", "        sum(range(1_000_000))  # honest, just slow\n        finals = []")


def _sandbox_children() -> dict[int, int]:
    """pid -> parent pid of every running sandbox child on this machine."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"mlflow_autotts.sandbox.worker" in cmd:
            out[int(d.name)] = ppid
    return out


def test_a_worker_killed_while_scoring_a_candidate_is_retried_with_the_same_outcome(ray_cluster):
    box = sandbox("ray", LIMITS)
    result: dict = {}
    before = set(_sandbox_children())
    job = threading.Thread(target=lambda: result.update(out=box.score(SLOW_HONEST, SYNTH, [0.3, 0.7], range(6))))
    job.start()
    victim, child, seen = None, None, set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.is_alive():
        fresh = {pid: ppid for pid, ppid in _sandbox_children().items() if pid not in before}
        seen |= set(fresh)
        if fresh and victim is None:
            child, victim = next(iter(fresh.items()))
            time.sleep(0.3)  # real time for the child to get its data and start solving (checked below)
            assert job.is_alive(), "the candidate finished before its worker could be killed"
            os.kill(victim, signal.SIGKILL)  # the Ray worker running the sandbox
        time.sleep(0.02)
    job.join(timeout=120)
    assert victim is not None and victim != os.getpid(), "no sandbox child was seen on a Ray worker"
    assert len(seen) >= 2, "Ray did not run the candidate again after its worker died"
    out = result["out"]
    local = ProcessSandbox(LIMITS).score(SLOW_HONEST, SYNTH, [0.3, 0.7], range(6))
    assert out.ok and out.episodes == local.episodes
    deadline = time.monotonic() + 20
    while child in _sandbox_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert child not in _sandbox_children()  # the killed worker's candidate did not outlive it


@pytest.mark.parametrize("controller", ["cmc", "source"])
def test_evaluate_cli_on_ray_prints_the_local_numbers(ray_cluster, data_dir, tmp_path, controller):
    """A built-in (replay work items on Ray) and a source file (scored in the sandbox on a Ray
    worker), each against the same command on the local executor."""
    if controller == "source":
        (tmp_path / "first_agreement.py").write_text(HONEST, encoding="utf-8")
        controller = f"{tmp_path / 'first_agreement.py'}:FirstAgreement"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address, "AUTOTTS_DATA_DIR": str(data_dir)}
    outs = {}
    for executor in ("local", "ray"):
        out = tmp_path / f"{executor}.json"
        done = subprocess.run([sys.executable, "-m", "mlflow_autotts.cli", "evaluate", "autotts:Qwen3-4B/aime24",
                               "-c", controller, "--beta", "0.3", "--beta", "0.7", "--shuffles", "20", "--no-mlflow",
                               "--no-progress", "--executor", executor, "--output-json", str(out)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        outs[executor] = json.loads(out.read_text())
    assert outs["ray"] == outs["local"] and len(outs["ray"]["results"]) >= 2


def test_a_search_on_ray_resumes_like_a_local_one_with_the_local_scores(ray_cluster, mlflow_store, data_dir, tmp_path):
    kids = kill_and_resume(mlflow_store, data_dir, tmp_path, executor="ray", workers=2)
    # the same search scored locally, without MLflow: every candidate has the same numbers
    config = build_config(None, dict(SMALL_SEARCH, max_candidates=7, population=2, log_models=False, workers=2))
    search_sets, _ = split_data(config.data, config.selection)
    refs = measure_references(search_sets, config.betas, config.scoring.search_shuffles, config.pool)
    explorer = make_explorer(config.exploration, refs)
    local = run_search(config.budget, explorer, Scorer(config.scoring, config.betas, search_sets), NullRecorder(),
                       archive_factory(explorer, refs), workers=config.workers, progress_bar=False)
    assert sorted(kids) == sorted(c.id for c in local.candidates)
    client = MlflowClient(mlflow_store)
    for c in local.candidates:
        run = kids[c.id]
        assert run.data.tags["autotts.state"] == ("scored" if c.ok else "failed"), c.id
        if c.ok:
            for name, column in (("accuracy.mean", 1), ("mean_tokens.mean", 2)):
                history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
                assert history == [(k, point[column]) for k, point in enumerate(c.curve())], (c.id, name)


def test_a_driver_puts_each_dataset_list_into_the_object_store_once(ray_cluster):
    from mlflow_autotts.cluster.runtime import DataRefs

    refs = DataRefs()
    a = refs.ref(SYNTH)
    assert refs.ref(list(SYNTH)) == a  # the same objects again (a search's every candidate): no new put
    assert refs.ref(SYNTH[:1]) != a
    executor = chunk_executor("ray")
    cfg = ReplayConfig(shuffles=4, workers=2, progress=False, in_process_below=0, chunk_shuffles=1)
    first = evaluate_many([ControllerSpec("cmc", 0.5)], SYNTH, cfg, executor=executor)
    shipped = executor.data_refs.ref(SYNTH)
    again = evaluate_many([ControllerSpec("sc")], SYNTH, cfg, executor=executor)
    assert executor.data_refs.ref(SYNTH) == shipped and len(first) == len(again) == 2
