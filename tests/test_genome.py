"""The evolve explorer's genome and its rendering to controller source."""

from __future__ import annotations

import itertools
import json
import random
import sys
import types

import pytest

from mlflow_autotts.controllers.base import Controller, build_controller
from mlflow_autotts.controllers.cmc import ConfidenceMomentum
from mlflow_autotts.controllers.loading import controllers_in_module
from mlflow_autotts.data.json_io import read_json
from mlflow_autotts.data.trajectory import Branches, Provenance
from mlflow_autotts.replay.episode import ReplayEpisode, shuffle_order
from mlflow_autotts.search.evolve import random_genome
from mlflow_autotts.search.genome import CMC, KNOBS, SEEDS, SLOTS, Genome, GenomeError
from mlflow_autotts.search.render import class_name, render
from tests.helpers import import_source

BETAS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def synthetic_branches(seed: int, n: int = 70) -> Branches:
    """A question whose branches mostly end on "7", with noisy intermediate answers."""
    rng = random.Random(seed)
    probes, tokens, finals = [], [], []
    for _ in range(n):
        final = rng.choice(["7", "7", "7", "12", "ERR", str(rng.randrange(100))])
        k = rng.randrange(0, 14)
        probes.append([rng.choice([final, "ERR", str(rng.randrange(20))]) for _ in range(k)])
        tokens.append(500 * k + rng.randrange(1, 500))
        finals.append(final)
    return Branches.from_lists(f"q{seed}", 500, probes, tokens, finals)


def load(genome: Genome) -> type:
    source = render(genome)
    module = types.ModuleType(f"rendered_{genome.key()}")
    exec(compile(source, f"<{class_name(genome)}>", "exec"), module.__dict__)
    (cls,) = [c for c in vars(module).values()
              if isinstance(c, type) and issubclass(c, Controller) and c is not Controller]
    return cls


def run_checked(cls: type, beta: float, branches: Branches, seed: int) -> tuple[str | None, int]:
    ep = ReplayEpisode(branches, shuffle_order(branches.n_branches, seed))
    answer = cls(beta).solve(ep)
    assert answer is None or isinstance(answer, str)
    assert ep.branches_opened <= 64
    assert ep.tokens_used <= sum(branches.branch_tokens)
    return answer, ep.tokens_used


# ---------------------------------------------------------------------------- genome
@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_round_trips_through_json(name):
    g = SEEDS[name]
    again = Genome.from_dict(json.loads(json.dumps(g.to_dict())))
    assert again == g
    assert again.key() == g.key()


def test_every_slot_and_knob_is_in_every_genome():
    for g in SEEDS.values():
        assert [s for s, _ in g.blocks] == list(SLOTS)
        assert [n for n, _, _ in g.knobs] == list(KNOBS)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["blocks"].update(open="sometimes"), "slot 'open' has no option 'sometimes'"),
    (lambda d: d["blocks"].update(colour="red"), "unknown slot 'colour'"),
    (lambda d: d["blocks"].pop("stop"), "lacks slot"),
    (lambda d: d["knobs"].update(speed=[1, 2]), "unknown knob 'speed'"),
    (lambda d: d["knobs"].update(n_init=[0, 4]), "knob 'n_init': 0"),
    (lambda d: d["knobs"].update(threshold=[0.9, "high"]), "knob 'threshold'"),
    (lambda d: d["knobs"].update(max_open=[64, 4]), "higher β spends more"),
    (lambda d: d["knobs"].update(slack=[0.01, 0.04]), "higher β spends more"),
    (lambda d: d.update(version=99), "version 99"),
])
def test_bad_genomes_are_refused_with_a_reason(change, message):
    d = CMC.to_dict()
    change(d)
    with pytest.raises(GenomeError, match=message.replace("(", r"\(").replace("'", "'")):
        Genome.from_dict(d)


def test_knob_values_stay_in_range_and_move_one_way():
    rng = random.Random(5)
    for g in [*SEEDS.values(), *(random_genome(rng) for _ in range(40))]:
        for name, spec in KNOBS.items():
            values = [g.value(name, b) for b in BETAS]
            assert all(spec.low <= v <= spec.high for v in values), (name, values)
            assert all(isinstance(v, int) for v in values) if spec.integer else True
            up = values == sorted(values)
            down = values == sorted(values, reverse=True)
            assert up or down, (name, values)
            if spec.direction > 0:
                assert up, (name, values)
            elif spec.direction < 0:
                assert down, (name, values)


def test_key_ignores_dormant_and_switched_off_knobs():
    g = SEEDS["sequential_beta"]
    assert "patience" not in g.active_knobs()
    assert g.with_knobs(patience=(5, 20)).key() == g.key()
    assert g.with_knobs(threshold=(0.8, 0.9)).key() != g.key()
    # a cap of 64 and a futility rule that never fires are active but unused
    assert {"cap", "futile_after", "futile_share"} <= set(g.active_knobs()) - set(g.used_knobs())
    assert g.with_knobs(futile_share=(0.0, 0.0), futile_after=(5, 9)).key() == g.key()
    assert g.with_knobs(cap=(20, 40)).key() != g.key()
    assert "cap = " in render(g.with_knobs(cap=(20, 40))) and "cap = " not in render(g)


# ---------------------------------------------------------------------------- render
def test_render_is_deterministic_and_documented():
    g = SEEDS["short_race"]
    source = render(g)
    assert render(Genome.from_dict(g.to_dict())) == source
    for slot, option in g.blocks:
        assert f"- {slot}: {option}" in source
    for name in g.used_knobs():
        assert f"self.{name} = " in source
    assert "patience" not in source  # dormant knobs are not rendered


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_rendered_knobs_match_the_genome(name):
    g = SEEDS[name]
    cls = load(g)
    for b in BETAS:
        assert cls(b).knobs() == {k: g.value(k, b) for k in g.used_knobs()}


def test_every_block_combination_renders_and_runs():
    episodes = [synthetic_branches(s) for s in range(2)] + [synthetic_branches(9, n=3)]
    base = Genome.make({}, {"n_init": (2, 6), "max_open": (8, 64), "warm_up": (0, 3), "min_done": (1, 3),
                            "cap": (20, 64), "futile_after": (6, 20), "futile_share": (0.3, 0.2)})
    for options in itertools.product(*(sorted(opts) for opts in SLOTS.values())):
        g = base.with_blocks(**dict(zip(SLOTS, options)))
        cls = load(g)
        assert cls.name.startswith("evolved_") and cls.__doc__
        for b, (i, br) in itertools.product((0.0, 1.0), enumerate(episodes)):
            run_checked(cls, b, br, seed=i)


def test_random_genomes_render_and_run():
    rng = random.Random(11)
    br = synthetic_branches(3)
    for _ in range(30):
        cls = load(random_genome(rng))
        for b in (0.0, 0.5, 1.0):
            run_checked(cls, b, br, seed=1)


def test_more_beta_spends_more_on_average_for_the_seeds():
    episodes = [synthetic_branches(s) for s in range(6)]
    for name, g in SEEDS.items():
        cls = load(g)
        spent = [sum(run_checked(cls, b, br, seed=s)[1] for s, br in enumerate(episodes)) for b in (0.0, 1.0)]
        assert spent[0] <= spent[1], name


def test_cmc_seed_is_cmc_on_synthetic_episodes():
    cls = load(CMC)
    for s in range(8):
        br = synthetic_branches(100 + s)
        for b in BETAS:
            order = shuffle_order(br.n_branches, s)
            ours, ref = ReplayEpisode(br, order), ReplayEpisode(br, order)
            assert cls(b).solve(ours) == ConfidenceMomentum(b).solve(ref)
            assert ours.tokens_used == ref.tokens_used


def test_cmc_seed_is_cmc_on_published_data(data_dir):
    cls = load(CMC)
    for model in ("Qwen3-0.6B", "Qwen3-8B"):
        ts = read_json(data_dir / model / "aime24.json", Provenance(model, "aime24"))
        for prob in ts.problems[:4]:
            for b, seed in itertools.product((0.0, 0.5, 1.0), range(2)):
                order = shuffle_order(prob.branches.n_branches, seed)
                ours, ref = ReplayEpisode(prob.branches, order), ReplayEpisode(prob.branches, order)
                assert cls(b).solve(ours) == ConfidenceMomentum(b).solve(ref)
                assert ours.tokens_used == ref.tokens_used


def test_rendered_source_loads_like_any_controller_file(tmp_path):
    g = SEEDS["contest_race"]
    path = tmp_path / "candidate.py"
    path.write_text(render(g), encoding="utf-8")
    cls = import_source(path, class_name(g))
    module = sys.modules[cls.__module__]
    assert controllers_in_module(module) == [cls]
    ctrl = build_controller(cls, beta=0.3)
    assert ctrl.config() == {"beta": 0.3}
    assert isinstance(ctrl.solve(ReplayEpisode(synthetic_branches(4))), str)


def test_a_genome_stored_before_the_second_stop_rule_reads_as_having_none():
    d = CMC.to_dict()
    del d["blocks"]["stop2"]
    assert Genome.from_dict(d) == CMC
    # the same rule as first and second rule behaves (and is keyed) as the rule once
    g = SEEDS["short_race"]
    assert g.with_blocks(stop2="beta").key() == g.key()
    assert g.with_blocks(stop2="margin").key() != g.key()


# ------------------------------------------------------------- the sequential length-weighted family
def namespace(genome: Genome) -> dict:
    ns: dict = {}
    exec(compile(render(genome), f"<{class_name(genome)}>", "exec"), ns)
    return ns


def test_length_weighted_votes_favour_short_reasoning_and_keep_a_count():
    votes_cls = namespace(SEEDS["short_sequential"])["LengthWeightedVotes"]
    # three long answers "a" against two short answers "b": plurality says "a"
    v = votes_cls([("a", 30), ("a", 32), ("a", 34), ("b", 10), ("b", 12)], 1.0)
    assert v.winner == "b" and v.n == 5
    assert abs(sum(v.counts.values()) - 5) < 1e-9  # rescaled: the weights still sum to the count
    assert v.top1 == max(v.counts.values()) and v.top2 == min(v.counts.values())
    assert votes_cls([("a", 30), ("a", 32), ("a", 34), ("b", 10), ("b", 12)], 0.0).winner == "a"  # power 0: plurality
    assert votes_cls([], 1.0).winner is None


def branches_of(lengths: list[int], finals: list[str]) -> Branches:
    """Branches of ``lengths`` intervals each (probes repeat the final answer)."""
    return Branches.from_lists("q", 500, [[f] * (n - 1) for n, f in zip(lengths, finals)],
                               [500 * n for n in lengths], finals)


def test_a_sequential_reader_abandons_a_branch_longer_than_the_median_and_opens_the_next():
    g = SEEDS["short_sequential"].with_knobs(threshold=(0.999, 0.999), min_done=(16, 16), ratio=(1.5, 1.5))
    cls = load(g)
    # two branches of 10 intervals finish; the third runs 40: it is dropped once it is longer than
    # 15 intervals (1.5 x the median), at 16
    br = branches_of([10, 10, 40, 10], ["1", "2", "3", "4"])
    ep = ReplayEpisode(br)
    cls(0.5).solve(ep)
    assert ep.branches_opened == 4
    assert ep.tokens_used == 500 * (10 + 10 + 16 + 10)


def test_keep_zero_is_what_lets_the_last_running_branch_go():
    g = SEEDS["short_sequential"].with_knobs(threshold=(0.999, 0.999), min_done=(16, 16), ratio=(1.5, 1.5))
    br = branches_of([10, 10, 40, 10], ["1", "2", "3", "4"])
    ep = ReplayEpisode(br)
    load(g.with_knobs(keep=(1, 1)))(0.5).solve(ep)
    assert ep.tokens_used == 500 * (10 + 10 + 40 + 10)  # keep 1: the long branch runs to its end


def test_a_sequential_reader_is_not_cut_short_by_a_round_limit():
    """64 branches of 40 intervals read one after another take 2,560 rounds."""
    g = SEEDS["short_sequential"].with_knobs(threshold=(0.999, 0.999), min_done=(16, 16), ratio=(4, 4))
    br = branches_of([40] * 64, [str(i) for i in range(64)])
    ep = ReplayEpisode(br)
    load(g)(1.0).solve(ep)
    assert ep.branches_opened == 64 and ep.tokens_used == 64 * 40 * 500


def test_the_overlong_rule_waits_for_two_finished_branches():
    g = SEEDS["short_sequential"].with_knobs(threshold=(0.999, 0.999), min_done=(16, 16), ratio=(1.5, 1.5))
    # one finished branch (10) is no median: the second branch runs its 40 intervals to the end
    br = branches_of([10, 40, 10], ["1", "2", "3"])
    ep = ReplayEpisode(br)
    load(g)(0.5).solve(ep)
    assert ep.tokens_used == 500 * (10 + 40 + 10)


def test_race_then_read_races_three_branches_at_low_beta_and_reads_one_at_a_time_at_high_beta():
    cls = load(SEEDS["race_then_read"])
    br = branches_of([10, 30, 30, 10, 10, 10], ["7"] * 6)
    ep = ReplayEpisode(br)
    assert cls(0.0).solve(ep) == "7"
    # β=0: branches 0-2 race; 0 finishes at round 10 and 3 opens in its place; 3 finishes at
    # round 19, and two agreeing votes reach the 0.7 threshold: 1 and 2 ran 19 intervals each
    assert (ep.branches_opened, ep.tokens_used) == (4, 500 * (10 + 19 + 19 + 10))
    ep = ReplayEpisode(br)
    assert cls(1.0).solve(ep) == "7"
    # β=1: one at a time. 0 (10); 1 runs to its end (30: no median of two yet); 2 is dropped at 22
    # (bursts of 3 intervals carry it past the median, 20); 3 (10): three votes reach 0.9
    assert (ep.branches_opened, ep.tokens_used) == (4, 500 * (10 + 30 + 22 + 10))


def test_width_and_keep_may_narrow_as_beta_grows():
    g = SEEDS["race_then_read"]
    assert [g.value("n_init", b) for b in (0.0, 0.5, 1.0)] == [3, 2, 1]
    assert [g.value("keep", b) for b in (0.0, 0.5, 1.0)] == [2, 1, 0]
    assert Genome.from_dict(g.to_dict()) == g
