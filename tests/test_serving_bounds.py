"""A served candidate cannot exhaust the server: one bounded pool of sandbox children per
model whatever β the requests ask, children stopped when idle, and every solve capped in
calls and time (its request's end). Fast tests drive the runner in process; the slow one
sends 60 requests with 60 β values to a real ``mlflow models serve``."""

from __future__ import annotations

import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from mlflow_autotts.controllers import cmc
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.replay.episode import RecordingEpisode, ReplayEpisode, shuffle_order
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateFailedError
from mlflow_autotts.sandbox.session import SandboxedController
from mlflow_autotts.serving.model_config import candidate_config
from mlflow_autotts.serving.runners import ControllerFailed
from mlflow_autotts.serving.sandbox_runner import SandboxRunner, ServingSandbox
from tests.helpers import random_set
from tests.servers import served_model

CMC_SOURCE = inspect.getsource(cmc).replace("@register_controller\n", "")
DATA = random_set(8, 16, seed=11, name="Toy/bounds")
LIMITS = SandboxLimits(wall_seconds=20, cpu_seconds=20, memory_mb=512)

SPINNER = '''
from mlflow_autotts.controllers.base import Controller

class Spinner(Controller):
    """Probes one finished branch forever: every call is free, none ends the episode."""

    def solve(self, episode):
        _, i, _ = episode.probe_new()
        while True:
            episode.probe_more(i)
'''


def _runner(tmp_path: Path, settings: ServingSandbox, source: str = CMC_SOURCE, cls: str = "ConfidenceMomentum"):
    path = tmp_path / f"{cls}.py"
    path.write_text(source)
    return SandboxRunner(candidate_config(source, cls, cls, 0.5), path, settings)


def test_sixty_betas_share_one_bounded_pool(tmp_path):
    runner = _runner(tmp_path, ServingSandbox(children=2, memory_mb=512))
    betas = [k / 59 for k in range(60)]
    problems = [DATA.problems[k % len(DATA)] for k in range(60)]

    def ask(k: int):
        br = problems[k].branches
        episode = ReplayEpisode(br, shuffle_order(br.n_branches, k))
        answer = runner.bind(betas[k]).solve(episode)
        return answer, episode.tokens_used

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, range(60)))
    for k, (answer, tokens) in enumerate(got):  # each at its own β, as CMC in process would
        br = problems[k].branches
        ref = ReplayEpisode(br, shuffle_order(br.n_branches, k))
        assert (answer, tokens) == (cmc.ConfidenceMomentum(betas[k]).solve(ref), ref.tokens_used)
    assert runner.controller.live_children <= 2 and runner.controller.children_started <= 2
    runner.controller.close()


def test_idle_children_are_stopped(tmp_path):
    runner = _runner(tmp_path, ServingSandbox(children=2, idle_seconds=0.5))
    br = DATA.problems[0].branches
    runner.bind(0.4).solve(ReplayEpisode(br, shuffle_order(br.n_branches, 0)))
    assert runner.controller.live_children == 1
    deadline = time.monotonic() + 10
    while runner.controller.live_children and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runner.controller.live_children == 0
    # the next request starts a child again
    assert runner.bind(0.6).solve(ReplayEpisode(br, shuffle_order(br.n_branches, 1))) is not None
    runner.controller.close()


def test_a_solve_has_a_cap_on_its_calls():
    with SandboxedController(SPINNER, "Spinner", 0.5, limits=SandboxLimits(max_episode_calls=500)) as ctrl:
        br = DATA.problems[0].branches
        episode = RecordingEpisode(br, shuffle_order(br.n_branches, 0))
        with pytest.raises(CandidateFailedError, match="more than 500 episode calls"):
            ctrl.solve(episode)
        assert len(episode.actions) <= 501
        assert ctrl.live_children == 0  # the child was killed


class _SlowEpisode(ReplayEpisode):
    """A replay episode whose calls take time here, as generation does (not the child's time)."""

    def probe_more(self, i):
        time.sleep(0.05)
        return super().probe_more(i)


def test_a_solve_ends_with_its_request(tmp_path):
    runner = _runner(tmp_path, ServingSandbox(request_seconds=1.5), SPINNER, "Spinner")
    br = DATA.problems[0].branches
    started = time.monotonic()
    with pytest.raises(ControllerFailed, match="request's time ran out"):
        runner.bind(0.5).solve(_SlowEpisode(br, shuffle_order(br.n_branches, 0)))
    assert time.monotonic() - started < 5
    assert runner.controller.live_children == 0
    runner.controller.close()


@pytest.mark.parametrize("var, value", [("AUTOTTS_SANDBOX_CHILDREN", "0"), ("AUTOTTS_SANDBOX_CHILDREN", "two"),
                                        ("AUTOTTS_SANDBOX_MEMORY_MB", "-1"), ("AUTOTTS_SANDBOX_IDLE_SECONDS", "nan"),
                                        ("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "inf")])
def test_bad_serving_settings_are_named(var, value):
    with pytest.raises(ControllerError, match=f"^{var}="):
        ServingSandbox.from_env({var: value})


def _sandbox_processes(port: str) -> list[tuple[int, int, int]]:
    """(pid, parent pid, resident KiB) of every sandbox process descending from the server on
    ``port`` (``mlflow models serve`` and the uvicorn it starts), read from /proc."""
    procs = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            cmd = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        procs[int(status.parent.name)] = (int(fields["PPid"]), int(fields.get("VmRSS", "0 kB").split()[0]), cmd)
    roots = {p for p, (_, _, cmd) in procs.items() if port.encode() in cmd and b"sandbox.worker" not in cmd}

    def descends(p: int) -> bool:
        while p in procs and p > 1:
            if p in roots:
                return True
            p = procs[p][0]
        return False

    return [(p, pp, rss) for p, (pp, rss, cmd) in procs.items()
            if b"mlflow_autotts.sandbox.worker" in cmd and descends(p)]


@pytest.mark.slow
def test_sixty_betas_through_mlflow_models_serve_leave_a_bounded_server(mlflow_store, tmp_path):
    from mlflow_autotts.tracking.model_registry import register

    path = tmp_path / "cmc_copy.py"
    path.write_text(CMC_SOURCE)
    register(ControllerSpec(str(path), 0.5), aliases=["champion"])
    rows = []
    for p in DATA.problems:
        br = p.branches
        rows.append([br.question, [[list(br.probe_answers[br.probe_offsets[b]:br.probe_offsets[b + 1]]),
                                    br.branch_tokens[b], br.final_answers[b]] for b in range(br.n_branches)]])
    env = {"AUTOTTS_SANDBOX_CHILDREN": "2", "AUTOTTS_SANDBOX_IDLE_SECONDS": "3"}
    with served_model("models:/autotts-controller@champion", tmp_path, env) as url:
        port = url.rsplit(":", 1)[1]

        def ask(k: int):
            body = {"dataframe_split": {"columns": ["question", "trajectory"], "data": [rows[k % len(rows)]]},
                    "params": {"beta": k / 59, "shuffle_seed": k}}
            return requests.post(f"{url}/invocations", json=body, timeout=120)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(60)))
        assert all(r.status_code == 200 for r in answers), [r.text[:300] for r in answers if r.status_code != 200]
        predictions = [r.json()["predictions"][0] for r in answers]
        assert all(p["error"] is None and p["answer"] is not None for p in predictions)
        assert len({p["tokens"] for p in predictions}) > 1  # β reached the controller
        workers = _sandbox_processes(port)
        zygotes = [w for w in workers if w[1] not in {x[0] for x in workers}]
        assert 1 <= len(zygotes) <= 2, workers
        assert sum(rss for _, _, rss in workers) < 2 * 2 * 1024 * 1024  # KiB: children × processes × memory_mb
        deadline = time.monotonic() + 20
        while _sandbox_processes(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _sandbox_processes(port)  # idle children were stopped
