"""The search objective: a candidate's whole β-curve against CMC's (``search.curves``)."""

from __future__ import annotations

import math

import pytest

from mlflow_autotts.replay.results import EvalResult as Score
from mlflow_autotts.search.archive import Archive
from mlflow_autotts.search.curves import (
    BELOW_PENALTY,
    accuracy_within,
    dominance_margins,
    front,
    gain_over,
    tokens_to_reach,
)
from mlflow_autotts.search.genome import SEEDS
from mlflow_autotts.search.types import Candidate, Proposal

CMC = [(100.0, 50.0), (200.0, 60.0), (400.0, 64.0)]


def cand(cid: str, points: list[tuple[float, float]]) -> Candidate:
    """A candidate with one dataset whose β-curve is ``points`` ((tokens, accuracy), by β)."""
    scores = [Score("m/b", i / max(1, len(points) - 1), acc, tok) for i, (tok, acc) in enumerate(points)]
    return Candidate(cid, Proposal(source="", meta={"genome": SEEDS["short_race"].to_dict()}), scores)


def test_front_drops_dominated_points_and_reads_straight_lines_between_the_rest():
    assert front([(300.0, 55.0), (100.0, 50.0), (200.0, 60.0), (250.0, 58.0)]) == [(100.0, 50.0), (200.0, 60.0)]
    fr = front(CMC)
    assert accuracy_within(fr, 150.0) == pytest.approx(55.0)
    assert accuracy_within(fr, 10_000.0) == 64.0
    assert accuracy_within(fr, 50.0) == pytest.approx(50.0 - BELOW_PENALTY)  # one halving below the cheapest
    assert tokens_to_reach(fr, 62.0) == pytest.approx(300.0)
    assert tokens_to_reach(fr, 65.0) == math.inf


def test_gain_of_a_curve_over_itself_is_zero_and_shifts_add_up():
    assert gain_over(CMC, CMC) == pytest.approx(0.0)
    assert gain_over([(t, a + 2.0) for t, a in CMC], CMC) == pytest.approx(2.0)
    # the same accuracies for half the tokens: a gain everywhere inside CMC's span
    assert gain_over([(t / 2, a) for t, a in CMC], CMC) > 0


def test_gain_rewards_the_whole_curve_not_one_point():
    # beats CMC at low budgets but flattens where CMC keeps rising (the failure)
    flat = [(100.0, 51.0), (150.0, 58.0), (400.0, 58.0)]
    # a little worse at the bottom, better at the top
    rising = [(100.0, 49.0), (200.0, 61.0), (400.0, 66.0)]
    assert accuracy_within(front(flat), 150.0) > accuracy_within(front(rising), 150.0)
    assert gain_over(rising, CMC) > gain_over(flat, CMC)
    # a curve that cannot get as cheap as CMC pays per halving it misses
    dear = [(200.0, 60.0), (400.0, 64.0)]
    assert gain_over(dear, CMC) < 0


def test_dominance_margins_say_where_a_curve_saves_tokens():
    better = [(80.0, 51.0), (150.0, 60.0), (350.0, 64.5)]
    margins = dominance_margins(better, CMC)
    assert margins[0] == pytest.approx(0.2)  # reaches 50 at 80 instead of 100
    assert margins[1] == pytest.approx(0.25)
    assert all(m > 0 for m in margins)
    assert dominance_margins([(80.0, 51.0), (150.0, 60.0)], CMC)[-1] == -math.inf  # never reaches 64


def test_archive_ranks_by_gain_over_the_reference_and_progress_reads_it():
    flat = cand("flat", [(100.0, 51.0), (150.0, 58.0), (400.0, 58.0)])
    rising = cand("rising", [(100.0, 49.0), (200.0, 61.0), (400.0, 66.0)])
    arch = Archive.from_candidates([flat, rising], target_accuracy=60.0, budget_tokens=150.0, reference=tuple(CMC))
    assert arch.ranked() == ["rising", "flat"]
    obj = arch.objectives["rising"]
    assert obj.mode == "gain" and obj.value == pytest.approx(gain_over([(100.0, 49.0), (200.0, 61.0),
                                                                        (400.0, 66.0)], CMC))
    assert arch.to_dict()["ranking"][0]["gain_over_reference"] == pytest.approx(obj.gain)
    # without the reference the budget point decides, and there the flat curve wins
    assert Archive.from_candidates([flat, rising], budget_tokens=150.0).ranked()[0] == "flat"
