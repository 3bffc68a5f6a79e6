import random

import pytest

from mlflow_autotts.replay.episode import RecordingEpisode, ReplayEpisode, replay_cost, shuffle_order
from tests.helpers import make_branches

BR = make_branches([
    (["1", "2"], 1200, "2"),   # two probes, then 200 more tokens
    ([], 300, "7"),            # no probes: the first step finishes it
    (["5", "5", "5"], 1000, "5"),  # probes cover more than the branch: finishing step costs 0
])


def test_probe_costs_follow_the_published_rules():
    ep = ReplayEpisode(BR)
    assert ep.probe_new() == ("1", 0, False)
    assert ep.tokens_used == 500
    assert ep.probe_more(0) == ("2", False)
    assert ep.probe_more(0) == ("2", True)
    assert ep.tokens_used == 1200
    # finished branch: same answer, no further cost
    assert ep.probe_more(0) == ("2", True)
    assert ep.tokens_used == 1200
    assert ep.probe_new() == ("7", 1, True)
    assert ep.tokens_used == 1500
    assert ep.probe_new() == ("5", 2, False)
    for _ in range(2):
        ep.probe_more(2)
    assert ep.probe_more(2) == ("5", True)
    assert ep.tokens_used == 1500 + 1500  # 3 probes x 500, rest max(0, 1000 - 1500) = 0
    assert ep.intervals == 3 + 1 + 4
    assert ep.branches_opened == 3
    with pytest.raises(ValueError, match="no unopened branch"):
        ep.probe_new()


def test_whole_read_costs_the_branch_length():
    ep = ReplayEpisode(BR)
    assert [ep.get_new_branch_final_answer() for _ in range(3)] == ["2", "7", "5"]
    assert ep.tokens_used == 1200 + 300 + 1000
    assert ep.intervals == 3
    assert ep.probe_more(2) == ("5", True)  # read branches are finished
    assert ep.tokens_used == 2500
    with pytest.raises(ValueError):
        ep.get_new_branch_final_answer()


@pytest.mark.parametrize("bad", [-1, 1, 5, "0", 0.0, True, None])
def test_probe_more_rejects_branches_that_are_not_open(bad):
    ep = ReplayEpisode(BR)
    ep.probe_new()
    with pytest.raises(ValueError):
        ep.probe_more(bad)


def test_episode_hides_the_gold_answer_and_cost_cannot_be_assigned():
    ep = ReplayEpisode(BR)
    with pytest.raises(AttributeError):
        ep.tokens_used = 0
    assert not any("gold" in name for name in dir(ep))
    assert not hasattr(ep, "signals")


def test_signals_are_revealed_interval_by_interval():
    from mlflow_autotts.data.trajectory import Branches

    br = Branches.from_lists("q", 500, [["a", "b"]], [1000], ["b"], signals={"confidence": [[0.1, 0.9]]})
    ep = ReplayEpisode(br)
    ep.probe_new()
    assert ep.signals(0) == {"confidence": [0.1]}
    ep.probe_more(0)
    assert ep.signals(0) == {"confidence": [0.1, 0.9]}


def test_shuffle_order_matches_random_shuffle_of_any_list():
    for seed in range(5):
        objs = [object() for _ in range(128)]
        shuffled = list(objs)
        random.Random(seed).shuffle(shuffled)
        assert [objs.index(o) for o in shuffled] == list(shuffle_order(128, seed))


def test_order_decides_which_branch_opens_first():
    ep = ReplayEpisode(BR, order=[2, 0, 1])
    assert ep.probe_new() == ("5", 0, False)
    assert ep.get_new_branch_final_answer() == "2"


def test_replay_cost_recomputes_a_recorded_episode():
    rec = RecordingEpisode(BR, order=[1, 2, 0])
    rec.probe_new()
    rec.probe_new()
    rec.probe_more(1)
    rec.get_new_branch_final_answer()
    rec.probe_more(1)
    assert replay_cost(BR, [1, 2, 0], rec.actions) == (rec.tokens_used, rec.branches_opened, rec.intervals)
    with pytest.raises(ValueError):
        replay_cost(BR, [1, 2, 0], [("probe_more", 0)])
    with pytest.raises(ValueError):
        replay_cost(BR, [1, 2, 0], [("teleport", 0)])
