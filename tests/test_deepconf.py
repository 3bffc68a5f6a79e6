"""DeepConf online: warm-up threshold, pruning, confidence-weighted vote, stopping, β, fallback."""

from __future__ import annotations

import inspect
import json
import random
from dataclasses import astuple

import pytest
from click.testing import CliRunner

from mlflow_autotts.cli.main import main
from mlflow_autotts.controllers import deepconf
from mlflow_autotts.controllers.base import CONFIDENCE, GROUP_CONFIDENCE
from mlflow_autotts.controllers.deepconf import deepconf_schedule, percentile
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.json_io import read_json, write_json
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.replay.episode import RecordingEpisode, shuffle_order
from mlflow_autotts.replay.runner import ReplayConfig, evaluate
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.process import run_candidate
from mlflow_autotts.sandbox.session import SandboxedController
from tests.helpers import make_branches

SOURCE = inspect.getsource(deepconf)
LIMITS = SandboxLimits(wall_seconds=20, cpu_seconds=20, memory_mb=512)


def branches(specs, names=(GROUP_CONFIDENCE, CONFIDENCE)) -> Branches:
    """Branches from ``(final answer, [group confidence of each probed interval])``: every probe
    shows the final answer, the branch ends 100 tokens into the interval after its probes."""
    probes = [[a] * len(g) for a, g in specs]
    sig = {name: [list(g) for _, g in specs] for name in names}
    return Branches.from_lists("q", 500, probes, [500 * len(p) + 100 for p in probes], [a for a, _ in specs], sig)


def solve(br: Branches, beta=0.5, **params):
    ep = RecordingEpisode(br)
    answer = ControllerSpec("deepconf", beta, params).build().solve(ep)
    steps = [sum(1 for _, j in ep.actions if j == i) for i in range(ep.branches_opened)]
    return answer, steps, ep


def signal_set(n_problems=8, n_branches=24, seed=0, name="Sig/toy") -> TrajectorySet:
    """Right branches tend to be more confident than wrong ones (their ranges overlap)."""
    rng = random.Random(seed)
    problems = []
    for p in range(n_problems):
        gold, specs = str(p), []
        for _ in range(n_branches):
            right = rng.random() < 0.45
            lo, hi = (5.0, 10.0) if right else (2.0, 8.0)
            groups = [rng.uniform(lo, hi) for _ in range(rng.randint(1, 8))]
            specs.append((gold if right else rng.choice("xyz"), groups))
        problems.append(Problem(branches(specs), gold))
    model, _, bench = name.partition("/")
    return TrajectorySet(problems, Provenance(model, bench, source=name))


def runner(ref, datasets, beta, shuffles=3, **params):
    config = ReplayConfig(shuffles=shuffles, workers=1, progress=False)
    return evaluate(ControllerSpec(ref, beta, params), datasets, config)


# ------------------------------------------------------------------- the algorithm
@pytest.mark.parametrize("names", [(GROUP_CONFIDENCE, CONFIDENCE), (CONFIDENCE,)])
def test_a_branch_is_abandoned_at_its_first_interval_below_the_warm_up_threshold(names):
    br = branches([("a", [10, 10]), ("b", [9, 9]), ("c", [2, 2]), ("d", [1, 1]),  # warm-up: threshold 5.5
                   ("a", [8, 3, 8, 8]), ("b", [6, 7]), ("e", [5])], names)
    answer, steps, ep = solve(br, n_warmup=4, eta=50, width=2, max_branches=7, tau=1.0)
    assert percentile([10, 9, 2, 1], 50) == 5.5
    # warm-up branches run to their end; branch 4 stops after its 3, branch 6 after its 5
    assert steps == [3, 3, 3, 3, 2, 3, 1]
    assert answer == "b"  # b: 9 + 6 outweighs a: 10 (c and d fell below the threshold, 4 never finished)
    assert ep.tokens_used == 4 * 1100 + 2 * 500 + 1100 + 500


def test_the_confidence_weighted_vote_overrules_a_less_confident_plurality():
    specs = [("wrong", [3]), ("right", [9]), ("wrong", [3]), ("right", [9]), ("wrong", [3])]
    assert solve(branches(specs), n_warmup=5, max_branches=5, eta=100)[0] == "right"  # 18 against 9
    plain = make_branches([([a] * len(g), 600, a) for a, g in specs])
    assert solve(plain, n_warmup=5, max_branches=5, eta=100)[0] == "wrong"  # no signals: plurality
    assert ControllerSpec("sc").build().solve(RecordingEpisode(plain)) == "wrong"


def test_it_stops_once_the_weighted_top_answer_reaches_tau():
    unanimous = branches([("a", [5, 5])] * 10)
    answer, steps, _ = solve(unanimous, n_warmup=3, tau=0.95)
    assert (answer, len(steps)) == ("a", 3)  # consensus right after the warm-up
    # warm-up a, b (both kept, equal weight); online a's raise a's share: 2/3, then 3/4 >= tau
    answer, steps, _ = solve(branches([("a", [5]), ("b", [5])] + [("a", [5])] * 8), n_warmup=2, eta=100,
                             tau=0.75, width=1)
    assert (answer, len(steps)) == ("a", 4)


def test_it_never_opens_more_than_max_branches():
    spread = branches([(str(k), [5, 5, 5]) for k in range(30)])
    answer, steps, _ = solve(spread, n_warmup=3, eta=100, max_branches=11, width=4)
    assert len(steps) == 11 and answer == "0"  # all tie: the first answer seen


def test_budget_grows_with_beta_and_explicit_parameters_override_it():
    schedules = [deepconf_schedule(b / 10) for b in range(11)]
    assert all(p <= q for x, y in zip(schedules, schedules[1:]) for p, q in zip(astuple(x), astuple(y)))
    assert (schedules[0].eta, schedules[-1].eta, schedules[-1].max_branches) == (10.0, 90.0, 64)
    data = [signal_set()]
    tokens = [runner("deepconf", data, b / 4)[0].mean_tokens for b in range(5)]
    assert tokens == sorted(tokens) and tokens[0] < tokens[-1]
    ctl = ControllerSpec("deepconf", 0.0, {"max_branches": 20, "eta": 90}).build()
    assert (ctl.schedule.max_branches, ctl.schedule.eta, ctl.schedule.n_warmup) == (20, 90.0, 2)
    assert ctl.config() == {"beta": 0.0, "max_branches": 20, "eta": 90.0}


@pytest.mark.parametrize("params, message", [
    ({"eta": 0}, "eta must be a number in \\(0, 100\\]"),
    ({"tau": 1.5}, "tau must be a number in \\(0, 1\\]"),
    ({"width": 0}, "width must be a positive integer"),
    ({"n_warmup": 2.5}, "n_warmup must be a positive integer"),
    ({"window": 3}, "has no parameter 'window'"),
])
def test_bad_parameters_are_controller_errors_naming_them(params, message):
    with pytest.raises(ControllerError, match=message):
        ControllerSpec("deepconf", 0.5, params).build()


def test_replays_are_deterministic_and_the_controller_keeps_no_state():
    data = [signal_set(seed=4)]
    a, b = runner("deepconf", data, 0.5)[0], runner("deepconf", data, 0.5)[0]
    assert (a.accuracy, a.mean_tokens) == (b.accuracy, b.mean_tokens) and a.episodes.equals(b.episodes)
    ctl = ControllerSpec("deepconf", 0.7).build()
    br = data[0].problems[0].branches
    first = [ctl.solve(RecordingEpisode(br, shuffle_order(br.n_branches, s))) for s in range(5)]
    assert first == [ctl.solve(RecordingEpisode(br, shuffle_order(br.n_branches, s))) for s in range(5)]


# ----------------------------------------------------------------- without signals
def test_without_signals_it_is_plurality_voting_with_consensus_stopping_on_published_data(data_dir):
    ds = [read_json(data_dir / "Qwen3-4B" / "aime24.json", Provenance("Qwen3-4B", "aime24"))]
    low, high = runner("deepconf", ds, 0.5, eta=10)[0], runner("deepconf", ds, 0.5, eta=90)[0]
    assert (low.accuracy, low.mean_tokens) == (high.accuracy, high.mean_tokens)  # no threshold, no pruning
    sc = runner("sc", ds, None)[0]
    assert low.mean_tokens < sc.mean_tokens and low.accuracy >= sc.accuracy - 10
    assert runner("deepconf", ds, 0.0)[0].mean_tokens < low.mean_tokens < runner("deepconf", ds, 1.0)[0].mean_tokens


def test_signals_it_does_not_know_count_as_none():
    specs = [("wrong", [3]), ("right", [9]), ("wrong", [3]), ("right", [9]), ("wrong", [3])]
    assert solve(branches(specs, ("entropy",)), n_warmup=5, max_branches=5)[0] == "wrong"


# ------------------------------------------------------------------- sandbox, CLI
def test_sandboxed_deepconf_reads_signals_and_acts_exactly_as_in_process():
    data = signal_set(4, 16, seed=2)
    cases = [(p.branches, shuffle_order(16, s)) for s in range(2) for p in data.problems]
    reference = ControllerSpec("deepconf", 0.6).build()
    with SandboxedController(SOURCE, "DeepConf", 0.6, limits=LIMITS) as sandboxed:
        assert sandboxed.name == "deepconf"
        for br, order in cases:
            mine, ref = RecordingEpisode(br, order), RecordingEpisode(br, order)
            assert sandboxed.solve(mine) == reference.solve(ref)
            assert (mine.actions, mine.tokens_used) == (ref.actions, ref.tokens_used)
    out = run_candidate(SOURCE, [data], [0.3, 0.9], range(3), LIMITS, class_name="DeepConf")
    assert out.ok, out.failure
    ref = runner("deepconf", [data], 0.3) + runner("deepconf", [data], 0.9)
    assert [(r.accuracy, r.mean_tokens) for r in out.results] == [(r.accuracy, r.mean_tokens) for r in ref]


def test_autotts_evaluate_runs_deepconf_on_data_with_signals(tmp_path):
    path = tmp_path / "Sig" / "toy.json"
    path.parent.mkdir()
    write_json(signal_set(4, 12, seed=1), path)
    out = tmp_path / "res.json"
    r = CliRunner().invoke(main, ["evaluate", str(path), "-c", "deepconf", "--beta", "0,1", "--shuffles", "2",
                                  "--workers", "1", "--no-mlflow", "--no-progress", "--output-json", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["results"]
    assert [(x["controller"], x["beta"]) for x in rows] == [("deepconf", 0.0), ("deepconf", 1.0)]
    assert 0 < rows[0]["mean_tokens"] < rows[1]["mean_tokens"]
