"""Serving untrusted controllers: the code decides in a sandbox child, this process owns the
episode and every number about it.

Every test starts real sandbox children; the episodes are real replay episodes.
"""

from __future__ import annotations

import inspect
import random
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlflow_autotts.controllers import baselines, cmc, parallel_probe
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.trajectory import Branches, TrajectorySet
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.replay.episode import RecordingEpisode, replay_cost, shuffle_order
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateFailedError
from mlflow_autotts.sandbox.protocol import Field, Msg, dumps
from mlflow_autotts.sandbox.session import SandboxedController
from tests.helpers import BILL_REWRITER, SIGNAL_SOURCE, random_set, runner_spec

LIMITS = SandboxLimits(wall_seconds=10, cpu_seconds=20, memory_mb=512)
DATA = random_set(6, 16, seed=8, name="Toy/s")


def episodes(ts: TrajectorySet = DATA, seeds=range(2)):
    """(branches, order) of every problem under each seed."""
    return [(p.branches, shuffle_order(p.branches.n_branches, s)) for s in seeds for p in ts.problems]


def same_as_in_process(sandboxed: SandboxedController, reference, cases) -> None:
    for br, order in cases:
        mine, ref = RecordingEpisode(br, order), RecordingEpisode(br, order)
        assert sandboxed.solve(mine) == reference.solve(ref)
        assert (mine.actions, mine.tokens_used, mine.intervals) == (ref.actions, ref.tokens_used, ref.intervals)


# ------------------------------------------------------------------ honest controllers
@pytest.mark.parametrize("module, class_name, spec", [
    (cmc, None, ControllerSpec("cmc", 0.3)),
    (cmc, None, ControllerSpec("cmc", 0.9)),
    (baselines, "SelfConsistency", ControllerSpec("sc", None, {"n": 16})),
    (parallel_probe, None, ControllerSpec("parallel_probe", None, {"chains": 8})),
])
def test_answers_and_tokens_equal_the_in_process_controller(module, class_name, spec):
    with SandboxedController(inspect.getsource(module), class_name, spec.beta, spec.params, LIMITS) as sandboxed:
        reference = spec.build()
        assert (sandboxed.name, sandboxed.uses_beta) == (reference.name, reference.uses_beta)
        assert sandboxed.config() == {"beta": reference.beta, **spec.params}
        same_as_in_process(sandboxed, reference, episodes())
        assert sandboxed.children_started == 1  # one child served every question


def test_per_interval_signals_are_forwarded_where_the_episode_has_them(tmp_path):
    rng = random.Random(3)
    probes = [[rng.choice("ab") for _ in range(rng.randint(0, 5))] for _ in range(6)]
    br = Branches.from_lists("q", 500, probes, [500 * len(p) + 100 for p in probes], [rng.choice("ab") for _ in probes],
                             {"confidence": [[rng.random() for _ in p] for p in probes]})
    path = tmp_path / "confident.py"
    path.write_text(SIGNAL_SOURCE)
    with SandboxedController(SIGNAL_SOURCE, limits=LIMITS) as sandboxed:
        same_as_in_process(sandboxed, runner_spec(str(path)).build(), [(br, shuffle_order(6, s)) for s in range(4)])
        with pytest.raises(CandidateFailedError, match="AttributeError"):  # data without signals
            sandboxed.solve(RecordingEpisode(DATA.problems[0].branches))


def test_concurrent_requests_are_answered_by_a_bounded_pool_of_children():
    cases = episodes(seeds=range(4))
    reference = ControllerSpec("cmc", 0.5).build()
    expected = []
    for br, order in cases:
        ep = RecordingEpisode(br, order)
        expected.append((reference.solve(ep), ep.tokens_used))

    with SandboxedController(inspect.getsource(cmc), beta=0.5, limits=LIMITS, max_children=2) as sandboxed:
        def solve(case):
            ep = RecordingEpisode(*case)
            return sandboxed.solve(ep), ep.tokens_used

        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(solve, cases))
        assert got == expected
        assert 1 <= sandboxed.children_started <= 2


def test_a_child_is_replaced_after_its_share_of_solves():
    with SandboxedController(inspect.getsource(cmc), beta=0.2, limits=LIMITS, max_solves_per_child=3) as sandboxed:
        same_as_in_process(sandboxed, ControllerSpec("cmc", 0.2).build(), episodes(seeds=[0])[:5] * 2)
        assert sandboxed.children_started == 4  # solves 1-3, 4-6, 7-9, 10


def test_time_spent_in_the_episode_does_not_count_against_the_controller():
    class SlowEpisode(RecordingEpisode):
        def probe_more(self, i):
            time.sleep(0.02)  # generation on a real backend takes time too
            return super().probe_more(i)

    limits = SandboxLimits(wall_seconds=0.5, cpu_seconds=20, memory_mb=512)
    br, order = episodes()[0]
    with SandboxedController(inspect.getsource(cmc), beta=1.0, limits=limits) as sandboxed:
        ep = SlowEpisode(br, order)
        t = time.monotonic()
        sandboxed.solve(ep)
        assert time.monotonic() - t > limits.wall_seconds
        assert ep.tokens_used == replay_cost(br, order, ep.actions)[0]


def test_an_episode_error_propagates_and_the_controller_keeps_serving():
    class BackendDown(RuntimeError):
        pass

    class FailingEpisode(RecordingEpisode):
        def probe_more(self, i):
            if len(self.actions) > 3:
                raise BackendDown("the generation backend is down")
            return super().probe_more(i)

    br, order = episodes()[0]
    with SandboxedController(inspect.getsource(cmc), beta=0.5, limits=LIMITS) as sandboxed:
        with pytest.raises(BackendDown):
            sandboxed.solve(FailingEpisode(br, order))
        same_as_in_process(sandboxed, ControllerSpec("cmc", 0.5).build(), episodes()[:3])
        assert sandboxed.children_started == 2  # the interrupted child was not reused


def test_a_source_that_does_not_load_fails_at_construction():
    with pytest.raises(CandidateFailedError) as err:
        SandboxedController("x = 1\n", limits=LIMITS)
    assert isinstance(err.value, ControllerError) and err.value.failure.kind == "import_error"


# ------------------------------------------------------------------ hostile controllers
HEAD = '''
import random
from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.controllers.voting import plurality
os = random._os
sys = os.sys


class Hostile(Controller):
    name = "hostile"

    def solve(self, episode):
        first, i, _ = episode.probe_new()
        episode.probe_new()
'''


def hostile(body: str) -> str:
    return HEAD + textwrap.indent(body.strip("\n"), " " * 8) + "\n"


@pytest.mark.parametrize("body, kind, message", [
    ("return open('/etc/hostname').read()", "forbidden", "open"),
    ("import socket\nsocket.create_connection(('127.0.0.1', 9))", "forbidden", "socket"),
    ("os._exit(3)", "exit", "status 3"),
    ("sys.exit(2)", "exit", "sys.exit(2)"),
    ("while True:\n    pass", "timeout", "wall clock"),
    ("print('x' * 10**7)", "output_limit", "standard output"),
    ("return 'an answer nobody revealed'", "forbidden", "unrevealed_answer"),
    (f"os.write(int(sys.argv[1]), {dumps({Field.TYPE: Msg.ANSWER, Field.ANSWER: 'forged'})!r})\nreturn first",
     "forbidden", "unrevealed_answer"),
    ("return 42", "bad_return", "returned int"),
])
def test_a_hostile_controller_fails_and_the_parents_episode_keeps_its_own_account(body, kind, message):
    limits = SandboxLimits(wall_seconds=2, cpu_seconds=20, memory_mb=512)
    br, order = episodes()[0]
    with SandboxedController(hostile(body), limits=limits) as sandboxed:
        ep = RecordingEpisode(br, order)
        with pytest.raises(CandidateFailedError) as err:
            sandboxed.solve(ep)
        assert (err.value.failure.kind, message in str(err.value)) == (kind, True), err.value
        assert ep.actions == [("probe_new", 0), ("probe_new", 1)]
        assert ep.tokens_used == replay_cost(br, order, ep.actions)[0]


def test_a_bill_rewriting_controller_cannot_touch_the_parents_bill():
    with SandboxedController(BILL_REWRITER, limits=LIMITS) as sandboxed:
        for br, order in episodes(seeds=[0]):
            ep = RecordingEpisode(br, order)
            reference = RecordingEpisode(br, order)
            answers = [reference.get_new_branch_final_answer() for _ in range(br.n_branches)]
            assert sandboxed.solve(ep) == max(dict.fromkeys(answers), key=answers.count)
            assert ep.tokens_used == sum(br.branch_tokens) == reference.tokens_used
