"""Trusted scoring of code that is not built in: the sandbox's numbers equal the in-process
runner's for honest controllers, and a controller that rewrites its bill is charged in full.

Every test starts real sandbox children.
"""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path

import pytest

from mlflow_autotts.controllers import baselines, cmc
from mlflow_autotts.data.json_io import read_json
from mlflow_autotts.data.trajectory import Provenance
from mlflow_autotts.errors import ControllerError, DataError
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.replay.episode import ReplayEpisode, shuffle_order
from mlflow_autotts.replay.runner import ReplayConfig, evaluate
from mlflow_autotts.sandbox.limits import Isolation, SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateFailedError, CandidateFailure, SandboxIsolationError
from mlflow_autotts.sandbox.scoring import score_source
from tests.helpers import BILL_REWRITER, import_source, random_set, runner_results

LIMITS = SandboxLimits(wall_seconds=60, cpu_seconds=30, memory_mb=512)
SMALL = [random_set(5, 12, seed=3, name="Toy/a"), random_set(4, 9, seed=4, name="Toy/b")]
CMC_SOURCE = Path(cmc.__file__).read_text()  # the reference controller's source file, as a user would pass it

def _assert_same(got, ref) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert (g.data, g.controller, g.beta, g.params, g.shuffles, g.n_problems, g.accuracy, g.mean_tokens) == \
            (r.data, r.controller, r.beta, r.params, r.shuffles, r.n_problems, r.accuracy, r.mean_tokens)
        assert g.episodes.equals(r.episodes)


def test_cmc_source_scored_in_the_sandbox_equals_the_in_process_runner_on_synthetic_data():
    _assert_same(score_source(CMC_SOURCE, SMALL, [0.2, 0.8], range(4), limits=LIMITS),
                 runner_results("cmc", SMALL, [0.2, 0.8], 4))


def test_cmc_source_scored_in_the_sandbox_equals_the_in_process_runner_on_a_published_file(data_dir):
    ts = read_json(data_dir / "Qwen3-4B" / "aime24.json", Provenance("Qwen3-4B", "aime24"))
    _assert_same(score_source(CMC_SOURCE, [ts], [0.5], range(5), limits=LIMITS), runner_results("cmc", [ts], [0.5], 5))


def test_no_beta_means_the_class_default_as_in_the_runner():
    _assert_same(score_source(CMC_SOURCE, SMALL, [None], range(2), limits=LIMITS),
                 runner_results("cmc", SMALL, [None], 2))


def test_a_controller_that_ignores_beta_is_reported_once_with_beta_none():
    src = inspect.getsource(baselines)
    got = score_source(src, SMALL, [0.3, 0.7], range(3), class_name="EarlyStoppingConsistency", limits=LIMITS)
    _assert_same(got, runner_results("esc", SMALL, [0.3], 3))


def test_a_bill_rewriting_controller_is_charged_its_honest_cost(tmp_path):
    path = tmp_path / "free_lunch.py"
    path.write_text(BILL_REWRITER)
    with pytest.raises(ControllerError, match="not built in"):  # the runner never runs a source in process
        evaluate(ControllerSpec(str(path), 0.5), SMALL, ReplayConfig(shuffles=2, workers=1, progress=False))
    free_lunch = import_source(path)  # what running it in (this test's) process would report
    in_process = []
    for ds in SMALL:
        bills, right = [], 0
        for seed in range(2):
            for p in ds.problems:
                episode = ReplayEpisode(p.branches, shuffle_order(p.branches.n_branches, seed))
                right += free_lunch(0.5).solve(episode) == p.gold_answer
                bills.append(episode.tokens_used)
        assert set(bills) == {0}
        in_process.append(100 * right / (2 * len(ds)))
    sandboxed = score_source(BILL_REWRITER, SMALL, [0.5], range(2), limits=LIMITS)
    for got, ds in zip(sandboxed, SMALL):
        full = sum(sum(p.branches.branch_tokens) for p in ds.problems) / len(ds)
        assert got.mean_tokens == full
        opened = [ds.problems[p].branches.n_branches for p in got.episodes["problem"]]
        assert list(got.episodes["branches_opened"]) == opened
    assert [r.accuracy for r in sandboxed] == pytest.approx(in_process)


def test_a_failing_candidate_raises_a_one_line_controller_error():
    src = CMC_SOURCE.replace("    def solve(self, episode: Episode) -> str | None:",
                             "    def solve(self, episode: Episode) -> str | None:\n"
                             "        if episode.question == 'question 3':\n"
                             "            raise KeyError('boom')")
    with pytest.raises(CandidateFailedError) as err:
        score_source(src, SMALL, [0.5], range(2), label="my.py", limits=LIMITS)
    assert isinstance(err.value, ControllerError)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("controller 'my.py' failed in the sandbox: exception: solve() raised KeyError: 'boom'")
    assert "data=Toy/a, problem=3, shuffle=0" in text
    assert err.value.failure.kind == "exception" and "raise KeyError('boom')" in err.value.failure.traceback


def test_errors_with_their_own_arguments_cross_a_process_as_themselves():
    """A Ray task or a pool worker sends errors back pickled: each keeps its type and fields."""
    iso = Isolation("parent", False, True, 2_000_000_001, True, None, 10, 0, 64, 1, 0, True, ("network namespace",))
    errors = [SandboxIsolationError(iso, "as a test"),
              CandidateFailedError("mine", CandidateFailure("timeout", "wall clock", where={"problem": 3}), "printed"),
              DataError("x.json", "no branches", problem=2, field="branches")]
    for exc in errors:
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and vars(back) == vars(exc)
    assert "network namespace not in force (as a test)" in str(errors[0])
