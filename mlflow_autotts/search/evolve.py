"""The offline ``evolve`` explorer: evolutionary search over controller genomes, no LLM.

Generation 0 proposes the seed genomes (CMC block for block and a few simple families),
then mutants of them.
Later generations pick parents from the archive (tournament on the objective, or the
elite of a MAP-Elites cell, preferring cells whose elite has had few children) and either
*mutate* one (nudge one or two knob lines, or swap one slot's option, which also adds or
drops a second stopping rule) or *cross* two (each slot, with its knobs, from either
parent; half the time the child also takes the other parent's stopping rule as a second
rule, a structure neither parent has). Every proposal is the genome rendered to source, with the genome in
``meta["genome"]``.

Reproducible: each ``propose`` call draws from ``random.Random`` seeded by the explorer
seed, the generation and the ids of the candidates it was shown, so the same seed and the
same archive give the same proposals, also after a resume.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

from mlflow_autotts.search.archive import Archive
from mlflow_autotts.search.genome import ACTIVE, KNOBS, SEEDS, SLOTS, Genome, GenomeError, snap_line
from mlflow_autotts.search.render import class_name, render
from mlflow_autotts.search.types import Candidate, Proposal

_LOG_SCALE = {"n_init", "max_open", "patience", "cap", "every", "min_done", "widen"}
"""Integer knobs with a wide range: perturbed multiplicatively."""


# ------------------------------------------------------------------------- operators
def random_genome(rng: random.Random) -> Genome:
    """A genome with every slot and knob drawn uniformly (log-uniformly for wide ones)."""
    blocks = {slot: rng.choice(sorted(opts)) for slot, opts in SLOTS.items()}
    knobs = {}
    for name, spec in KNOBS.items():
        def draw() -> float:
            if name in _LOG_SCALE:
                return math.exp(rng.uniform(math.log(max(spec.low, 1.0)), math.log(spec.high)))
            return rng.uniform(spec.low, spec.high)
        a, b = draw(), draw()
        if spec.direction > 0:
            a, b = min(a, b), max(a, b)
        elif spec.direction < 0:
            a, b = max(a, b), min(a, b)
        knobs[name] = snap_line(name, a, b)
    return Genome.make(blocks, knobs)


def perturb_knob(genome: Genome, name: str, rng: random.Random, strength: float = 1.0) -> Genome:
    """Move one knob line: shift it, or move its β=0 end, or its β=1 end."""
    spec = KNOBS[name]
    lo, hi = genome.line(name)
    mode = rng.choice(("shift", "lo", "hi"))
    for _ in range(8):
        if name in _LOG_SCALE:
            f = math.exp(rng.gauss(0.0, 0.35 * strength))
            nlo, nhi = max(lo, 1.0) * f, max(hi, 1.0) * f
        else:
            d = rng.gauss(0.0, 0.12 * strength) * (spec.high - spec.low)
            nlo, nhi = lo + d, hi + d
        new_lo = nlo if mode in ("shift", "lo") else lo
        new_hi = nhi if mode in ("shift", "hi") else hi
        line = snap_line(name, new_lo, new_hi)
        if line != (lo, hi):
            return genome.with_knobs(**{name: line})
    step = spec.quantum() * (1 if rng.random() < 0.5 else -1)  # tiny range: take one grid step
    return genome.with_knobs(**{name: snap_line(name, lo + step, hi + step)})


def swap_block(genome: Genome, rng: random.Random, slot: str | None = None) -> Genome:
    slot = slot or rng.choice(list(SLOTS))
    current = genome.block(slot)
    options = [o for o in SLOTS[slot] if o != current]
    return genome.with_blocks(**{slot: rng.choice(options)})


def mutate(genome: Genome, rng: random.Random, block_rate: float = 0.25, strength: float = 1.0) -> Genome:
    """One small step: swap a slot's option (``block_rate``), else nudge 1-2 active knobs."""
    if rng.random() < block_rate:
        return swap_block(genome, rng)
    active = genome.active_knobs()
    out = genome
    for name in rng.sample(active, min(len(active), 1 + (rng.random() < 0.35))):
        out = perturb_knob(out, name, rng, strength)
    return out


def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    """Each slot, with the knobs it owns, from ``a`` or ``b`` at random."""
    blocks, knobs = {}, {}
    for slot in SLOTS:
        src = a if rng.random() < 0.5 else b
        blocks[slot] = src.block(slot)
        for name, spec in KNOBS.items():
            if spec.slot == slot:
                knobs[name] = src.line(name)
    return Genome.make(blocks, knobs)


def union_stop(child: Genome, other: Genome) -> Genome | None:
    """``child`` with ``other``'s stopping rule added as its second rule (OR-ed), and the
    knobs that rule reads which ``child`` does not use taken from ``other``: a controller
    neither parent is. None when the rule cannot be a second rule or adds nothing."""
    rule = other.block("stop")
    if rule not in SLOTS["stop2"] or rule in (child.block("stop"), child.block("stop2")):
        return None
    used = set(child.active_knobs())
    knobs = {n: other.line(n) for n in ACTIVE[("stop2", rule)] if n not in used}
    return Genome.make({"stop2": rule}, knobs, base=child)


def genome_of(candidate: Candidate) -> Genome | None:
    """The candidate's genome, or None if it has none (or an unreadable one)."""
    meta = candidate.proposal.meta or {}
    data = meta.get("genome")
    if not isinstance(data, dict):
        return None
    try:
        return Genome.from_dict(data)
    except GenomeError:
        return None


def proposal_for(genome: Genome, parents: Sequence[str] = (), generation: int = 0, op: str = "seed",
                 **meta: object) -> Proposal:
    return Proposal(source=render(genome), class_name=class_name(genome), parents=tuple(parents),
                    explorer=EvolveExplorer.name, generation=generation,
                    meta={"genome": genome.to_dict(), "op": op, "genome_key": genome.key(), **meta})


# -------------------------------------------------------------------------- explorer
DEFAULT_SEEDS = ("short_race", "short_race_capped", "cmc", "contest_race", "short_sequential", "race_then_read")
"""Seeds of a default search: the families with the best, monotone β curves in research,
and CMC. (``shorter_margin`` scores well on the search split but its β curve is flat.)"""


@dataclass
class EvolveExplorer:
    """Offline evolutionary explorer (``--explorer evolve``)."""

    seed: int = 0
    """Seed of every random choice; same seed + same archive -> same proposals."""
    target_accuracy: float | None = None
    """Accuracy the archive's objective asks for (e.g. SC@64's on the search data);
    None ranks candidates by their curve's area instead."""
    target_margin: float = 1.0
    """Points above the target the objective asks for, to prefer clear winners."""
    budget_tokens: float | None = None
    """Mean tokens per problem at which the objective measures accuracy (e.g. 80% of
    CMC β=0.5's on the search data); takes precedence over the target when set."""
    reference: tuple[tuple[float, float], ...] | None = None
    """(mean tokens, accuracy %) of the reference curve (CMC on the search data); when set
    the objective is the gain of a candidate's whole curve over it (the search default)."""
    seeds: tuple[str, ...] = DEFAULT_SEEDS
    """Names from ``genome.SEEDS`` proposed first, in this order."""
    crossover_rate: float = 0.35
    """Share of proposals made by crossing two parents."""
    union_rate: float = 0.5
    """Chance that a crossover child also takes the other parent's stopping rule as a second,
    OR-ed rule (``union_stop``): a structure neither parent has."""
    immigrant_rate: float = 0.05
    """Share of proposals that are fresh random genomes."""
    block_rate: float = 0.25
    """Chance that a mutation swaps a slot's option rather than nudging knobs."""
    strength: float = 1.0
    """Scale of knob perturbations."""
    feedback: bool = True
    """Breed from the archive (selection, crossover); False proposes only the seeds and their
    random mutants, whatever was scored (the ablation baseline: seeds without evolution)."""
    tournament: int = 3
    """Tournament size for parent selection."""
    elite_share: float = 0.5
    """Share of parents drawn by tournament; the rest are elites of random cells."""

    name = "evolve"

    def __post_init__(self) -> None:
        unknown = [s for s in self.seeds if s not in SEEDS]
        if unknown:
            raise ValueError(f"unknown seed genome(s) {', '.join(unknown)}; valid: {', '.join(SEEDS)}")
        for label, rate in (("crossover_rate", self.crossover_rate), ("immigrant_rate", self.immigrant_rate),
                            ("union_rate", self.union_rate),
                            ("block_rate", self.block_rate), ("elite_share", self.elite_share)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {rate!r}")

    def archive(self, candidates: Sequence[Candidate]) -> Archive:
        return Archive.from_candidates(candidates, target_accuracy=self.target_accuracy,
                                       target_margin=self.target_margin, budget_tokens=self.budget_tokens,
                                       reference=self.reference)

    def propose(self, archive: Sequence[Candidate], n: int, generation: int) -> list[Proposal]:
        """Up to ``n`` new genomes: unproposed seeds first, then offspring of the archive."""
        ids = ",".join(c.id for c in archive)
        rng = random.Random(f"evolve:{self.seed}:{generation}:{len(archive)}:{ids}")
        seen = set()
        genomes: dict[str, Genome] = {}
        for c in archive:
            g = genome_of(c)
            if g is not None:
                seen.add(g.key())
                genomes[c.id] = g
        out: list[Proposal] = []
        for name in self.seeds:
            g = SEEDS[name]
            if len(out) < n and g.key() not in seen:
                seen.add(g.key())
                out.append(proposal_for(g, (), generation, "seed", seed_name=name))
        arch = self.archive(archive)
        eligible = {cid for cid in genomes if cid in arch.objectives} if self.feedback else set()
        attempts = 0
        while len(out) < n and attempts < 50 * n:
            attempts += 1
            r = rng.random()
            parents: list[str] = []
            if r < self.immigrant_rate:
                child, op = random_genome(rng), "random"
            elif not eligible:  # nothing scored yet: vary the seeds
                base = SEEDS[self.seeds[rng.randrange(len(self.seeds))]] if self.seeds else random_genome(rng)
                child, op = mutate(base, rng, self.block_rate, self.strength), "seed_mutant"
            elif r < self.immigrant_rate + self.crossover_rate and len(eligible) >= 2:
                parents = arch.select_parents(rng, 2, self.tournament, self.elite_share, eligible)
                if parents[0] == parents[1]:
                    continue
                a, b = genomes[parents[0]], genomes[parents[1]]
                child, op = crossover(a, b, rng), "crossover"
                if rng.random() < self.union_rate:
                    other = b if child.block("stop") == a.block("stop") else a
                    joined = union_stop(child, other)
                    if joined is not None:
                        child, op = joined, "union"
                if rng.random() < 0.5:
                    child = mutate(child, rng, self.block_rate, self.strength)
            else:
                parents = arch.select_parents(rng, 1, self.tournament, self.elite_share, eligible)
                child, op = mutate(genomes[parents[0]], rng, self.block_rate, self.strength), "mutate"
            if child.key() in seen:
                continue
            seen.add(child.key())
            out.append(proposal_for(child, parents, generation, op))
        return out
