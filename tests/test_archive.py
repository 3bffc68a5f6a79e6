"""The search archive: Pareto front, objectives, MAP-Elites cells, parent selection."""

from __future__ import annotations

import json
import math
import random

import pytest

from mlflow_autotts.replay.results import EvalResult as Score
from mlflow_autotts.search.archive import Archive, accuracy_at, dominates, objective, tokens_to_reach
from mlflow_autotts.search.genome import SEEDS
from mlflow_autotts.search.types import Candidate, Proposal

DATASETS = ("m1/b", "m2/b")


def cand(cid: str, curve: list[tuple[float, float, float]], genome: str | None = "short_race",
         failure: str | None = None) -> Candidate:
    """A candidate whose per-dataset scores average to the given (β, accuracy, tokens) curve."""
    meta = {"genome": SEEDS[genome].to_dict()} if genome else {}
    scores = []
    if failure is None:
        for beta, acc, tok in curve:
            scores += [Score(DATASETS[0], beta, acc - 1, tok - 10), Score(DATASETS[1], beta, acc + 1, tok + 10)]
    return Candidate(cid, Proposal(source="", meta=meta), scores, failure)


def test_tokens_to_reach_interpolates_between_beta_points():
    curve = [(0.0, 50.0, 100.0), (0.5, 60.0, 200.0), (1.0, 70.0, 400.0)]
    assert tokens_to_reach(curve, 60.0) == 200.0
    assert tokens_to_reach(curve, 55.0) == pytest.approx(150.0)
    assert tokens_to_reach(curve, 65.0) == pytest.approx(300.0)
    assert tokens_to_reach(curve, 40.0) == 100.0
    assert tokens_to_reach(curve, 71.0) == math.inf


def test_accuracy_at_budget_interpolates_and_penalises_overspending():
    curve = [(0.0, 50.0, 100.0), (0.5, 60.0, 200.0), (1.0, 70.0, 400.0)]
    assert accuracy_at(curve, 200.0) == 60.0
    assert accuracy_at(curve, 300.0) == pytest.approx(65.0)
    assert accuracy_at(curve, 1000.0) == 70.0
    under = [accuracy_at(curve, b) for b in (50.0, 25.0, 12.5)]
    assert under[0] < 50.0 and under[0] > under[1] > under[2]
    # non-monotone curves: the best point within budget counts
    assert accuracy_at([(0.0, 65.0, 100.0), (1.0, 60.0, 300.0)], 250.0) == 65.0


def test_front_keeps_only_non_dominated_points():
    a = cand("a", [(0.0, 50.0, 100.0), (1.0, 60.0, 300.0)])
    b = cand("b", [(0.0, 55.0, 100.0), (1.0, 58.0, 500.0)])
    c = cand("c", [(0.5, 65.0, 600.0)])
    arch = Archive.from_candidates([a, b, c])
    front = {(f.candidate_id, f.beta) for f in arch.front}
    assert front == {("b", 0.0), ("a", 1.0), ("c", 0.5)}
    for f in arch.front:
        assert not any(dominates((g.accuracy, g.tokens), (f.accuracy, f.tokens)) for g in arch.front)
    assert [f.tokens for f in arch.front] == sorted(f.tokens for f in arch.front)


def test_objective_modes_rank_as_the_final_selection_would():
    cheap = cand("cheap", [(0.0, 58.0, 100.0), (1.0, 61.0, 200.0)])
    dear = cand("dear", [(0.0, 59.0, 100.0), (1.0, 64.0, 600.0)])
    weak = cand("weak", [(0.0, 50.0, 50.0), (1.0, 55.0, 90.0)])
    arch = Archive.from_candidates([cheap, dear, weak], target_accuracy=60.0)
    assert arch.ranked() == ["cheap", "dear", "weak"]
    assert arch.objectives["cheap"].tokens_at_target == pytest.approx(100 + 100 * 2 / 3)
    assert not arch.objectives["weak"].reaches
    arch = Archive.from_candidates([cheap, dear, weak], budget_tokens=180.0)
    assert arch.ranked() == ["cheap", "dear", "weak"]
    assert arch.objectives["cheap"].accuracy_at_budget == pytest.approx(60.4)
    assert arch.objectives["dear"].accuracy_at_budget == pytest.approx(59.8)
    arch = Archive.from_candidates([cheap, dear, weak], target_accuracy=60.0, target_margin=3.0)
    assert arch.ranked()[0] == "dear"  # only it clears 63
    assert Archive.from_candidates([cheap, dear, weak]).best() in {"cheap", "dear"}


def test_failed_and_foreign_candidates():
    ok = cand("ok", [(0.5, 60.0, 100.0)])
    bad = cand("bad", [], failure="timeout: took too long")
    llm = cand("llm", [(0.5, 70.0, 50.0)], genome=None)
    arch = Archive.from_candidates([ok, bad, llm])
    assert set(arch.candidates) == {"ok", "bad", "llm"}
    assert "bad" not in arch.objectives
    assert arch.cells[("other",)] == "llm"
    assert arch.cells[("refill", "beta")] == "ok"
    assert {f.candidate_id for f in arch.front} == {"llm"}
    with pytest.raises(ValueError, match="already"):
        arch.add(ok)


def test_cells_keep_the_best_of_each_family():
    seq = SEEDS["sequential_beta"].to_dict()
    a = cand("a", [(0.5, 60.0, 100.0)])
    b = cand("b", [(0.5, 62.0, 100.0)])
    c = Candidate("c", Proposal(source="", meta={"genome": SEEDS["cmc"].to_dict()}), [Score("m/b", 0.5, 61.0, 100.0)])
    d = Candidate("d", Proposal(source="", meta={"genome": seq}), [Score("m/b", 0.5, 59.0, 90.0)])
    arch = Archive.from_candidates([a, b, c, d], budget_tokens=100.0)
    assert arch.cells == {("refill", "beta"): "b", ("plateau", "momentum"): "c"}
    assert arch.cell_of(d) == ("refill", "beta")


def test_rebuild_is_deterministic_and_serialisable():
    rng = random.Random(3)
    cands = []
    for i in range(25):
        pts = sorted((b, rng.uniform(40, 70), rng.uniform(1e4, 1e6)) for b in (0.0, 0.5, 1.0))
        name = rng.choice(sorted(SEEDS))
        cands.append(cand(f"c{i}", pts, genome=name))
    a = Archive.from_candidates(cands, target_accuracy=60.0, budget_tokens=3e5)
    b = Archive(target_accuracy=60.0, budget_tokens=3e5)
    for c in cands:
        b.add(c)
    assert a.to_dict() == b.to_dict()
    json.dumps(a.to_dict(), allow_nan=False)


def test_select_parents_is_seeded_and_respects_eligibility():
    cands = [cand(f"c{i}", [(0.5, 50.0 + i, 100.0 + i)], genome=name) for i, name in enumerate(sorted(SEEDS))]
    arch = Archive.from_candidates(cands, budget_tokens=200.0)
    picks = arch.select_parents(random.Random(1), 20)
    assert picks == arch.select_parents(random.Random(1), 20)
    assert len(picks) == 20 and set(picks) <= set(arch.objectives)
    assert len(set(picks)) > 1
    only = {"c0", "c1"}
    assert set(arch.select_parents(random.Random(2), 10, eligible=only)) <= only
    assert arch.select_parents(random.Random(2), 3, eligible=set()) == []
    # tournament of everyone always picks the best
    assert set(arch.select_parents(random.Random(4), 5, tournament=200, elite_share=1.0)) == {arch.best()}


def test_distinct_ranking_drops_behavioural_duplicates():
    a = cand("a", [(0.5, 60.0, 100.0)])
    twin = cand("twin", [(0.5, 60.0, 100.0)], genome="contest_race")
    b = cand("b", [(0.5, 59.0, 100.0)])
    arch = Archive.from_candidates([a, twin, b], budget_tokens=100.0)
    assert arch.ranked() == ["a", "twin", "b"]
    assert arch.ranked(distinct=True) == ["a", "b"]


def test_objective_of_an_unscored_candidate_ranks_last():
    o = objective(cand("x", [], failure="crash: boom"), target=60.0, budget=100.0)
    assert o.key < objective(cand("y", [(0.5, 1.0, 1e9)]), target=60.0, budget=100.0).key
