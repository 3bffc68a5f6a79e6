"""The candidate sandbox: exact scores for honest controllers, a clear failure for hostile ones.

Every test here starts real child processes (one per candidate, ~0.1 s each). Hostile
candidates are each followed by an honest one that must still score exactly like the
in-process runner, as the search loop relies on.
"""

from __future__ import annotations

import inspect
import random
import socket
import time

import pytest

from mlflow_autotts.controllers import baselines, cmc, parallel_probe
from mlflow_autotts.controllers.cmc import ConfidenceMomentum
from mlflow_autotts.data.json_io import read_json
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.replay.episode import RecordingEpisode, replay_cost, shuffle_order
from mlflow_autotts.sandbox import process as sandbox
from mlflow_autotts.sandbox.cost import controller_actions, summary_cost, summary_from_actions
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.outcome import EPISODE_COLUMNS, FAILURE_KINDS
from mlflow_autotts.sandbox.process import candidate_actions, run_candidate
from mlflow_autotts.sandbox.protocol import MAC_HEX, Field, Msg, Op, dumps
from tests.helpers import HONEST, SIGNAL_SOURCE, hostile, make_branches, random_set, runner_results

LIMITS = SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=512)
CMC_SOURCE = inspect.getsource(cmc)

SMALL = [random_set(5, 12, seed=3, name="Toy/a"), random_set(4, 9, seed=4, name="Toy/b")]

def _assert_same(outcome, reference) -> None:
    """Same accuracy and tokens per (β, dataset), and the same episodes, as the runner."""
    assert outcome.ok, outcome.failure
    assert len(outcome.results) == len(reference)
    frame = outcome.episodes_frame()
    for got, ref in zip(outcome.results, reference):
        assert (got.data, got.accuracy, got.mean_tokens) == (ref.data, ref.accuracy, ref.mean_tokens)
        mine = frame[(frame["dataset"] == got.data) & (frame["beta"] == got.beta)]
        cols = ["problem", "shuffle", "answer", "correct", "tokens", "branches_opened", "intervals"]
        assert mine[cols].reset_index(drop=True).equals(ref.episodes[cols].reset_index(drop=True))


@pytest.fixture(scope="module")
def honest_reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("honest") / "honest.py"
    path.write_text(HONEST)
    return runner_results(str(path), SMALL, [0.25, 0.75], 3)


def _check_honest_still_scores(reference) -> None:
    _assert_same(run_candidate(HONEST, SMALL, [0.25, 0.75], range(3), LIMITS), reference)


# ------------------------------------------------------------------ honest candidates
def test_cmc_source_scores_exactly_like_the_runner_on_synthetic_data():
    betas = [0.0, 0.4, 1.0]
    out = run_candidate(CMC_SOURCE, SMALL, betas, range(4), LIMITS)
    _assert_same(out, runner_results("cmc", SMALL, betas, 4))
    assert out.controller_name == "cmc" and out.uses_beta
    assert [(r.data, r.beta) for r in out.results] == [(d.name, b) for b in betas for d in SMALL]
    assert list(out.episodes_frame().columns) == list(EPISODE_COLUMNS)
    assert out.timings.episodes == len(out.episodes) == 3 * 4 * (5 + 4)
    evals = out.as_eval_results()
    assert [(e.data, e.beta, e.accuracy) for e in evals] == [(r.data, r.beta, r.accuracy) for r in out.results]
    assert out.isolation.audit_hook and out.isolation.rlimit_as == LIMITS.memory_bytes


@pytest.mark.parametrize("module, class_name, ref", [
    (parallel_probe, None, "parallel_probe"),
    (baselines, "EarlyStoppingConsistency", "esc"),
    (baselines, "AdaptiveConsistency", "asc"),
])
def test_reference_sources_score_like_the_runner(module, class_name, ref):
    out = run_candidate(inspect.getsource(module), SMALL, [0.5], range(3), LIMITS, class_name=class_name)
    _assert_same(out, runner_results(ref, SMALL, [0.5], 3))
    assert out.uses_beta is False


def test_cmc_source_scores_exactly_like_the_runner_on_published_data(data_dir):
    sets = [read_json(data_dir / m / "aime24.json", Provenance(m, "aime24")).subset(range(0, 30, 5))
            for m in ("Qwen3-0.6B", "Qwen3-4B", "Qwen3-8B")]
    betas = [0.3, 0.9]
    _assert_same(run_candidate(CMC_SOURCE, sets, betas, range(3), LIMITS), runner_results("cmc", sets, betas, 3))


def test_per_interval_signals_match_the_in_process_episode(tmp_path):
    rng = random.Random(7)
    problems = []
    for p in range(4):
        probes = [[rng.choice("ab") for _ in range(rng.randint(0, 5))] for _ in range(6)]
        conf = {"confidence": [[rng.random() for _ in pr] for pr in probes]}
        br = Branches.from_lists(f"q{p}", 500, probes, [500 * len(pr) + 100 for pr in probes],
                                 [rng.choice("ab") for _ in probes], conf)
        problems.append(Problem(br, "a"))
    ts = TrajectorySet(problems, Provenance("Sig", "set"))
    path = tmp_path / "confident.py"
    path.write_text(SIGNAL_SOURCE)
    out = run_candidate(SIGNAL_SOURCE, [ts], [0.5], range(3), LIMITS)
    _assert_same(out, runner_results(str(path), [ts], [0.5], 3))


def test_signals_are_absent_without_signal_data():
    src = HONEST.replace("finals = []", "assert not hasattr(episode, 'signals')\n        finals = []")
    assert run_candidate(src, SMALL[:1], [0.5], [0], LIMITS).ok


def test_full_action_logs_equal_the_recording_episode():
    br = SMALL[0].problems[1].branches
    for seed, beta in [(0, 0.2), (3, 0.9)]:
        answer, actions, out = candidate_actions(CMC_SOURCE, br, seed, beta, LIMITS)
        assert out.ok, out.failure
        order = shuffle_order(br.n_branches, seed)
        ref_answer, ref_actions, ref_cost = controller_actions(ConfidenceMomentum(beta), br, order)
        assert (answer, actions) == (ref_answer, ref_actions)
        row = out.episodes[0]
        assert (row.tokens, row.branches_opened, row.intervals) == ref_cost == replay_cost(br, order, actions)


def test_summary_cost_equals_replay_cost_on_random_logs():
    rng = random.Random(11)
    for ts in SMALL:
        for prob in ts.problems:
            br = prob.branches
            for seed in range(5):
                order = shuffle_order(br.n_branches, seed)
                ep = RecordingEpisode(br, order)
                for _ in range(rng.randint(0, 60)):
                    move = rng.random()
                    try:
                        if move < 0.2:
                            ep.probe_new()
                        elif move < 0.3:
                            ep.get_new_branch_final_answer()
                        elif ep.branches_opened:
                            ep.probe_more(rng.randrange(ep.branches_opened))
                    except ValueError:
                        pass
                summary = summary_from_actions(br, order, ep.actions)
                assert summary_cost(br, order, summary) == replay_cost(br, order, ep.actions)
                assert summary_cost(br, order, summary) == (ep.tokens_used, ep.branches_opened, ep.intervals)


def test_impossible_summaries_are_rejected():
    br = make_branches([(["1", "2"], 1200, "2"), ([], 300, "3")])
    order = (0, 1)
    assert summary_cost(br, order, [3, 0]) == (1000 + 200 + 300, 2, 4)
    for bad in ([4], [0, 0, 0], [1, 2], [-1]):
        with pytest.raises(ValueError):
            summary_cost(br, order, bad)


def test_the_child_never_receives_gold_answers_or_the_environment(monkeypatch):
    canaries = [f"GOLD-CANARY-{i}" for i in range(3)]
    ts = TrajectorySet([Problem(p.branches, c) for p, c in zip(SMALL[0].problems, canaries)], Provenance("C", "c"))
    monkeypatch.setenv("AUTOTTS_DATA_DIR", "/secret/data/dir")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SECRET-CANARY")
    prep = sandbox._prepared([ts], [0, 1])
    assert not any(c.encode() in prep.blob for c in canaries)
    assert b"/work" not in prep.blob and b"autotts-replay" not in prep.blob
    src = HONEST.replace("finals = []", "import random\n        print(sorted(random._os.environ.items()))\n"
                                        "        finals = []")
    out = run_candidate(src, [ts], [0.5], [0], LIMITS)
    assert out.ok, out.failure
    assert "PATH" in out.output and "SECRET" not in out.output and "/secret" not in out.output


# ------------------------------------------------------------------ hostile candidates
# the first episode with a made-up seal (the child does not know the key)
FORGED_BLOCK = dumps({Field.TYPE: Msg.EPISODE, Field.BETA_INDEX: 0, Field.DATASET_INDEX: 0, Field.SHUFFLE_INDEX: 0,
                      Field.PROBLEM_INDEX: 0, Field.ANSWER_GIVEN: None, Field.SUMMARY: [], Field.VIOLATIONS: 0,
                      Field.MAC: "0" * MAC_HEX})

HOSTILE = [
    # reading the gold answer (never in the child) or the branches behind the oracle
    ("gc_import", "import gc\nreturn str(gc.get_objects())", "forbidden", "import of 'gc'"),
    ("gc_walk", "return str(sys.modules['gc'].get_objects())", "forbidden", "gc.get_objects"),
    ("gc_referents", "return str(sys.modules['gc'].get_referents(episode._send.__self__))", "forbidden",
     "gc.get_referents"),
    ("caller_frame", "return str(sys._getframe().f_back.f_locals)", "forbidden", "sys._getframe"),
    ("inspect_stack", "import mlflow_autotts.controllers.base as b\nreturn str(b.inspect.stack())", "forbidden",
     "sys._getframe"),
    ("traceback_frame", """
try:
    1 / 0
except ZeroDivisionError as e:
    return str(e.__traceback__.tb_frame.f_back.f_locals)
""", "forbidden", "tb_frame"),
    ("oracle_frame", "return str(episode._send.__self__.gi_frame.f_locals)", "forbidden", "gi_frame"),
    ("trace_hook", "sys.settrace(lambda *a: None)", "forbidden", "sys.settrace"),
    ("signal_handler", "sys.modules['_signal'].setitimer(0, 1e-4)", "exception", "KeyError"),
    ("fresh_signal_module", """
spec = sys.modules['importlib.machinery'].ModuleSpec('_signal', None, origin='built-in')
sys.modules['_imp'].create_builtin(spec)
""", "forbidden", "creating modules"),
    ("data_module", "import mlflow_autotts.data.json_io", "forbidden", "mlflow_autotts.data.json_io"),
    ("data_file", "return open('/work/shared/data/autotts-replay/Qwen3-4B/aime24.json').read(100)", "forbidden",
     "open"),
    ("data_dir_env", "return open(os.environ.get('AUTOTTS_DATA_DIR', '.') + '/Qwen3-4B/aime24.json').read()",
     "forbidden", "open"),
    ("proc_self", "return open('/proc/self/environ', 'rb').read().decode()", "forbidden", "open"),
    ("parent_memory", "return open(f'/proc/{os.getppid()}/mem', 'rb').read(1).decode()", "forbidden", "open"),
    ("list_files", "return str(os.listdir('/'))", "forbidden", "os.listdir"),
    ("code_object", "(lambda: 0).__code__.replace(co_consts=(1,))", "forbidden", "code.__new__"),
    ("audit_hook", "sys.addaudithook(lambda *a: None)\nreturn None", "forbidden", "sys.addaudithook"),
    # processes, network, files
    ("fork", "os.fork()", "forbidden", "os.fork"),
    ("subprocess", "import subprocess\nsubprocess.run(['true'])", "forbidden", "import of 'subprocess'"),
    ("system", "os.system('true')", "forbidden", "os.system"),
    ("spawn", "os.posix_spawn('/bin/true', ['true'], {})", "forbidden", "os.posix_spawn"),
    ("exec", "os.execv('/bin/true', ['true'])", "forbidden", "os.exec"),
    ("kill_parent", "os.kill(os.getppid(), 9)", "forbidden", "os.kill"),
    ("escape_builtins", "exec(\"import os; os.system('true')\", {'__builtins__': sys.modules['builtins']})",
     "forbidden", "os.system"),
    ("subclass_walk", """
w = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]
w.__init__.__globals__['system']('true')
""", "forbidden", "os.system"),
    ("socket", "import socket", "forbidden", "import of 'socket'"),
    ("ctypes", "import ctypes", "forbidden", "import of 'ctypes'"),
    ("thread", "sys.modules['_thread'].start_new_thread(print, ('x',))", "exception", "thread"),
    # misbehaving
    ("raise", "raise ValueError('boom')", "exception", "ValueError: boom"),
    ("return_int", "return 42", "bad_return", "returned int"),
    ("return_list", "return ['a']", "bad_return", "returned list"),
    ("print_megabytes", "print('x' * 10**7)", "output_limit", "standard output"),
    ("output_limit_switched_off", "sys.stdout.limit = 10**12\nprint('x' * 10**7)", "output_limit", "standard output"),
    ("raw_megabytes", "os.write(1, b'x' * 4_000_000)", "output_limit", "standard output"),
    ("sys_exit", "sys.exit(3)", "exit", "sys.exit(3)"),
    ("os_exit", "os._exit(3)", "exit", "status 3"),
    ("recursion", "def f(n):\n    return f(n + 1)\nf(0)", "exception", "RecursionError"),
    ("memory_bomb", "x = bytearray(10**11)", "memory", "out of memory"),
    ("memory_growth", "hog = []\nwhile True:\n    hog.append(' ' * 10**6)", "memory", "out of memory"),
    ("interpreter_crash", """
sys.setrecursionlimit(10**8)
nest = []
for _ in range(10**6):
    nest = [nest]
repr(nest)
""", "crash", "SIGSEGV"),
    # lying about the actions
    ("forge_done", f"os.write(int(sys.argv[1]), {dumps({Field.TYPE: Msg.DONE})!r})\nos._exit(0)",
     "forbidden", "protocol"),
    ("forge_block", f"os.write(int(sys.argv[1]), {FORGED_BLOCK!r})\nos._exit(0)", "forbidden", "integrity"),
    ("garbage_protocol", "os.write(int(sys.argv[1]), b'[1, 2]\\n')\nreturn None", "forbidden", "protocol"),
    ("hardcoded_answer", "episode.probe_new()\nreturn 'a guess nobody revealed'", "forbidden", "unrevealed_answer"),
    ("restart_episode", f"episode.get_new_branch_final_answer()\nepisode._send({int(Op.SEAL)})\nreturn None",
     "forbidden", "tampered"),
    ("kill_oracle", "episode._send.__self__.close()\nreturn None", "forbidden", "tampered"),
]


@pytest.mark.parametrize("body, kind, message", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_candidate_fails_and_the_next_one_scores(body, kind, message, honest_reference):
    assert kind in FAILURE_KINDS
    out = run_candidate(hostile(body), SMALL, [0.25, 0.75], range(3), LIMITS)
    assert out.failure is not None and not out.ok
    assert (out.failure.kind, message in str(out.failure)) == (kind, True), out.failure
    assert not out.results
    _check_honest_still_scores(honest_reference)


def test_failure_names_the_episode_and_the_candidate_line():
    src = HONEST.replace("finals = []", "if self.beta > 0.5 and episode.question == 'question 2':\n"
                                        "            raise KeyError('bad')\n        finals = []")
    out = run_candidate(src, SMALL, [0.25, 0.75], range(3), LIMITS)
    assert out.failure.kind == "exception"
    assert out.failure.where == {"beta": 0.75, "data": "Toy/a", "problem": 2, "shuffle": 0}
    assert 'File "<candidate>", line' in out.failure.traceback and "raise KeyError('bad')" in out.failure.traceback
    # what was finished before the failure is kept (partial), the gate is ``ok``
    assert not out.ok and [(r.beta, r.data) for r in out.results] == [(0.25, "Toy/a"), (0.25, "Toy/b")]
    assert len(out.episodes) == 3 * (5 + 4)


def test_unrevealed_answer_is_counted_wrong():
    src = HONEST.replace("finals = []", "if episode.question == 'question 1':\n            episode.probe_new()\n"
                                        "            return 'made up'\n        finals = []")
    out = run_candidate(src, SMALL, [1.0], range(2), LIMITS)
    assert out.failure.kind == "forbidden" and "unrevealed_answer" in out.failure.message
    assert out.failure.where == {"beta": 1.0, "data": "Toy/a", "problem": 1, "shuffle": 0}
    assert out.episodes[-1][2:6] == (1, 0, "made up", False)


def test_wall_clock_timeout_kills_a_sleeping_candidate():
    t = time.monotonic()
    out = run_candidate(hostile("sys.modules['time'].sleep(100)"), SMALL, [0.5], [0],
                        SandboxLimits(wall_seconds=2, cpu_seconds=10))
    assert out.failure.kind == "timeout" and "wall clock" in out.failure.message
    assert time.monotonic() - t < 6


def test_cpu_limit_stops_an_infinite_loop():
    out = run_candidate(hostile("while True:\n    pass"), SMALL, [0.5], [0],
                        SandboxLimits(wall_seconds=20, cpu_seconds=1))
    assert out.failure.kind == "timeout" and "CPU" in out.failure.message
    assert out.timings.total < 10


def test_no_file_is_written(tmp_path):
    target = tmp_path / "written.txt"
    for body in (f"open({str(target)!r}, 'w').write('x')",
                 f"os.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY))",
                 f"os.system('touch {target}')"):
        out = run_candidate(hostile(body), SMALL, [0.5], [0], LIMITS)
        assert out.failure.kind == "forbidden", out.failure
    assert not target.exists()


def test_no_connection_reaches_a_loopback_server():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        body = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
        out = run_candidate(hostile(body), SMALL, [0.5], [0], LIMITS)
        assert out.failure.kind == "forbidden"
        with pytest.raises(BlockingIOError):
            server.accept()


@pytest.mark.parametrize("source, class_name, kind, message", [
    ("class Broken(:\n    pass\n", None, "import_error", "syntax error at line 1"),
    ("x = 1\n", None, "import_error", "defines no Controller subclass"),
    (HONEST + HONEST.replace("FirstAgreement", "Second"), None, "import_error", "defines several controllers"),
    (HONEST, "Missing", "import_error", "no controller class 'Missing'"),
    ("from math import not_there\n" + HONEST, None, "import_error", "not_there"),
    (HONEST.replace('name = "first_agreement"', 'def __init__(self, beta=0.5):\n        raise RuntimeError("no")'),
     None, "exception", "RuntimeError: no"),
])
def test_sources_that_cannot_be_loaded(source, class_name, kind, message):
    out = run_candidate(source, SMALL, [0.5], [0], LIMITS, class_name=class_name)
    assert (out.failure.kind, message in out.failure.message) == (kind, True), out.failure


def test_unknown_parameters_fail_the_candidate():
    out = run_candidate(CMC_SOURCE, SMALL, [0.5], [0], LIMITS, params={"nope": 1})
    assert out.failure.kind == "exception" and "no parameter 'nope'" in out.failure.message
    out = run_candidate(HONEST, SMALL, [0.5], [0], LIMITS, params={"free": [1, 2]})  # **params: accepted
    assert out.ok


def test_caller_errors_raise_value_error():
    for kwargs in ({"betas": [1.5]}, {"betas": []}, {"seeds": [-1]}, {"datasets": []}):
        args = {"source": HONEST, "datasets": SMALL, "betas": [0.5], "seeds": [0]} | kwargs
        with pytest.raises(ValueError):
            run_candidate(limits=LIMITS, **args)
    with pytest.raises(ValueError):
        SandboxLimits(wall_seconds=0)


def test_prepared_data_is_reused_across_candidates():
    a = sandbox._prepared(SMALL, [0, 1])
    assert sandbox._prepared(list(SMALL), (0, 1)) is a
    assert sandbox._prepared(SMALL, [0, 2]) is not a
