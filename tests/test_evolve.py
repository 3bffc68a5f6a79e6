"""The offline evolve explorer: seeds, mutation, crossover, reproducibility."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from mlflow_autotts.replay.results import EvalResult as Score
from mlflow_autotts.search.evolve import (
    DEFAULT_SEEDS,
    EvolveExplorer,
    crossover,
    genome_of,
    mutate,
    perturb_knob,
    random_genome,
    swap_block,
)
from mlflow_autotts.search.genome import KNOBS, SEEDS, SLOTS, Genome
from mlflow_autotts.search.render import class_name, render
from mlflow_autotts.search.types import Candidate, Proposal


def fake_scores(proposal: Proposal) -> list[Score]:
    """Deterministic made-up scores, so archives can be built without replaying."""
    h = int(hashlib.sha256(proposal.source.encode()).hexdigest()[:8], 16)
    out = []
    for i, beta in enumerate((0.0, 0.5, 1.0)):
        out.append(Score("m/b", beta, 40 + (h % 200) / 10 + 3 * i, 1e5 * (1 + i) + h % 50000))
    return out


def grow(explorer: EvolveExplorer, generations: int, per_gen: int = 5, fail_every: int = 0) -> list[Candidate]:
    archive: list[Candidate] = []
    for gen in range(generations):
        for p in explorer.propose(archive, per_gen, gen):
            i = len(archive)
            if fail_every and i % fail_every == fail_every - 1:
                archive.append(Candidate(f"c{i}", p, [], "timeout: too slow"))
            else:
                archive.append(Candidate(f"c{i}", p, fake_scores(p)))
    return archive


def test_generation_zero_proposes_the_seeds_in_order():
    props = EvolveExplorer(seed=0).propose([], 3, 0)
    names = list(DEFAULT_SEEDS)[:3]
    assert [p.meta["seed_name"] for p in props] == names
    for p, name in zip(props, names):
        assert p.explorer == "evolve" and p.parents == () and p.generation == 0
        assert p.meta["op"] == "seed"
        assert Genome.from_dict(p.meta["genome"]) == SEEDS[name]
        assert p.source == render(SEEDS[name]) and p.class_name == class_name(SEEDS[name])
        json.dumps(p.meta)
    assert EvolveExplorer(seed=0).propose([], 0, 0) == []


def test_generation_zero_fills_up_with_seed_mutants():
    props = EvolveExplorer(seed=0, immigrant_rate=0.0).propose([], 9, 0)
    assert [p.meta["op"] for p in props] == ["seed"] * len(DEFAULT_SEEDS) + ["seed_mutant"] * (9 - len(DEFAULT_SEEDS))
    assert len({p.meta["genome_key"] for p in props}) == 9


def test_same_seed_same_proposals_other_seed_other_proposals():
    a = grow(EvolveExplorer(seed=7, budget_tokens=2e5), 5)
    b = grow(EvolveExplorer(seed=7, budget_tokens=2e5), 5)
    c = grow(EvolveExplorer(seed=8, budget_tokens=2e5), 5)
    assert [x.proposal for x in a] == [x.proposal for x in b]
    assert [x.proposal.source for x in a] != [x.proposal.source for x in c]


def test_resume_reproduces_the_next_batch():
    ex = EvolveExplorer(seed=3, target_accuracy=50.0)
    archive = grow(ex, 4)
    again = [Candidate(c.id, c.proposal, list(c.scores), c.failure) for c in archive]  # as rebuilt from MLflow
    assert ex.propose(archive, 6, 4) == EvolveExplorer(seed=3, target_accuracy=50.0).propose(again, 6, 4)


def test_offspring_have_parents_from_the_archive_and_are_new():
    archive = grow(EvolveExplorer(seed=1), 6, fail_every=4)
    ids = {c.id for c in archive}
    failed = {c.id for c in archive if not c.ok}
    keys = [genome_of(c).key() for c in archive]
    assert len(keys) == len(set(keys))  # never the same behaviour twice
    later = [c.proposal for c in archive if c.proposal.generation > 0]
    assert later and any(p.meta["op"] == "mutate" for p in later)
    for p in later:
        assert set(p.parents) <= ids - failed
        assert len(p.parents) == {"mutate": 1, "crossover": 2, "union": 2, "random": 0, "seed": 0,
                                  "seed_mutant": 0}[p.meta["op"]]


def test_foreign_candidates_are_ignored_as_parents():
    llm = Candidate("llm1", Proposal(source="class X: pass", explorer="openai:x"),
                    [Score("m/b", 0.5, 99.0, 10.0)])
    props = EvolveExplorer(seed=0).propose([llm], 8, 1)
    assert len(props) == 8
    assert all("llm1" not in p.parents for p in props)


def test_mutation_keeps_genomes_valid_and_usually_changes_behaviour():
    rng = random.Random(0)
    changed = 0
    for i in range(300):
        g = random_genome(rng) if i % 2 else rng.choice(list(SEEDS.values()))
        child = mutate(g, rng)
        assert Genome.from_dict(child.to_dict()) == child  # in range, in direction
        changed += child.key() != g.key()
    assert changed >= 270


def test_perturb_and_swap_touch_only_what_they_say():
    rng = random.Random(2)
    g = SEEDS["cmc"]
    for name in g.active_knobs():
        child = perturb_knob(g, name, rng)
        diff = [n for (n, lo, hi), (_, lo2, hi2) in zip(g.knobs, child.knobs) if (lo, hi) != (lo2, hi2)]
        assert diff == [name]
        assert child.blocks == g.blocks
    for slot in SLOTS:
        child = swap_block(g, rng, slot)
        assert child.block(slot) != g.block(slot)
        assert [s for (s, o), (_, o2) in zip(g.blocks, child.blocks) if o != o2] == [slot]
        assert child.knobs == g.knobs


def test_crossover_takes_each_slot_with_its_knobs_from_one_parent():
    rng = random.Random(4)
    a, b = SEEDS["cmc"], SEEDS["contest_race"].with_knobs(n_init=(5, 9), threshold=(0.6, 0.7))
    seen = set()
    for _ in range(40):
        child = crossover(a, b, rng)
        for slot in SLOTS:
            src = a if child.block(slot) == a.block(slot) and child.block(slot) != b.block(slot) else None
            src = src or (b if child.block(slot) == b.block(slot) and child.block(slot) != a.block(slot) else None)
            owned = [n for n, spec in KNOBS.items() if spec.slot == slot]
            if src is not None:
                assert all(child.line(n) == src.line(n) for n in owned)
            else:  # same option in both: knobs come whole from one of them
                assert all(child.line(n) == a.line(n) for n in owned) or all(
                    child.line(n) == b.line(n) for n in owned)
        seen.add(child.key())
    assert len(seen) > 4


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": ("cmc", "nope")}, "unknown seed genome"),
    ({"crossover_rate": 1.5}, "crossover_rate"),
    ({"immigrant_rate": -0.1}, "immigrant_rate"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EvolveExplorer(**kwargs)


def test_union_crossover_adds_the_other_parents_stopping_rule_as_new_code():
    """A child that takes the other parent's stopping rule as a second rule is a controller
    neither parent is: it passes the lint, and its source has a rule neither parent's has."""
    from mlflow_autotts.search.evolve import union_stop
    from mlflow_autotts.search.extract import check_source

    a = SEEDS["short_race"]  # stops on Beta confidence
    b = SEEDS["shorter_margin"]  # stops on a vote margin
    child = union_stop(a, b)
    assert child is not None
    assert child.block("stop") == "beta" and child.block("stop2") == "margin"
    assert child.line("margin") == b.line("margin")
    assert child.line("threshold") == a.line("threshold")  # what the child already used is kept
    source = render(child)
    check_source(source, class_name(child))
    second = [ln for ln in source.splitlines() if "second rule" in ln]
    assert second and not any("second rule" in render(g) for g in (a, b))
    assert child.key() not in {a.key(), b.key()}
    assert union_stop(a, a) is None  # the same rule twice adds nothing
    assert union_stop(a, SEEDS["cmc"]) is None  # momentum is not a second rule


def test_explorer_reaches_structures_no_seed_has():
    seeds = {tuple(SEEDS[n].blocks) for n in DEFAULT_SEEDS}
    all_ops: set[str] = set()
    for explorer_seed in range(4):  # a union is rare (0-4 in 64 proposals), so look over a few streams
        archive = grow(EvolveExplorer(seed=explorer_seed), 8, per_gen=8)
        structures = {tuple(genome_of(c).blocks) for c in archive}
        ops = {c.proposal.meta["op"] for c in archive}
        all_ops |= ops
        assert "crossover" in ops and "mutate" in ops
        assert len(structures - seeds) >= 10
        assert any(dict(s)["stop2"] != "none" for s in structures)
    assert "union" in all_ops
