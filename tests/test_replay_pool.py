"""The runner's ways of running the same work (in this process, or a forked pool warmed up
first) give identical numbers and episodes; only the tables asked for are built."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from mlflow_autotts.controllers import voting
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.replay import runner
from mlflow_autotts.replay.runner import EPISODE_COLUMNS, ReplayConfig, episode_frame, evaluate_many
from tests.helpers import random_set, runner_spec

SPECS = [ControllerSpec("cmc", 0.5), ControllerSpec("sc"), ControllerSpec("asc")]


@pytest.fixture(scope="module")
def toy():
    return [random_set(n_problems=6, n_branches=16, seed=3), random_set(n_problems=4, n_branches=12, seed=4,
                                                                         name="Synth/other")]


def _pool_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = runner._pool

    def counted(workers, datasets, specs):
        calls.append(workers)
        return real(workers, datasets, specs)

    monkeypatch.setattr(runner, "_pool", counted)
    return calls


def _same(a, b) -> None:
    assert [(r.data, r.controller, r.beta, r.accuracy, r.mean_tokens) for r in a] == \
        [(r.data, r.controller, r.beta, r.accuracy, r.mean_tokens) for r in b]
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x.episodes, y.episodes)


def test_small_work_runs_in_process_with_the_pools_numbers(toy, monkeypatch):
    calls = _pool_calls(monkeypatch)
    small = evaluate_many(SPECS, toy, ReplayConfig(shuffles=7, workers=2, progress=False))
    assert calls == []  # 3 specs x 7 shuffles x 10 problems = 210 episodes: no pool
    pooled = evaluate_many(SPECS, toy, ReplayConfig(shuffles=7, workers=2, chunk_shuffles=2, in_process_below=0,
                                                  progress=False))
    assert calls == [2]
    one = evaluate_many(SPECS, toy, ReplayConfig(shuffles=7, workers=1, progress=False))
    _same(small, pooled)
    _same(small, one)
    assert len(small[0].episodes) == 7 * 6 and list(small[0].episodes.columns) == list(EPISODE_COLUMNS)


def test_large_work_uses_the_pool(toy, monkeypatch):
    calls = _pool_calls(monkeypatch)
    evaluate_many(SPECS[:1], toy, ReplayConfig(shuffles=60, workers=2, in_process_below=500, progress=False),
                  keep_episodes=False)
    assert calls == [2]  # 60 x 10 = 600 episodes


def test_the_parent_builds_lazy_controller_state_before_forking(toy, monkeypatch):
    """cmc's Beta-confidence table (scipy) is built once here, not once in each worker."""
    monkeypatch.setattr(voting, "_CONF", [])
    monkeypatch.setattr(voting, "_CONF_SIZE", 0)
    evaluate_many(SPECS[:1], toy, ReplayConfig(shuffles=4, workers=2, in_process_below=0, progress=False),
                  keep_episodes=False)
    assert voting._CONF_SIZE > 0  # only the warm-up ran cmc in this process


def test_a_controller_failing_in_the_warm_up_names_the_episode(toy, tmp_path):
    src = tmp_path / "boom.py"
    src.write_text("from mlflow_autotts.controllers.base import Controller\n\n"
                   "class Boom(Controller):\n    name = 'boom'\n"
                   "    def solve(self, episode):\n        raise RuntimeError('no')\n")
    with pytest.raises(ControllerError, match=r"'boom' raised RuntimeError on Synth/toy, problem 0, shuffle 0: no"):
        evaluate_many([runner_spec(f"{src}:Boom")], toy,
                      ReplayConfig(shuffles=4, workers=2, in_process_below=0, progress=False))


def test_episode_tables_only_for_the_specs_that_keep_them(toy):
    results = evaluate_many(SPECS[:2], toy[:1], ReplayConfig(shuffles=3, workers=1, progress=False),
                            keep_episodes=[False, True])
    assert results[0].episodes is None and len(results[1].episodes) == 3 * 6
    with pytest.raises(ValueError, match="2 flags for 3 specs"):
        evaluate_many(SPECS, toy[:1], ReplayConfig(shuffles=1, workers=1, progress=False), keep_episodes=[True, False])


def _frame_from_rows(dataset: str, rows: list[tuple]) -> pd.DataFrame:
    """The table as the runner built it before (row by row, answers mapped afterwards)."""
    frame = pd.DataFrame(rows, columns=list(EPISODE_COLUMNS[1:]))
    frame.insert(0, "dataset", dataset)
    frame["answer"] = frame["answer"].map(lambda a: a if a is None or isinstance(a, str) else repr(a))
    return frame


@pytest.mark.parametrize("answers", [["7", None, 3, "x"], [None], ["1"], []])
def test_episode_frame_equals_the_row_by_row_table(answers):
    rng = random.Random(len(answers))
    rows = [(p, s, rng.choice(answers), rng.random() < 0.5, rng.randint(0, 10**6), rng.randint(1, 64),
             rng.randint(1, 90)) for s in range(5) for p in range(7)] if answers else []
    got, expected = episode_frame("M/b", rows), _frame_from_rows("M/b", rows)
    pd.testing.assert_frame_equal(got, expected)
    assert list(got.dtypes) == list(expected.dtypes)


def test_in_process_threshold_is_checked():
    with pytest.raises(ValueError, match="in_process_below must be >= 0"):
        ReplayConfig(in_process_below=-1)


def test_work_items_are_about_four_per_worker_and_never_too_small_for_a_large_cluster():
    from mlflow_autotts.replay.runner import MIN_ITEM_EPISODES_PER_WORKER, make_chunks

    local = make_chunks(100, 0, workers=2, jobs=1, size=None, problems=30)
    assert [len(r) for r in local] == [13] * 7 + [9] and local[0].start == 0 and local[-1].stop == 100
    matrix = make_chunks(100, 0, workers=2, jobs=36, size=None, problems=30)
    assert len(matrix) == 1  # 36 jobs already keep 2 workers busy
    big = make_chunks(5000, 0, workers=800, jobs=36, size=None, problems=30)  # 100 nodes x 8 CPUs
    assert len(big) == 3 and min(len(r) for r in big[:-1]) * 30 >= MIN_ITEM_EPISODES_PER_WORKER * 800
    assert sum(len(r) for r in big) == 5000 and make_chunks(10, 5, 2, 1, size=4) == [range(5, 9), range(9, 13),
                                                                                   range(13, 15)]
