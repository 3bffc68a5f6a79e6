"""Selection that resists luck: per-problem tables, the paired bootstrap, the tiers."""

from __future__ import annotations

import numpy as np
import pytest

from mlflow_autotts.search.bootstrap import ProblemTable, Resampler, interval, lower_bound, simultaneous_lower_bounds
from mlflow_autotts.search.selection import CurveStats, Point, choose

SIZES = {"m1/b": 10, "m2/b": 10}


def table(acc1: list[float], acc2: list[float], tokens: float = 100.0) -> ProblemTable:
    return ProblemTable({"m1/b": np.array(acc1, float), "m2/b": np.array(acc2, float)},
                        {"m1/b": np.full(10, tokens), "m2/b": np.full(10, tokens)})


def test_problem_table_averages_shuffles_per_problem_and_refuses_ragged_episodes():
    rows = [("m/b", p, (p + s) % 2 == 0, 100 * (p + 1)) for s in range(4) for p in range(3)]
    t = ProblemTable.from_rows(rows, {"m/b": 3})
    assert list(t.accuracy["m/b"]) == [50.0, 50.0, 50.0]
    assert list(t.tokens["m/b"]) == [100.0, 200.0, 300.0]
    assert t.point() == (50.0, 200.0)
    with pytest.raises(ValueError, match="same number"):
        ProblemTable.from_rows(rows[:-1], {"m/b": 3})
    with pytest.raises(ValueError, match="unknown dataset"):
        ProblemTable.from_rows([("x/y", 0, True, 1)], {"m/b": 3})


def test_the_bootstrap_is_paired_and_averages_datasets_equally():
    r = Resampler(SIZES, resamples=500, seed=1)
    base = table([50.0] * 10, [70.0] * 10)
    acc, tok = r.means(base)
    assert np.allclose(acc, 60.0) and np.allclose(tok, 100.0)  # constant problems: no spread
    varied = table(list(np.linspace(0, 100, 10)), [70.0] * 10)
    a1, _ = r.means(varied)
    a2, _ = r.means(table(list(np.linspace(0, 100, 10) + 3.0), [73.0] * 10))
    assert a1.std() > 1.0
    assert np.allclose(a2 - a1, 3.0)  # paired: the same draw for both, so a uniform gain has no noise


def test_lower_bound_tells_a_steady_gain_from_one_lucky_problem():
    """Both candidates gain 5 points over SC@64 on average; one on every problem, the other
    on a single problem (and loses a little on the rest): only the first has a positive
    lower bound."""
    r = Resampler(SIZES, resamples=2000, seed=0)
    sc = table([50.0] * 10, [60.0] * 10)
    steady = table([55.0] * 10, [65.0] * 10)
    lucky = table([50.0 + 100.0 - 0.0] + [49.0] * 9, [60.0 + 9.0] + [60.0] * 9)
    sc_acc, _ = r.means(sc)
    gains = {name: r.means(t)[0] - sc_acc for name, t in (("steady", steady), ("lucky", lucky))}
    assert float(np.mean(gains["steady"])) == pytest.approx(5.0)
    assert float(np.mean(gains["lucky"])) == pytest.approx(5.0, abs=0.8)
    assert lower_bound(gains["steady"], 0.8) == pytest.approx(5.0)
    assert lower_bound(gains["lucky"], 0.8) < 0
    lo, hi = interval(gains["lucky"], 0.9)
    assert lo < 0 < 5.0 < hi


def curve(gain_lcb: float, dominates: bool) -> CurveStats:
    return CurveStats((gain_lcb, gain_lcb + 1, gain_lcb + 2), (0.1, 0.2) if dominates else (0.1, -0.3), 0.5)


def test_simultaneous_bounds_cover_every_row_at_once_where_per_row_bounds_do_not():
    """Twenty rows whose true value is 0 and whose estimates err by N(0, 1), with
    bootstrap samples that err around the estimate the same way: the simultaneous bounds
    lie under all twenty true values in about ``confidence`` of the trials; per-row bounds
    in about confidence ** 20 of them, so the best-looking row's bound misleads."""
    rng = np.random.default_rng(0)
    conf, rows, trials = 0.8, 20, 300
    together = apart = 0
    for _ in range(trials):
        est = rng.normal(0.0, 1.0, rows)
        samples = est[:, None] + rng.normal(0.0, 1.0, (rows, 1000))
        together += bool((simultaneous_lower_bounds(samples, est, conf) <= 0).all())
        apart += bool((np.array([lower_bound(s, conf) for s in samples]) <= 0).all())
    assert 0.72 <= together / trials <= 0.88
    assert apart / trials < 0.05  # 0.8 ** 20 = 0.012


def test_simultaneous_bounds_of_one_row_are_its_own_and_a_constant_row_keeps_its_estimate():
    rng = np.random.default_rng(1)
    samples = 2.0 + rng.normal(0.0, 1.0, (1, 4000))
    one = simultaneous_lower_bounds(samples, np.array([2.0]), 0.8)
    assert one[0] == pytest.approx(lower_bound(samples[0], 0.8), abs=1e-9)
    assert one[0] == pytest.approx(2.0 - 0.8416, abs=0.05)  # the 20% quantile of N(2, 1)
    both = simultaneous_lower_bounds(np.vstack([samples, np.full((1, 4000), 5.0)]), np.array([2.0, 5.0]), 0.8)
    assert both[1] == 5.0 and both[0] == pytest.approx(one[0])


def test_choose_prefers_a_sure_gain_and_a_dominating_curve_over_fewer_tokens():
    lucky = Point("lucky", 0.2, 66.0, 100.0, vs_sc64=(-1.0, 2.0, 5.0))
    sure = Point("sure", 0.6, 65.0, 200.0, vs_sc64=(0.5, 1.0, 1.5))
    sure_dear = Point("sure", 1.0, 66.0, 300.0, vs_sc64=(1.0, 2.0, 3.0))
    flat = Point("flat", 0.4, 65.0, 150.0, vs_sc64=(0.2, 1.0, 1.8))
    curves = {"lucky": curve(1.0, True), "sure": curve(0.5, True), "flat": curve(-0.5, False)}
    best, tier = choose([lucky, sure, sure_dear, flat], curves, margin=0.0)
    assert (best, tier) == (sure, 1)  # the cheapest point whose lower bound clears SC@64, on a dominating curve
    best, tier = choose([lucky, sure, sure_dear, flat], curves, margin=0.8)
    assert (best, tier) == (sure_dear, 1)  # a margin on the lower bound asks for more
    # no dominating curve: a curve whose gain over CMC is sure, though dearer than `flat`
    curves["sure"] = curve(0.5, False)
    assert choose([lucky, sure, flat], curves, 0.0) == (sure, 3)
    # no sure curve gain either: the surest curve, at its cheapest sure point
    curves["sure"] = curve(-0.2, False)
    assert choose([lucky, sure, sure_dear, flat], curves, 0.0) == (sure, 4)
    # nothing sure: a point estimate at or above SC@64 (tier 5), else the best lower bound (tier 0)
    assert choose([lucky], curves, 0.0) == (lucky, 5)
    below = Point("flat", 0.0, 60.0, 50.0, vs_sc64=(-6.0, -4.0, -2.0))
    less_below = Point("flat", 0.2, 61.0, 60.0, vs_sc64=(-5.0, -3.0, -1.0))
    assert choose([below, less_below], curves, 0.0) == (less_below, 0)
    assert choose([], curves, 0.0) == (None, 0)


def test_finalists_skip_near_copies_of_a_better_candidate():
    from mlflow_autotts.replay.results import EvalResult as Score
    from mlflow_autotts.search.archive import Archive
    from mlflow_autotts.search.genome import SEEDS
    from mlflow_autotts.search.selection import finalists_of
    from mlflow_autotts.search.types import Candidate, Proposal

    def cand(cid: str, acc: float, tokens: float = 100.0) -> Candidate:
        scores = [Score("m/b", 0.0, acc, tokens), Score("m/b", 1.0, acc + 5, 3 * tokens)]
        return Candidate(cid, Proposal(source=cid, meta={"genome": SEEDS["cmc"].to_dict()}), scores)

    # a2 and a3 are near-copies of a1 (a3 only by tokens); b1 is behaviourally different
    cands = [cand("a1", 60.0), cand("a2", 59.9), cand("a3", 60.0, 101.0), cand("b1", 58.0), cand("c1", 57.0)]
    arch = Archive.from_candidates(cands, reference=((100.0, 58.0), (300.0, 62.0)))
    assert arch.ranked()[:3] == ["a1", "a3", "a2"]
    assert [c.id for c in finalists_of(arch, 2)] == ["a1", "b1"]
    assert [c.id for c in finalists_of(arch, 5)] == ["a1", "b1", "c1"]


def _with_gold(ts, gold: str | None):
    """``ts`` with every gold answer replaced by ``gold`` (None: kept)."""
    from mlflow_autotts.data.trajectory import Problem, TrajectorySet

    return ts if gold is None else TrajectorySet([Problem(p.branches, gold) for p in ts.problems], ts.provenance)


def test_sc_is_labelled_with_the_branches_the_data_has():
    from mlflow_autotts.controllers.reference import sc_label
    from tests.helpers import random_set

    assert sc_label([random_set(3, 16, seed=1)]) == "sc@16"
    assert sc_label([random_set(3, 16, seed=1), random_set(2, 6, seed=2, name="Synth/b")]) == "sc@6-16"
    assert sc_label([random_set(2, 70, seed=3)]) == "sc@64"  # SC64 reads 64 at most
    assert sc_label([]) == "sc@64"


@pytest.mark.parametrize("gold, minimum, refused", [(None, 10.0, False), ("never", 10.0, True), ("never", 0.0, False)])
def test_no_winner_is_declared_against_a_reference_that_scores_near_zero(gold, minimum, refused):
    """Real selection (the finalist scored in the process sandbox) on 16-branch data: with a
    gold answer no branch gives, SC@16 scores 0% and any controller "reaches" it at 0%; the
    selection then declares no winner and says why, unless the threshold is turned off."""
    from mlflow_autotts.replay.results import EvalResult
    from mlflow_autotts.search.archive import Archive
    from mlflow_autotts.search.config import SelectionConfig
    from mlflow_autotts.search.selection import select
    from mlflow_autotts.search.types import Candidate, Proposal
    from mlflow_autotts.tracking.search_job import selection_rows
    from tests.helpers import HONEST, random_set

    validation = [_with_gold(random_set(6, 16, seed=5), gold)]
    cand = Candidate("c0000", Proposal(source=HONEST), [EvalResult("Synth/toy", 0.5, 50.0, 1000.0)])
    config = SelectionConfig(final_shuffles=3, finalists=1, bootstrap_resamples=200, min_reference_accuracy=minimum)
    sel = select(config, Archive.from_candidates([cand]), validation, [0.5], workers=1)
    assert sel.sc_label == sel.sc64.label == "sc@16" and set(sel.tables) == {"sc@16", "asc", "esc", "cmc", "c0000"}
    assert sel.finalists["c0000"]  # scored either way, for the table
    rows = selection_rows(sel)
    assert rows[0]["controller"] == "sc@16" and sum(r["winner"] for r in rows) == (0 if refused else 1)
    if refused:
        assert sel.sc64.accuracy == 0.0 and sel.winner is None and sel.winner_point is None
        assert not sel.reached_sc64 and sel.tier == 0
        assert sel.refused.startswith("SC@16 scores 0.0% on validation, under min_reference_accuracy (10%)")
    else:
        assert sel.refused is None and sel.winner is cand and sel.winner_point.label == "c0000"
        assert (sel.sc64.accuracy > 50.0) == (gold is None)
