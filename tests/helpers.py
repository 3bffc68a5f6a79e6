"""What the tests share, in the one module they import it from (a test module never imports
another): synthetic trajectory sets, controller sources the tests write, the in-process
runner's numbers, a scripted explorer and recorder for the search loop, the scripted live
episode and collection, and a search killed and resumed through the CLI.

Larger shared pieces about one subject keep their own modules: ``openai_stub`` (the OpenAI
stub server), ``live_fixtures`` (model folders, vLLM, the scripted backend), ``servers``
(``mlflow models serve``, ``autotts serve``, ``mlflow server``), ``endpoint_fixtures`` (the
OpenAI endpoint in process on the scripted backend), ``gatekeeper_fixtures`` (a real ``mlflow
server`` with the webhook and the gatekeeper process) and ``ray_fixtures`` (a local Ray head).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.controllers.loading import ControllerSpec, pick_controller_class, split_source_ref
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.live.backends.base import BackendUnavailable, Generation, GenerationRequest
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.live.episode import LiveEpisode
from mlflow_autotts.replay.runner import ReplayConfig, evaluate
from mlflow_autotts.search.types import Proposal, Usage
from tests.live_fixtures import ScriptedBackend, char_prompts


def make_branches(specs: list[tuple[list[str], int, str]], question: str = "q", interval: int = 500) -> Branches:
    """Branches from ``(probe_answers, branch_tokens, final_answer)`` triples."""
    return Branches.from_lists(question, interval, [s[0] for s in specs], [s[1] for s in specs], [s[2] for s in specs])


def random_set(n_problems: int = 6, n_branches: int = 16, seed: int = 0, name: str = "Synth/toy") -> TrajectorySet:
    """Problems whose branches drift toward a right or wrong answer, like real trajectories."""
    rng = random.Random(seed)
    problems = []
    for p in range(n_problems):
        gold = str(p)
        specs = []
        for _ in range(n_branches):
            final = gold if rng.random() < 0.6 else rng.choice(["x", "y", "ERR"])
            n_probes = rng.randint(0, 12)
            probes = [final if rng.random() < (k + 1) / (n_probes + 1) else rng.choice(["ERR", "x", gold])
                      for k in range(n_probes)]
            tokens = max(0, 500 * n_probes + rng.randint(-400, 700))
            specs.append((probes, tokens, final))
        problems.append(Problem(make_branches(specs, question=f"question {p}"), gold))
    model, _, bench = name.partition("/")
    return TrajectorySet(problems, Provenance(model, bench, source=name))


def import_source(path: str | Path, class_name: str | None = None) -> type:
    """The controller class a source file defines, imported in *this* (test) process.

    Only tests may do this, with sources they wrote or rendered themselves: the product never
    turns a controller source into a class outside the sandbox child."""
    path = Path(path)
    source = path.read_bytes()
    mod_name = f"autotts_test_controller_{hashlib.sha256(source).hexdigest()[:16]}"
    module = sys.modules.get(mod_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    return pick_controller_class(module, class_name, str(path))


@dataclass(frozen=True)
class InProcessSourceSpec(ControllerSpec):
    """Tests only: a source file the test wrote, replayed by the in-process runner as if it
    were built in, to compare the sandbox's numbers with the runner's."""

    @property
    def is_builtin(self) -> bool:
        return True

    def controller_class(self) -> type:
        path, class_name = split_source_ref(self.ref)
        return import_source(path, class_name)

    @property
    def label(self) -> str:
        cls = self.controller_class()
        return getattr(cls, "name", "") or cls.__name__


def runner_spec(ref: str, beta: float | None = None) -> ControllerSpec:
    """A spec for the in-process runner: a built-in name, or a test's own source file."""
    return InProcessSourceSpec(ref, beta) if split_source_ref(ref) else ControllerSpec(ref, beta)


# ------------------------------------------------------------------ controller sources
HONEST = '''
from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.controllers.voting import plurality


class FirstAgreement(Controller):
    """Probe branches until two finished answers agree; beta sets how many branches to try."""

    name = "first_agreement"

    def solve(self, episode):
        finals = []
        for _ in range(2 + round(6 * self.beta)):
            try:
                answer, i, done = episode.probe_new()
            except ValueError:
                break
            while not done:
                answer, done = episode.probe_more(i)
            if answer in finals:
                return answer
            finals.append(answer)
        return plurality(finals)
'''

SIGNAL_SOURCE = '''
from mlflow_autotts.controllers.base import Controller


class Confident(Controller):
    name = "confident"

    def solve(self, episode):
        best, best_conf = None, -1.0
        for _ in range(4):
            try:
                answer, i, done = episode.probe_new()
            except ValueError:
                break
            for _ in range(3):
                if done:
                    break
                answer, done = episode.probe_more(i)
            conf = episode.signals(i)["confidence"]
            score = sum(conf) / len(conf) if conf else 0.0
            if score > best_conf:
                best, best_conf = answer, score
        return best
'''

BILL_REWRITER = '''
from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.controllers.voting import plurality


class FreeLunch(Controller):
    """Reads every branch whole, votes, then tries to erase what that cost."""

    name = "free_lunch"

    def solve(self, episode):
        answers = []
        while True:
            try:
                answers.append(episode.get_new_branch_final_answer())
            except ValueError:
                break
        for attempt in (lambda: episode._pos.clear(),  # the in-process replay episode's cursors
                        lambda: episode._end.clear(),
                        lambda: setattr(episode, "_send", lambda op: 0),  # the sandbox episode's line out
                        lambda: setattr(episode, "tokens_used", 0)):
            try:
                attempt()
            except AttributeError:
                pass
        return plurality(answers)
'''

HOSTILE_HEAD = '''
import random
from mlflow_autotts.controllers.base import Controller
os = random._os
sys = os.sys


class Hostile(Controller):
    def solve(self, episode):
'''


def hostile(body: str) -> str:
    """A controller source whose ``solve`` is ``body`` (with ``os`` and ``sys`` at hand)."""
    return HOSTILE_HEAD + textwrap.indent(body.strip("\n"), " " * 8) + "\n"


def runner_results(ref: str, datasets, betas, shuffles: int) -> list:
    """The in-process runner's results for ``ref`` at each β, to compare the sandbox's with."""
    out = []
    for b in betas:
        out += evaluate(runner_spec(ref, b), datasets, ReplayConfig(shuffles=shuffles, workers=1, progress=False))
    return out


# ------------------------------------------------------------------ the search loop
class MemoryRecorder:
    """A search recorder that keeps what it is told in lists."""

    def __init__(self, recorded=()):
        self._recorded = list(recorded)
        self.created_ids, self.scored_ids, self.progress_steps = [], [], []

    def recorded(self):
        return self._recorded

    def created(self, c):
        self.created_ids.append(c.id)

    def scored(self, c, outcome):
        self.scored_ids.append(c.id)

    def progress(self, p):
        self.progress_steps.append(p.done)


class ScriptedExplorer:
    """An explorer that proposes fixed sources with fixed usage figures."""

    name = "scripted"

    def __init__(self, sources, usage=Usage()):
        self.sources, self.usage, self.calls = list(sources), usage, 0

    def propose(self, archive, n, generation):
        out = []
        for _ in range(n):
            src = self.sources[self.calls % len(self.sources)]
            self.calls += 1
            out.append(Proposal(src, explorer=self.name, generation=generation, usage=self.usage))
        return out


# ------------------------------------------------------------------ live generation, scripted
def live_config(**kw) -> LiveConfig:
    """Live settings for the scripted backend (intervals of 4 tokens), ``kw`` on top."""
    base = {"model": "scripted", "interval_tokens": 4, "max_tokens_per_branch": 40, "max_branches": 6,
            "probe_suffix": " \\boxed{", "instruction": "", "probe_tokens": 8}
    base.update(kw)
    return LiveConfig(**base)


def live_episode(lengths, **kw) -> tuple[LiveEpisode, ScriptedBackend]:
    """A live episode on a scripted backend whose branch j is ``lengths[j]`` tokens long."""
    cfg = live_config(**kw)
    backend = ScriptedBackend(lengths, base_seed=cfg.seed, interval=cfg.interval_tokens)
    return LiveEpisode("What is 1+1?", backend, cfg, char_prompts(cfg.probe_suffix)), backend


# ------------------------------------------------------------------ collect, scripted
COLLECT_LENGTHS = [9, 13, 4, 21]  # tokens of branch j (scripted): 1 to 6 intervals of 4
COLLECT_QUESTIONS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(1, 6)]


def write_jsonl(path: Path, rows: Sequence[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def collect_config(tmp_path: Path, **kw) -> CollectConfig:
    """A collection of COLLECT_QUESTIONS into ``tmp_path`` on the scripted backend, ``kw`` on top."""
    values = dict(questions=str(write_jsonl(tmp_path / "q.jsonl", COLLECT_QUESTIONS)),
                  output=str(tmp_path / "out" / "c.parquet"), model="scripted", branches=len(COLLECT_LENGTHS),
                  interval_tokens=4, max_tokens_per_branch=64, top_logprobs=3, group_window=3, instruction="",
                  mlflow=False, progress=False, concurrency=2, live={"probe_tokens": 4})
    values.update(kw)
    return CollectConfig(**values)


class FailAfter(ScriptedBackend):
    """Answers ``ok_calls`` engine calls, then the backend goes down."""

    def __init__(self, *a, ok_calls: int, **kw):
        super().__init__(*a, **kw)
        self.ok_calls = ok_calls
        self.lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest], timeout: float | None = None, cancel=None) -> list[Generation]:
        with self.lock:
            self.ok_calls -= 1
            if self.ok_calls < 0:
                raise BackendUnavailable("scripted backend went down")
        return super().generate(requests, timeout)


# ------------------------------------------------------------------ MLflow in a child process
def mlflow_env(mlflow_store, data_dir=None, **extra) -> dict[str, str]:
    """The environment of a child ``mlflow``/``autotts`` process on ``mlflow_store``."""
    bin_dir = Path(sys.executable).parent  # the console scripts of this environment
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    if data_dir is not None:
        env["AUTOTTS_DATA_DIR"] = str(data_dir)
    return env


SMALL_SEARCH = {"data": ["autotts:Qwen3-1.7B/aime24", "autotts:Qwen3-4B/aime24"], "max_candidates": 5,
                "population": 3, "search_shuffles": 2, "final_shuffles": 3, "finalists": 2,
                "betas": [0.0, 0.5, 1.0], "workers": 2}


def children(client, parent_id) -> dict:
    """A search's candidate runs by candidate id."""
    exp = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.data.tags["autotts.candidate_id"]: r for r in runs}


def kill_and_resume(mlflow_store: str, data_dir: Path, tmp_path: Path, **settings) -> dict:
    """A search (SMALL_SEARCH, 7 candidates, ``settings`` on top) SIGKILLed after 3 candidates and
    resumed: checks that nothing was lost or scored twice; returns the candidates' runs."""
    from mlflow.tracking import MlflowClient

    cfg = dict(SMALL_SEARCH, max_candidates=7, population=2, log_models=False, **settings)
    cfg_file = tmp_path / "search.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    env = mlflow_env(mlflow_store, data_dir)
    cmd = [sys.executable, "-m", "mlflow_autotts.cli", "search", "--config", str(cfg_file), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    client = MlflowClient(mlflow_store)
    parent_id, before = None, {}
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            exp = client.get_experiment_by_name("autotts-search")
            if exp is None:
                continue
            parents = client.search_runs([exp.experiment_id], filter_string="tags.`autotts.command` = 'search'")
            if not parents:
                continue
            parent_id = parents[0].info.run_id
            kids = children(client, parent_id)
            if sum(r.data.tags.get("autotts.state") == "scored" for r in kids.values()) >= 3:
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert parent_id, "the search did not start its parent run"
    # read again once the search is dead: MLflow's search_runs reads a run's row and its tags
    # in separate queries, so a read while it writes can pair a "scored" tag with the row as
    # it was before the run ended
    before = {k: r.info.end_time for k, r in children(client, parent_id).items()
              if r.data.tags.get("autotts.state") == "scored"}
    assert 3 <= len(before) < 7, f"the search was not killed mid-way: {len(before)} candidates scored"
    assert all(t is not None for t in before.values())  # a run tagged scored has ended

    again = ["--executor", settings["executor"]] if "executor" in settings else []
    done = subprocess.run([sys.executable, "-m", "mlflow_autotts.cli", "search", "--resume", parent_id,
                           "--no-progress", *again], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    kids = children(client, parent_id)
    assert sorted(kids) == [f"c{k:04d}" for k in range(7)]  # one run per candidate: none lost, none doubled
    for cid, end_time in before.items():
        assert kids[cid].info.end_time == end_time  # finished candidates were not scored again
    for cid, run in kids.items():
        assert run.data.tags["autotts.state"] in ("scored", "failed")
        if run.data.tags["autotts.state"] == "scored":
            history = client.get_metric_history(run.info.run_id, "accuracy.mean")
            assert len(history) == 3  # one value per β, logged once
    assert client.get_model_version_by_alias("autotts-controller", "challenger")
    return kids


# a small probing controller given as source (never built in): its bill follows β
PROBE_VOTE = '''\
"""A small probing controller: open a few branches, probe each a little, vote."""
from collections import Counter

from mlflow_autotts.controllers.base import Controller


class ProbeVote(Controller):
    name = "probe_vote"

    def __init__(self, beta: float = 0.5, depth: int = 6):
        super().__init__(beta, depth=depth)
        self.depth = int(depth)

    def solve(self, episode):
        latest = []
        for _ in range(2 + round(6 * self.beta)):
            try:
                answer, i, done = episode.probe_new()
            except ValueError:
                break
            for _ in range(self.depth):
                if done:
                    break
                answer, done = episode.probe_more(i)
            latest.append(answer)
        return Counter(latest).most_common(1)[0][0] if latest else None
'''
