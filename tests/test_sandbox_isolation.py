"""The isolation a candidate ran under is observed and recorded, and weaker isolation than
configured is refused; limits and failure kinds are the parent's, out of the candidate's reach.

Every test starts real sandbox children.
"""

from __future__ import annotations

import os
import textwrap

import pytest

from mlflow_autotts.replay.runner import ReplayConfig, evaluate
from mlflow_autotts.sandbox import child
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.outcome import SandboxIsolationError
from mlflow_autotts.sandbox.process import (
    ProcessSandbox,
    _prepared,
    _Run,
    candidate_actions,
    run_candidate,
)
from mlflow_autotts.sandbox.protocol import EPISODE_PROCESSES, FailureKind, Field, Msg, dumps
from mlflow_autotts.sandbox.session import SandboxedController
from mlflow_autotts.search.archive import Archive
from mlflow_autotts.search.config import build_config
from mlflow_autotts.search.loop import Scorer, run_search
from tests.helpers import MemoryRecorder, ScriptedExplorer, random_set, runner_spec

LIMITS = SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=512)
DATA = [random_set(4, 8, seed=6, name="Toy/i")]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and a uid of its own need root")

HEAD = '''
import random
from mlflow_autotts.controllers.base import Controller
os = random._os
sys = os.sys


class Probe(Controller):
    name = "probe"

    def solve(self, episode):
'''


def candidate(body: str) -> str:
    return HEAD + textwrap.indent(body.strip("\n"), " " * 8) + "\n"


HONEST = candidate("return episode.get_new_branch_final_answer()")


@pytest.fixture
def no_unshare(monkeypatch):
    """This machine as one where ``unshare --net`` fails (no CAP_SYS_ADMIN, no user namespaces)."""
    monkeypatch.setattr(child, "netns_prefix", lambda: ((), "unshare failed: simulated"))


# ------------------------------------------------------------------ recorded isolation
@root_only
def test_every_outcome_records_the_isolation_observed_from_proc():
    out = run_candidate(HONEST, DATA, [0.5], [0], LIMITS)
    iso = out.isolation
    assert out.ok and iso.observed_by == "parent" and iso.as_configured
    assert iso.network_namespace and iso.chroot and iso.own_uid and iso.audit_hook
    assert iso.uid not in (0, os.getuid())
    assert (iso.rlimit_as, iso.rlimit_cpu) == (LIMITS.memory_bytes, LIMITS.cpu_rlimit)
    # the uid may hold the child and the one fork that plays the current episode
    assert (iso.rlimit_fsize, iso.rlimit_core, iso.rlimit_nproc, iso.rlimit_nofile) == \
        (0, 0, EPISODE_PROCESSES, LIMITS.max_open_files)
    flat = iso.as_dict()
    assert flat["missing"] == "" and flat["network_namespace"] is True and flat["rlimit_nproc"] == EPISODE_PROCESSES


@root_only
def test_the_sandbox_reports_its_isolation_without_running_a_candidate():
    iso = ProcessSandbox(LIMITS).isolation()
    scored = run_candidate(HONEST, DATA, [0.5], [0], LIMITS).isolation
    assert {k: v for k, v in iso.as_dict().items() if k != "uid"} == \
        {k: v for k, v in scored.as_dict().items() if k != "uid"}


def test_no_network_namespace_is_refused_instead_of_silently_running(no_unshare):
    with pytest.raises(SandboxIsolationError) as err:
        run_candidate(HONEST, DATA, [0.5], [0], LIMITS)
    assert "network_namespace" in err.value.isolation.missing and not err.value.isolation.network_namespace
    assert "unshare failed: simulated" in str(err.value) and "allow_weaker_isolation" in str(err.value)
    with pytest.raises(SandboxIsolationError):
        SandboxedController(HONEST, limits=LIMITS)


def test_weaker_isolation_runs_when_allowed_and_says_so(no_unshare, tmp_path):
    weaker = SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=512, allow_weaker_isolation=True)
    out = run_candidate(HONEST, DATA, [0.5], [0], weaker)
    assert out.ok and not out.isolation.network_namespace
    assert "network_namespace" in out.isolation.missing and not out.isolation.as_configured
    path = tmp_path / "honest.py"
    path.write_text(HONEST)
    ref = evaluate(runner_spec(str(path), 0.5), DATA, ReplayConfig(shuffles=1, workers=1, progress=False))
    assert [(r.accuracy, r.mean_tokens) for r in out.results] == [(r.accuracy, r.mean_tokens) for r in ref]


@root_only
def test_root_without_a_uid_switch_is_refused_because_the_process_limit_does_not_bind_root():
    limits = SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=512, drop_privileges=False)
    with pytest.raises(SandboxIsolationError) as err:
        run_candidate(HONEST, DATA, [0.5], [0], limits)
    iso = err.value.isolation
    # as root a process limit binds nothing, so none is set: each episode's fork needs one
    assert iso.missing == ("rlimit_nproc",) and iso.uid == 0 and not iso.chroot


def test_the_refusal_happens_before_any_candidate_code_runs(no_unshare, tmp_path):
    # the child stops after its lockdown and waits: a source that would print never gets compiled
    src = "print('candidate code ran')\n" + HONEST
    with pytest.raises(SandboxIsolationError):
        run_candidate(src, DATA, [0.5], [0], LIMITS)
    out = run_candidate(src, DATA, [0.5], [0], SandboxLimits(wall_seconds=20, allow_weaker_isolation=True))
    assert "candidate code ran" in out.output


# ------------------------------------------------------------------ limits out of reach
@pytest.mark.parametrize("body", [
    "sys.stdout.limit = 10**12\nprint('x' * 3_000_000)",
    "sys.stdout = None\nos.write(1, b'x' * 3_000_000)",
    "os.write(2, b'x' * 3_000_000)",
])
def test_the_output_limit_is_counted_by_the_parent(body):
    out = run_candidate(candidate(body), DATA, [0.5], [0], LIMITS)
    assert out.failure.kind == "output_limit", out.failure
    assert len(out.output) == LIMITS.keep_output_bytes


def test_output_below_the_limit_is_kept_and_does_not_fail():
    out = run_candidate(candidate("print('hello from the candidate')\nreturn episode.get_new_branch_final_answer()"),
                        DATA, [0.5], [0], LIMITS)
    assert out.ok and out.output.count("hello from the candidate") == len(DATA[0])


def test_the_parent_buffers_at_most_the_largest_legitimate_message():
    run = _Run(HONEST, _prepared(DATA, [0, 1]), [0.5], LIMITS, None, {}, False)
    assert run.max_line < 256 * 1024  # answers capped at 1000 characters, one int per branch
    start = dumps({Field.TYPE: Msg.EPISODE, Field.ANSWER_GIVEN: ""})[:-3]  # a message that never ends
    flood = candidate(f"os.write(int(sys.argv[1]), {start!r} + b'x' * 4_000_000)")
    out = run_candidate(flood, DATA, [0.5], [0], LIMITS)
    assert out.failure.kind == "forbidden" and f"exceeded {run.max_line} bytes" in out.failure.message


def test_a_traced_episode_keeps_a_bounded_action_log():
    endless = candidate("answer, i, done = episode.probe_new()\nwhile True:\n    episode.probe_more(i)")
    br = DATA[0].problems[0].branches
    answer, actions, out = candidate_actions(endless, br, 0, 0.5, LIMITS)
    assert out.failure.kind == "exception" and "more actions than a trace records" in out.failure.message


# ------------------------------------------------------------------ failure kinds
FORGED_TIMEOUT = dumps({Field.TYPE: Msg.FAIL, Field.KIND: FailureKind.TIMEOUT, Field.MESSAGE: "x", Field.TRACEBACK: "",
                        Field.WHERE: None})

@pytest.mark.parametrize("body, kind, message", [
    # text on stderr decides nothing
    ("os.write(2, b'MemoryError\\n')\nos._exit(1)", "exit", "status 1"),
    ("""os.write(2, b'Traceback\\nMemoryError: out of memory\\n')
sys.setrecursionlimit(10**8)
nest = []
for _ in range(10**6):
    nest = [nest]
repr(nest)""", "crash", "SIGSEGV"),
    # nor can a forged failure report claim a kind only the parent decides
    (f"os.write(int(sys.argv[1]), {FORGED_TIMEOUT!r})\nos._exit(0)", "forbidden", "cannot come from the child"),
])
def test_failure_kinds_come_from_what_the_parent_observes(body, kind, message):
    out = run_candidate(candidate(body), DATA, [0.5], [0], LIMITS)
    assert (out.failure.kind, message in out.failure.message) == (kind, True), out.failure


def test_a_small_child_of_a_large_parent_is_not_called_out_of_memory():
    # Linux carries a spawning process's peak RSS across exec into the child's ru_maxrss
    hog = bytearray(b"\x01") * int(LIMITS.memory_bytes * 1.2)
    out = run_candidate(candidate("os._exit(3)"), DATA, [0.5], [0], LIMITS)
    assert out.failure.kind == "exit" and len(hog) > LIMITS.memory_bytes
    assert 0 < out.timings.child_max_rss_mb < 0.5 * LIMITS.memory_mb


def test_cpu_time_from_rusage_makes_a_timeout():
    out = run_candidate(candidate("while True:\n    pass"), DATA, [0.5], [0],
                        SandboxLimits(wall_seconds=20, cpu_seconds=1))
    assert out.failure.kind == "timeout" and "CPU" in out.failure.message
    assert out.timings.child_cpu >= 0.9  # the kernel's own account, not the candidate's


# ------------------------------------------------------------------ the search
def test_a_search_refuses_weaker_isolation_before_proposing_anything(no_unshare):
    cfg = build_config(None, {"data": ["x"], "max_candidates": 2, "population": 1, "workers": 1,
                              "search_shuffles": 1, "betas": [0.5], "candidate_timeout_s": 20})
    explorer, recorder = ScriptedExplorer([HONEST]), MemoryRecorder()
    with pytest.raises(SandboxIsolationError):
        run_search(cfg.budget, explorer, Scorer(cfg.scoring, cfg.betas, DATA), recorder, Archive.from_candidates,
                   workers=cfg.workers, progress_bar=False)
    assert explorer.calls == 0 and recorder.created_ids == []


@root_only
def test_a_search_reports_the_isolation_it_ran_under():
    cfg = build_config(None, {"data": ["x"], "max_candidates": 1, "population": 1, "workers": 1,
                              "search_shuffles": 1, "betas": [0.5], "candidate_timeout_s": 20})
    out = run_search(cfg.budget, ScriptedExplorer([HONEST]), Scorer(cfg.scoring, cfg.betas, DATA), MemoryRecorder(),
                     Archive.from_candidates, workers=cfg.workers, progress_bar=False)
    assert out.isolation is not None and out.isolation.as_configured and out.isolation.own_uid
