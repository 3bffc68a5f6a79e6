"""The typed search space of the offline ``evolve`` explorer: building blocks and knobs.

A controller genome picks one option for each *slot* of a fixed round-based skeleton
(how branches are opened, how intervals are shared, when branches are pruned, when to
stop, how the answer is aggregated) and sets the numeric *knobs* those options read.
Every knob is a straight line in β, ``value(β) = lo + (hi - lo) · β`` (rounded to an int
for integer knobs, to 4 decimals for real ones, then clamped to the knob's range), so it
is monotone in β by construction; knobs with a known effect on spending are further kept
pointing the way "higher β spends more". Knobs of options not chosen stay in the genome,
dormant, so a later mutation that switches the option back finds them again.

The genome is plain data (``to_dict``/``from_dict`` round-trip through JSON); ``render``
turns it into the controller's Python source.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from mlflow_autotts.controllers.base import MAX_BRANCHES

GENOME_VERSION = 1


@dataclass(frozen=True)
class KnobSpec:
    """One numeric knob of the skeleton."""

    name: str
    slot: str
    """The slot that owns it (crossover moves a slot's knobs together)."""
    integer: bool
    low: float
    """Smallest value the knob may take (at any β)."""
    high: float
    """Largest value the knob may take."""
    direction: int
    """+1: larger values spend more tokens (so hi >= lo); -1: smaller values spend more
    (so hi <= lo); 0: no fixed direction."""
    doc: str

    def clamp(self, x: float) -> float:
        return min(self.high, max(self.low, x))

    def quantum(self) -> float:
        """Resolution of lo/hi: halves for integer knobs, thousandths for real ones."""
        return 0.5 if self.integer else 0.001


def _k(name: str, slot: str, integer: bool, low: float, high: float, direction: int, doc: str) -> KnobSpec:
    return KnobSpec(name, slot, integer, float(low), float(high), direction, doc)


KNOBS: dict[str, KnobSpec] = {k.name: k for k in (
    # opening and widening
    # n_init and keep have no fixed direction: a wide race with a loose stop can spend less than
    # a one-at-a-time read with a stricter one (on the published data a 3-wide race stopping at
    # confidence 0.7 costs 52k tokens a question, a one-at-a-time read stopping at 0.58 64k),
    # so a line may narrow with β
    _k("n_init", "open", True, 1, 64, 0, "branches opened before the first round (the width for 'refill')"),
    _k("max_open", "open", True, 1, 64, +1, "most branches ever opened"),
    _k("widen", "open", True, 1, 16, +1, "branches opened per widening"),
    _k("every", "open", True, 1, 20, -1, "rounds between scheduled widenings"),
    _k("trend", "open", False, -0.2, 0.5, 0, "widen only while the confidence momentum rose at most this much"),
    # sharing intervals
    _k("burst", "alloc", True, 1, 4, +1, "intervals per round for a branch that agrees with the leader"),
    # pruning
    _k("patience", "prune", True, 1, 40, +1, "rounds a branch may disagree with the leader before it is pruned"),
    _k("keep", "prune", True, 0, 8, 0, "pruning never leaves fewer running branches than this (0: a refilling "
       "opening rule replaces the last one)"),
    _k("ratio", "prune", False, 1.0, 4.0, +1, "prune a running branch longer than this times the median finished length"),
    # stopping
    _k("warm_up", "stop", True, 0, 20, +1, "rounds before pruning, bursts and stopping are allowed"),
    _k("threshold", "stop", False, 0.5, 0.999, +1, "confidence needed to stop"),
    _k("min_done", "stop", True, 1, 16, +1, "finished answers needed to stop"),
    _k("margin", "stop", True, 1, 10, +1, "lead in votes of the leader over the runner-up needed to stop"),
    _k("alpha", "stop", False, 0.05, 1.0, 0, "weight of the newest confidence in the momentum"),
    _k("window", "stop", True, 1, 16, 0, "rounds over which the momentum trend is measured"),
    _k("slack", "stop", False, 0.0, 0.5, -1, "how far the momentum may have fallen over the window and still stop"),
    _k("cap", "stop", True, 1, 64, +1, "stop once this many answers are finished, whatever the confidence"),
    _k("futile_after", "stop", True, 2, 64, +1, "finished answers after which a scattered vote gives up"),
    _k("futile_share", "stop", False, 0.0, 0.6, -1, "give up when the leader holds less than this share of them"),
    _k("probe_weight", "stop", False, 0.0, 1.0, 0, "vote weight of a running branch's settled intermediate answer"),
    _k("settle", "stop", True, 1, 8, 0, "consecutive equal intermediate answers that make a branch's answer settled"),
    # aggregation
    _k("power", "vote", False, 0.0, 4.0, 0, "finished answers are weighted by (shortest length / length) ** power"),
    _k("cut", "vote", False, 0.5, 3.0, 0, "only finished answers at most this times the median finished length vote"),
    # a second stopping rule, OR-ed with the first
    _k("agree", "stop2", True, 2, 16, +1, "finished answers that, all equal, end the question at once"),
)}

SLOTS: dict[str, dict[str, str]] = {
    "open": {
        "fixed": "open n_init branches and never widen",
        "refill": "keep n_init branches running: open a new one whenever one finishes or is pruned",
        "schedule": "open `widen` more branches every `every` rounds",
        "plateau": "open `widen` more branches while the confidence momentum is low and not rising (CMC)",
        "contest": "keep n_init + widen x (finished answers disagreeing with the leader) branches running",
    },
    "alloc": {
        "round_robin": "every running branch gets one interval per round, in opening order",
        "leader_burst": "most-probed first; branches agreeing with the leader get `burst` intervals (CMC)",
    },
    "prune": {
        "none": "never prune",
        "disagree": "prune branches that disagree with the leader for `patience` rounds (CMC)",
        "overlong": "prune running branches longer than `ratio` times the median finished length (once two "
                    "branches have finished)",
        "disagree_overlong": "both of the above",
    },
    "stop": {
        "beta": "stop when the Beta-majority confidence of the finished answers reaches `threshold`",
        "momentum": "stop when an EMA of that confidence reaches `threshold` and is not falling (CMC)",
        "margin": "stop when the leader has `margin` more finished votes than the runner-up",
        "probe_mix": "Beta confidence of finished answers plus settled intermediate answers, weighted",
    },
    "stop2": {
        "none": "no second stopping rule",
        "margin": "also stop when the leader has `margin` more finished votes than the runner-up",
        "beta": "also stop when the Beta-majority confidence of the finished answers reaches `threshold`",
        "unanimous": "also stop once `agree` finished answers are in and all of them are equal",
    },
    "vote": {
        "plurality": "the most frequent finished answer",
        "short_weighted": "finished answers weighted by (shortest length / length) ** power",
        "shorter": "only finished answers at most `cut` times the median finished length vote",
        "len_weighted": "finished answers weighted by (median length / length) ** power, rescaled to sum to their "
                        "count, so the Beta confidence reads them as votes",
    },
}
"""Slot -> option -> what it does (also used in the rendered docstring)."""

_SHARED = ("warm_up", "cap", "futile_after", "futile_share")
ACTIVE: dict[tuple[str, str], tuple[str, ...]] = {
    ("open", "fixed"): ("n_init",),
    ("open", "refill"): ("n_init", "max_open"),
    ("open", "schedule"): ("n_init", "max_open", "widen", "every"),
    ("open", "plateau"): ("n_init", "max_open", "widen", "trend", "alpha", "window", "threshold"),
    ("open", "contest"): ("n_init", "max_open", "widen"),
    ("alloc", "round_robin"): (),
    ("alloc", "leader_burst"): ("burst", "warm_up"),
    ("prune", "none"): (),
    ("prune", "disagree"): ("patience", "keep", "warm_up"),
    ("prune", "overlong"): ("ratio", "keep"),
    ("prune", "disagree_overlong"): ("patience", "ratio", "keep", "warm_up"),
    ("stop", "beta"): ("threshold", "min_done") + _SHARED,
    ("stop", "momentum"): ("threshold", "min_done", "alpha", "window", "slack") + _SHARED,
    ("stop", "margin"): ("margin", "min_done") + _SHARED,
    ("stop", "probe_mix"): ("threshold", "min_done", "probe_weight", "settle") + _SHARED,
    ("stop2", "none"): (),
    ("stop2", "margin"): ("margin", "min_done"),
    ("stop2", "beta"): ("threshold", "min_done"),
    ("stop2", "unanimous"): ("agree",),
    ("vote", "plurality"): (),
    ("vote", "short_weighted"): ("power",),
    ("vote", "shorter"): ("cut",),
    ("vote", "len_weighted"): ("power",),
}
"""The knobs each option reads."""


OPTIONAL_SLOTS = {"stop2": "none"}
"""Slots added after genomes were first stored, and the option a genome without them has."""


class GenomeError(ValueError):
    """A genome that does not fit the space (unknown slot/option/knob, value out of range)."""


def _snap(spec: KnobSpec, x: float) -> float:
    q = spec.quantum()
    v = round(round(x / q) * q, 4)
    return float(spec.clamp(v))


@dataclass(frozen=True)
class Genome:
    """Block choices and knob lines; build with ``Genome.make`` or ``Genome.from_dict``."""

    blocks: tuple[tuple[str, str], ...]
    """(slot, option) for every slot, in ``SLOTS`` order."""
    knobs: tuple[tuple[str, float, float], ...]
    """(knob, value at β=0, value at β=1) for every knob, in ``KNOBS`` order."""

    # ------------------------------------------------------------------ construction
    @classmethod
    def make(cls, blocks: Mapping[str, str], knobs: Mapping[str, tuple[float, float] | list[float] | float],
             base: "Genome | None" = None) -> "Genome":
        """A checked genome; missing slots/knobs come from ``base`` (default: ``DEFAULT``)."""
        base_blocks = dict(base.blocks) if base else dict(_DEFAULT_BLOCKS)
        base_knobs = {n: (lo, hi) for n, lo, hi in base.knobs} if base else dict(_DEFAULT_KNOBS)
        for slot in blocks:
            if slot not in SLOTS:
                raise GenomeError(f"unknown slot {slot!r}; valid: {', '.join(SLOTS)}")
        for name in knobs:
            if name not in KNOBS:
                raise GenomeError(f"unknown knob {name!r}; valid: {', '.join(KNOBS)}")
        merged_blocks = {**base_blocks, **blocks}
        for slot, opt in merged_blocks.items():
            if opt not in SLOTS[slot]:
                raise GenomeError(f"slot {slot!r} has no option {opt!r}; valid: {', '.join(SLOTS[slot])}")
        lines: list[tuple[str, float, float]] = []
        for name, spec in KNOBS.items():
            raw = knobs.get(name, base_knobs[name])
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                lo = hi = float(raw)
            else:
                try:
                    lo, hi = (float(v) for v in raw)  # type: ignore[union-attr]
                except (TypeError, ValueError):
                    raise GenomeError(f"knob {name!r}: expected a number or [lo, hi], got {raw!r}") from None
            for v in (lo, hi):
                if not math.isfinite(v) or not spec.low <= v <= spec.high:
                    raise GenomeError(f"knob {name!r}: {v!r} outside [{spec.low:g}, {spec.high:g}]")
            if spec.direction > 0 and hi < lo or spec.direction < 0 and hi > lo:
                want = "hi >= lo" if spec.direction > 0 else "hi <= lo"
                raise GenomeError(f"knob {name!r}: ({lo:g}, {hi:g}) must have {want} so that higher β spends more")
            lines.append((name, lo, hi))
        return cls(tuple((s, merged_blocks[s]) for s in SLOTS), tuple(lines))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Genome":
        """Inverse of ``to_dict``; raises ``GenomeError`` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise GenomeError(f"genome must be a mapping, got {type(data).__name__}")
        version = data.get("version", GENOME_VERSION)
        if version != GENOME_VERSION:
            raise GenomeError(f"genome version {version!r} not supported (expected {GENOME_VERSION})")
        blocks, knobs = data.get("blocks", {}), data.get("knobs", {})
        if not isinstance(blocks, Mapping) or not isinstance(knobs, Mapping):
            raise GenomeError("genome 'blocks' and 'knobs' must be mappings")
        blocks = {**{s: o for s, o in OPTIONAL_SLOTS.items() if s not in blocks}, **blocks}
        missing = [s for s in SLOTS if s not in blocks]
        if missing:
            raise GenomeError(f"genome lacks slot(s) {', '.join(missing)}")
        return cls.make(blocks, knobs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"version", "blocks": {slot: option}, "knobs": {name: [lo, hi]}}``."""
        return {"version": GENOME_VERSION, "blocks": dict(self.blocks),
                "knobs": {n: [lo, hi] for n, lo, hi in self.knobs}}

    # ---------------------------------------------------------------------- queries
    def block(self, slot: str) -> str:
        return dict(self.blocks)[slot]

    def line(self, name: str) -> tuple[float, float]:
        for n, lo, hi in self.knobs:
            if n == name:
                return lo, hi
        raise KeyError(name)

    def value(self, name: str, beta: float) -> int | float:
        """The knob at β, exactly as the rendered controller computes it."""
        spec = KNOBS[name]
        lo, hi = self.line(name)
        b = min(1.0, max(0.0, float(beta)))
        x = lo + slope(lo, hi) * b
        if spec.integer:
            return int(min(spec.high, max(spec.low, round(x))))
        return float(min(spec.high, max(spec.low, round(x, 4))))

    def active_knobs(self) -> list[str]:
        """Knobs the chosen options read, in ``KNOBS`` order (what mutation may nudge)."""
        used: set[str] = set()
        for slot, opt in self.blocks:
            used.update(ACTIVE[(slot, opt)])
        return [n for n in KNOBS if n in used]

    def switched_off(self) -> set[str]:
        """Active knobs whose lines disable their rule at every β (e.g. a cap of 64)."""
        off = set()
        if min(self.line("cap")) >= MAX_BRANCHES:
            off.add("cap")
        if min(self.line("futile_after")) >= MAX_BRANCHES or max(self.line("futile_share")) <= 0:
            off.update(("futile_after", "futile_share"))
        if self.line("warm_up") == (0.0, 0.0) and "warm_up" in self.active_knobs():
            off.add("warm_up")
        return off

    def used_knobs(self) -> list[str]:
        """Knobs the rendered controller actually uses: active ones not switched off."""
        off = self.switched_off()
        return [n for n in self.active_knobs() if n not in off]

    def key(self) -> str:
        """Identity of the behaviour: blocks and *used* knob lines (dormant ones ignored)."""
        used = set(self.used_knobs())
        blocks = dict(self.blocks)
        if blocks.get("stop2") == blocks["stop"]:  # the same rule twice is the rule once
            blocks["stop2"] = "none"
        payload = {"blocks": blocks, "knobs": {n: [lo, hi] for n, lo, hi in self.knobs if n in used}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def with_blocks(self, **blocks: str) -> "Genome":
        return Genome.make(blocks, {}, base=self)

    def with_knobs(self, **knobs: Any) -> "Genome":
        return Genome.make({}, knobs, base=self)


def slope(lo: float, hi: float) -> float:
    """``hi - lo`` rounded to kill float noise, so source and ``Genome.value`` agree."""
    return round(hi - lo, 6)


def snap_line(name: str, lo: float, hi: float) -> tuple[float, float]:
    """Snap (lo, hi) to the knob's grid and range, and to its spending direction."""
    spec = KNOBS[name]
    lo, hi = _snap(spec, lo), _snap(spec, hi)
    if spec.direction > 0 and hi < lo or spec.direction < 0 and hi > lo:
        lo = hi = _snap(spec, (lo + hi) / 2)
    return lo, hi


# ------------------------------------------------------------------------------- seeds
_DEFAULT_BLOCKS = {"open": "fixed", "alloc": "round_robin", "prune": "none", "stop": "beta", "stop2": "none",
                   "vote": "plurality"}
_DEFAULT_KNOBS: dict[str, tuple[float, float]] = {
    "n_init": (4, 8), "max_open": (16, 64), "widen": (1, 4), "every": (4, 2), "trend": (0.04, 0.01),
    "burst": (1, 3), "patience": (3, 12), "keep": (2, 2), "ratio": (1.5, 2.5),
    "warm_up": (2, 10), "threshold": (0.85, 0.97), "min_done": (2, 5), "margin": (2, 4),
    "alpha": (0.7, 0.3), "window": (2, 8), "slack": (0.04, 0.01), "cap": (64, 64),
    "futile_after": (64, 64), "futile_share": (0.0, 0.0), "probe_weight": (0.5, 0.5), "settle": (3, 3), "power": (1.0, 1.0), "cut": (1.0, 1.0),
    "agree": (3, 5),
}

def _bootstrap() -> Genome:
    g = Genome(tuple(_DEFAULT_BLOCKS.items()), tuple((n, *_DEFAULT_KNOBS[n]) for n in KNOBS))
    return Genome.make({}, {}, base=g)  # validates the defaults


DEFAULT = _bootstrap()
"""Genes every other seed starts from."""

CMC = Genome.make(
    {"open": "plateau", "alloc": "leader_burst", "prune": "disagree", "stop": "momentum", "stop2": "none",
     "vote": "plurality"},
    {"n_init": (2, 8), "max_open": (4, 64), "widen": (1, 4), "trend": (0.04, 0.01), "burst": (1, 3),
     "patience": (3, 12), "keep": (2, 2), "warm_up": (2, 10), "threshold": (0.85, 0.97), "min_done": (2, 5),
     "alpha": (0.7, 0.3), "window": (2, 8), "slack": (0.04, 0.01), "cap": (64, 64)})
"""The paper's Confidence Momentum Controller, block for block (same answers and costs)."""

_SHORT_RACE = DEFAULT.with_blocks(open="refill", stop="beta", vote="short_weighted").with_knobs(
    n_init=(2, 4), max_open=(16, 64), threshold=(0.8, 0.95), min_done=(2, 3), warm_up=(0, 0), power=(2, 2))

SEEDS: dict[str, Genome] = {
    # a few branches race (refilled as they finish); each finished answer votes with weight
    # (shortest length / its length) ** 2, since shorter reasoning is more often right; stop on
    # the Beta-majority confidence of those weighted votes
    "short_race": _SHORT_RACE,
    # the same, with a bounded spend on hopeless questions: give up when answers stay scattered
    "short_race_capped": _SHORT_RACE.with_knobs(max_open=(12, 40), futile_after=(10, 20), futile_share=(0.3, 0.2)),
    # only answers not much longer than the median finished one vote; stop on a lead of `margin`
    "shorter_margin": DEFAULT.with_blocks(open="refill", stop="margin", vote="shorter").with_knobs(
        n_init=(2, 3), max_open=(32, 40), margin=(2, 4), min_done=(2, 3), warm_up=(0, 0), cap=(50, 50),
        cut=(1.0, 1.3)),
    "cmc": CMC,
    # the race widens while finished answers disagree
    "contest_race": DEFAULT.with_blocks(open="contest", stop="beta", vote="shorter").with_knobs(
        n_init=(2, 3), widen=(2, 4), max_open=(24, 48), threshold=(0.85, 0.95), min_done=(2, 3), warm_up=(0, 0),
        cut=(1.0, 1.3)),
    # ASC over branches read one at a time (a probe-by-probe read costs what a whole read costs)
    "sequential_beta": DEFAULT.with_blocks(open="refill", stop="beta").with_knobs(
        n_init=(1, 1), max_open=(16, 64), threshold=(0.85, 0.97), min_done=(2, 3), warm_up=(0, 0)),
    # ASC over branches read one at a time, each answer weighted by how short its reasoning is
    # (median length / length), and a branch abandoned once it is longer than the median
    # finished one (its vote would weigh little and its tokens are the most): shorter
    # reasoning is more often right, and long branches are where the tokens go
    "short_sequential": DEFAULT.with_blocks(open="refill", prune="overlong", stop="beta", vote="len_weighted")
    .with_knobs(n_init=(1, 1), max_open=(64, 64), keep=(0, 0), ratio=(1.0, 1.0), threshold=(0.5, 0.9),
                min_done=(2, 3), warm_up=(0, 0), power=(1, 1)),
    # a race that turns into a read: at low β three branches race (refilled, the leader's
    # branches get more intervals, never fewer than two running), which is what makes CMC's
    # cheapest points good; as β grows the race narrows to one branch read at a time, with
    # short_sequential's length-weighted votes and overlong pruning, where reading wins
    "race_then_read": DEFAULT.with_blocks(open="refill", alloc="leader_burst", prune="overlong", stop="beta",
                                          vote="len_weighted")
    .with_knobs(n_init=(3, 1), max_open=(4, 64), burst=(1, 3), keep=(2, 0), ratio=(1.0, 1.0),
                threshold=(0.7, 0.9), min_done=(2, 3), warm_up=(0, 0), power=(1, 1)),
    # finished votes plus settled intermediate answers of running branches
    "probe_mix": DEFAULT.with_blocks(open="refill", stop="probe_mix").with_knobs(
        n_init=(4, 8), max_open=(16, 64), threshold=(0.85, 0.97), min_done=(1, 3), warm_up=(0, 0),
        probe_weight=(0.5, 0.5), settle=(3, 3)),
}
"""Named starting points of the search (the explorer's generation 0)."""
