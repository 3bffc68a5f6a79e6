"""Genome -> readable Python source of a controller.

The source holds only the blocks the genome chose (no interpreter, no dormant options),
so an evolved controller is read, checked, logged and served exactly like one an LLM or
a person wrote. Rendering is deterministic: the same genome always gives the same bytes.

The rendered program is written here as templates of whole blocks, top down: the module,
the controller class, its ``solve`` method, then the building blocks of each slot. A line
that is only ``$name`` is a slot filled with a building block's lines (or dropped when the
genome chose none); a ``$name`` inside a line is a word.
"""

from __future__ import annotations

import functools
import re
import textwrap
from dataclasses import dataclass
from string import Template

from mlflow_autotts.controllers.base import MAX_BRANCHES
from mlflow_autotts.search.genome import KNOBS, SLOTS, Genome, slope

MAX_ROUNDS = 8192
"""Rounds a rendered controller may take: enough for 64 branches read one after another
(a branch is at most ~70 intervals on the published data), so only the knobs end a
sequential read."""

Lines = list[str]
Fill = str | Lines

_SLOT_LINE = re.compile(r"^( *)\$(\w+)$")


@functools.cache
def _template_lines(template: str) -> tuple[str, ...]:
    """A template's lines without the quotes' own (read once: templates are constants)."""
    return tuple(textwrap.dedent(template).split("\n")[1:-1])


def block(template: str, **fill: Fill) -> Lines:
    """The template's lines with its slots filled, so each template reads as the code it writes.

    A line that is only ``$name`` with ``name`` given as lines becomes those lines at that
    line's indent (nothing when empty); other ``$name`` are replaced by their string.
    """
    words = {k: v for k, v in fill.items() if isinstance(v, str)}
    out: Lines = []
    for line in _template_lines(template):
        slot = _SLOT_LINE.match(line)
        if slot and isinstance(fill.get(slot[2]), list):
            out += [slot[1] + s if s.strip() else s for s in fill[slot[2]]]
        else:
            out.append(Template(line).substitute(words) if "$" in line else line)
    return out


def each_followed_by(blocks: list[Lines], gap: int) -> Lines:
    """The non-empty blocks, each followed by ``gap`` blank lines (definitions apart)."""
    return [line for b in blocks if b for line in [*b, *[""] * gap]]


# ------------------------------------------------------------------------- knobs
def class_name(genome: Genome) -> str:
    return f"Evolved{genome.key()[:8]}"


def _num(x: float) -> str:
    x = round(float(x), 6)
    return str(int(x)) if x == int(x) else repr(x)


def knob_expression(genome: Genome, name: str) -> str:
    """The knob as a Python expression of ``b`` (β), e.g. ``round(2 + 6 * b)``."""
    spec = KNOBS[name]
    lo, hi = genome.line(name)
    s = slope(lo, hi)
    if s == 0:
        return _num(round(lo) if spec.integer else round(lo, 4))
    line = f"{_num(lo)} {'+' if s > 0 else '-'} {_num(abs(s))} * b"
    return f"round({line})" if spec.integer else f"round({line}, 4)"


def _docstring(g: Genome) -> str:
    lines = ["Evolved controller (offline `evolve` explorer). Blocks:", ""]
    for slot, opt in g.blocks:
        lines.append(f"- {slot}: {opt} -- {SLOTS[slot][opt]}")
    lines += ["", "Knobs, straight lines in b = beta (higher beta spends more):", ""]
    for name in g.used_knobs():
        lines.append(f"- {name} = {knob_expression(g, name)}: {KNOBS[name].doc}")
    wrapped = []
    for ln in lines:
        wrapped.extend(textwrap.wrap(ln, 92, subsequent_indent="  ") or [""])
    return "\n".join(wrapped)


# ------------------------------------------------------------------------- shape
@dataclass(frozen=True)
class Shape:
    """The genome's choices as the templates read them: one option per slot, the used knobs,
    and the optional pieces those choices switch on."""

    genome: Genome
    open: str
    alloc: str
    prune: str
    stop: str
    stop2: str
    vote: str
    knobs: tuple[str, ...]

    @classmethod
    def of(cls, g: Genome) -> "Shape":
        return cls(g, *(g.block(s) for s in ("open", "alloc", "prune", "stop", "stop2", "vote")),
                   tuple(g.used_knobs()))

    @property
    def warmed(self) -> bool:
        """Pruning, bursts and stopping wait for ``warm_up`` rounds (else every round is warm)."""
        return "warm_up" in self.knobs

    @property
    def warm(self) -> str:
        return "warm and " if self.warmed else ""

    @property
    def counted(self) -> bool:
        """Votes are recounted from the finished lengths (any vote but plain plurality)."""
        return self.vote != "plurality"

    @property
    def tally(self) -> str:
        """The tally that decisions (stop, give up, widen) look at."""
        return "votes" if self.counted else "pool"

    @property
    def momentum(self) -> bool:
        return self.stop == "momentum" or self.open == "plateau"

    @property
    def disagree(self) -> bool:
        return self.prune in ("disagree", "disagree_overlong")

    @property
    def overlong(self) -> bool:
        return self.prune in ("overlong", "disagree_overlong")

    @property
    def lengths(self) -> bool:
        """Finished branches' lengths are kept (a length-aware vote or overlong pruning)."""
        return self.vote in ("short_weighted", "shorter", "len_weighted") or self.overlong

    @property
    def needs_winner(self) -> bool:
        return self.disagree or self.alloc == "leader_burst"

    @property
    def settles(self) -> bool:
        """Running branches' settled intermediate answers vote too."""
        return self.stop == "probe_mix"


# ------------------------------------------------------------------------ module
_MODULE = '''
"""$cls: a controller written by the offline evolve explorer (genome $key)."""

from __future__ import annotations

from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.controllers.voting import $imports

MAX_ROUNDS = $max_rounds
MAX_BRANCHES = $max_branches


$helpers
$controller
'''


def render(genome: Genome) -> str:
    """Complete module source defining one ``Controller`` subclass for ``genome``."""
    p = Shape.of(genome)
    return "\n".join(block(
        _MODULE, cls=class_name(genome), key=genome.key(), imports=", ".join(_imports(p)),
        max_rounds=str(MAX_ROUNDS), max_branches=str(MAX_BRANCHES),
        helpers=each_followed_by(_module_helpers(p), 2), controller=_controller(p))) + "\n"


def _imports(p: Shape) -> list[str]:
    """Only the voting helpers the chosen blocks call (an unused import would be a lint error)."""
    names = ["Tally"]
    if p.vote == "len_weighted":
        names.append("beta_confidence_of_weights")
    if p.settles or p.vote == "short_weighted":
        names.append("beta_confidence")
    return [*names, "plurality"]


_WEIGHTED_VOTES = '''
class WeightedVotes:
    """Finished answers, each counting (shortest length / its length) ** power."""

    def __init__(self, lengths: list[tuple[str, int]], power: float):
        score: dict[str, float] = {}
        if lengths:
            shortest = min(n for _, n in lengths)
            for answer, n in lengths:
                score[answer] = score.get(answer, 0.0) + (shortest / n) ** power
        ranked = sorted(score.values(), reverse=True) + [0.0, 0.0]
        self.counts = score
        self.winner = max(score, key=score.__getitem__) if score else None
        self.top1, self.top2 = ranked[0], ranked[1]
        self.n = sum(score.values())  # total weight

    def confidence(self) -> float:
        """Beta-majority confidence of the weighted counts, rounded to whole votes."""
        return beta_confidence(round(self.top1), round(self.top2))
'''

_MEDIAN_LENGTH = '''
def median_length(lengths: list[tuple[str, int]]) -> float:
    """Median length, in intervals, of the finished branches in `lengths`."""
    ordered = sorted(n for _, n in lengths)
    return (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
'''

_LENGTH_WEIGHTED_VOTES = '''
class LengthWeightedVotes:
    """Finished answers, each counting (median length / its length) ** power, rescaled so the
    weights sum to the number of answers: shorter reasoning counts more, the total stays a count."""

    def __init__(self, lengths: list[tuple[str, int]], power: float):
        score: dict[str, float] = {}
        if lengths:
            median = median_length(lengths)
            for answer, n in lengths:
                score[answer] = score.get(answer, 0.0) + (median / n) ** power
            scale = len(lengths) / sum(score.values())
            score = {answer: s * scale for answer, s in score.items()}
        ranked = sorted(score.values(), reverse=True) + [0.0, 0.0]
        self.counts = score
        self.winner = max(score, key=score.__getitem__) if score else None
        self.top1, self.top2 = ranked[0], ranked[1]
        self.n = len(lengths)

    def confidence(self) -> float:
        """Beta-majority confidence of the weighted counts (interpolated between whole counts)."""
        return beta_confidence_of_weights(self.top1, self.top2)
'''


def _module_helpers(p: Shape) -> list[Lines]:
    """Module-level helpers the chosen vote and prune options call (none for the defaults)."""
    return [block(_WEIGHTED_VOTES) if p.vote == "short_weighted" else [],
            block(_MEDIAN_LENGTH) if p.vote in ("len_weighted", "shorter") or p.overlong else [],
            block(_LENGTH_WEIGHTED_VOTES) if p.vote == "len_weighted" else []]


# ---------------------------------------------------------------------- controller
_CONTROLLER = '''
class $cls(Controller):
    $docstring
    """

    name = "evolved_$short"

    def __init__(self, beta: float = 0.5):
        super().__init__(beta)
        b = self.beta
        $knob_lines

    def knobs(self) -> dict:
        """The knob values at this β (for traces and logs)."""
        return {
            $knob_items
        }

    $solve
'''


def _controller(p: Shape) -> Lines:
    """The class: its docstring lists the blocks, ``__init__`` turns each used knob's line into a value."""
    g = p.genome
    doc = ('"""' + _docstring(g)).split("\n")
    return block(_CONTROLLER, cls=class_name(g), short=g.key()[:8], docstring=doc,
                 knob_lines=[f"self.{n} = {knob_expression(g, n)}" for n in p.knobs],
                 knob_items=[f'"{n}": self.{n},' for n in p.knobs], solve=_solve(p))


# -------------------------------------------------------------------------- solve
_SOLVE = '''
def solve(self, episode) -> str | None:  # noqa: C901  (one algorithm, kept in one place)
    $knob_locals
    probe_new, probe_more = episode.probe_new, episode.probe_more
    index: list[int] = []  # episode index of each opened branch
    latest: list[str] = []  # its latest answer (intermediate, or final once finished)
    dropped: list[bool] = []  # pruned
    alive: list[int] = []  # branches neither finished nor dropped, in opening order
    probes: list[int] = []  # intervals taken since opening
    $branch_state
    pool = Tally()  # final answers of finished branches
    $lengths_state

    $inner_functions
    $opening
    if not index:
        return None
    $momentum_state
    for r in range(MAX_ROUNDS):
        $recount_before
        $winner
        $momentum_before
        $warm
        live = list(alive)
        $prune
        $alloc
        $recount_after
        $momentum_after
        $stop
        $stop2
        $cap
        $give_up
        $widen
    return final()
'''


def _solve(p: Shape) -> Lines:
    """The round-based skeleton with the chosen blocks in its slots."""
    return block(_SOLVE, **_before_rounds(p), **_round(p))


def _before_rounds(p: Shape) -> dict[str, Fill]:
    """What ``solve`` declares, defines and opens before its first round."""
    return {"knob_locals": [f"{n} = self.{n}" for n in p.knobs],
            "branch_state": [f"{n}: list[int] = []  # {doc}" for n, (doc, _) in _branch_state(p).items()],
            "lengths_state": [_LENGTHS] if p.lengths else [],
            "inner_functions": each_followed_by(_inner_functions(p), 1),
            "opening": _opening(p),
            "momentum_state": block(_MOMENTUM_STATE) if p.momentum else []}


def _round(p: Shape) -> dict[str, Fill]:
    """One round's pieces, in the order ``_SOLVE`` runs them."""
    recount = ["votes = counted()"] if p.counted else []
    return {"recount_before": recount if p.needs_winner or p.momentum else [],
            "winner": _winner(p),
            "momentum_before": block(_MOMENTUM_BEFORE, tally=p.tally) if p.momentum else [],
            "warm": ["warm = r >= warm_up"] if p.warmed else [],
            "prune": _prune(p), "alloc": _alloc(p),
            "recount_after": recount,
            "momentum_after": block(_MOMENTUM_AFTER, tally=p.tally) if p.momentum else [],
            "stop": _stop(p), "stop2": _stop2(p), "cap": _cap(p), "give_up": _give_up(p), "widen": _widen(p)}


_LENGTHS = "lengths: list[tuple[str, int]] = []  # (final answer, intervals) in finishing order"

_EXTRA_STATE: dict[str, tuple[str, str]] = {
    "disagree": ("consecutive rounds disagreeing with the leader", "0"),
    "settled": ("consecutive equal intermediate answers", "1"),
}
"""Per-branch lists some options keep: name -> (what it counts, value at opening)."""


def _branch_state(p: Shape) -> dict[str, tuple[str, str]]:
    """The per-branch lists beyond the skeleton's (declared, and grown as branches open)."""
    on = {"disagree": p.disagree, "settled": p.settles}
    return {n: state for n, state in _EXTRA_STATE.items() if on[n]}


# ----------------------------------------------------------------- inner functions
_FINISH = '''
def finish(k: int, answer: str) -> None:
    alive.remove(k)
    pool.add(answer)
    $record_length
'''

_OPEN_BRANCHES = '''
def open_branches(count: int, limit: int) -> None:
    for _ in range(count):
        if len(index) >= limit:
            return
        try:
            answer, i, done = probe_new()
        except ValueError:  # no unopened branch left
            return
        index.append(i)
        latest.append(answer)
        dropped.append(False)
        alive.append(len(index) - 1)
        probes.append(0)
        $branch_state
        if done:
            finish(len(index) - 1, answer)
'''

_FINAL = '''
def final() -> str | None:
    if pool.n:
        $pick
    return plurality([latest[k] for k in range(len(index)) if not dropped[k]])
'''

_CONFIDENCE = '''
def confidence(votes: Tally) -> float:
    """Beta confidence of the votes plus weighted settled intermediate answers."""
    score: dict[str, float] = dict(votes.counts)
    for k in alive:
        if settled[k] >= settle and latest[k] != "ERR":
            score[latest[k]] = score.get(latest[k], 0.0) + probe_weight
    top = sorted(score.values(), reverse=True) + [0.0, 0.0]
    return beta_confidence(int(top[0]), int(top[1]))
'''


def _inner_functions(p: Shape) -> list[Lines]:
    """The closures ``solve`` defines before its first round, in order."""
    appends = [f"{n}.append({start})" for n, (_, start) in _branch_state(p).items()]
    return [block(_FINISH, record_length=["lengths.append((answer, probes[k] + 1))"] if p.lengths else []),
            block(_OPEN_BRANCHES, branch_state=appends),
            *_vote_functions(p),
            block(_CONFIDENCE) if p.settles else []]


# --------------------------------------------------------------------------- vote
_RECOUNT = "recount: list = [-1, None]  # (finished count, votes) at the last recount"

_COUNTED: dict[str, str] = {
    "shorter": '''
def counted() -> Tally:
    """The votes: finished answers at most `cut` times the median finished length (and the shortest)."""
    if recount[0] != pool.n:  # recount only when a branch has finished since
        limit = max(cut * median_length(lengths), min(n for _, n in lengths)) if lengths else 0
        recount[:] = [pool.n, Tally(answer for answer, n in lengths if n <= limit)]
    return recount[1]
''',
    "len_weighted": '''
def counted() -> LengthWeightedVotes:
    """The length-weighted votes of the finished answers."""
    if recount[0] != pool.n:  # recount only when a branch has finished since
        recount[:] = [pool.n, LengthWeightedVotes(lengths, power)]
    return recount[1]
''',
    "short_weighted": '''
def counted() -> WeightedVotes:
    """The length-weighted votes of the finished answers."""
    if recount[0] != pool.n:  # recount only when a branch has finished since
        recount[:] = [pool.n, WeightedVotes(lengths, power)]
    return recount[1]
''',
}
"""How each vote option other than plurality counts the finished answers (cached per finish)."""

_LEADER = '''
def leader() -> str | None:
    """$doc"""
    return $winner
'''


def _vote_functions(p: Shape) -> list[Lines]:
    """Counting (if the vote is not a plain plurality), the leader, and the final answer."""
    if not p.counted:
        return [block(_LEADER, doc="Plurality of the finished answers.", winner="pool.winner"),
                block(_FINAL, pick=["return leader()"])]
    return [[_RECOUNT], block(_COUNTED[p.vote]),
            block(_LEADER, doc="Winner of the counted votes.", winner="counted().winner"),
            block(_FINAL, pick=["winner = leader()", "return pool.winner if winner is None else winner"])]


def _winner(p: Shape) -> Lines:
    """The leader at the round's start, for options that favour or prune against it."""
    if not p.needs_winner:
        return []
    return [f"winner = {'votes.winner' if p.counted else 'leader()'}"]


# ------------------------------------------------------------------------ momentum
_MOMENTUM_STATE = '''
ema = 0.0  # momentum: EMA of the votes' Beta confidence
history: list[float] = []  # its last `window` values
'''

_MOMENTUM_BEFORE = '''
ema = (1.0 - alpha) * ema + alpha * $tally.confidence()
history.append(ema)
if len(history) > window:
    history.pop(0)
'''

_MOMENTUM_AFTER = '''
ema = (1.0 - alpha) * ema + alpha * $tally.confidence()
history[-1] = ema
delta = history[-1] - history[0] if len(history) >= 2 else 0.0
'''


# --------------------------------------------------------------------------- open
_OPEN_AT_MOST = '''
max_open = min(max(n_init, max_open), MAX_BRANCHES)
open_branches(n_init, max_open)
'''

_OPEN_PLATEAU = '''
open_branches(n_init, n_init)
max_open = min(max_open, MAX_BRANCHES)
widen_from = $widen_from
'''

_WIDEN: dict[str, str] = {
    "fixed": '''
if not alive:
    break
''',
    "plateau": '''
if not alive:
    break
if len(index) < max_open and delta <= trend and r >= widen_from and ema < threshold:
    open_branches(widen, max_open)
''',
    "refill": '''
running = len(alive)
if running < n_init:  # keep n_init branches running
    open_branches(n_init - running, max_open)
if not alive:
    break
''',
    "contest": '''
running = len(alive)
width = n_init + widen * (pool.n - pool.top1)  # wider race while answers disagree
if running < width:
    open_branches(width - running, max_open)
if not alive:
    break
''',
    "schedule": '''
running = len(alive)
if running == 0 or (r + 1) % every == 0:  # scheduled widening
    open_branches(widen, max_open)
if not alive:
    break
''',
}
"""The end of a round, per open option: open more branches, or end once none is running."""


def _opening(p: Shape) -> Lines:
    """The first branches; options that widen later also bound how many may ever open."""
    if p.open == "fixed":
        return ["open_branches(n_init, n_init)"]
    if p.open == "plateau":
        return block(_OPEN_PLATEAU, widen_from="max(1, warm_up // 2)" if p.warmed else "1")
    return block(_OPEN_AT_MOST)


def _widen(p: Shape) -> Lines:
    """The end of a round (see ``_WIDEN``)."""
    return block(_WIDEN[p.open])


# -------------------------------------------------------------------------- prune
_PRUNE_DISAGREE = '''
if ${warm}winner is not None:  # prune branches that keep disagreeing
    for k in live:
        disagree[k] = disagree[k] + 1 if latest[k] != winner else 0
    stale = [k for k in live if disagree[k] >= patience]
    if stale:
        stale.sort(key=lambda k: -disagree[k])
        $drop
'''

_PRUNE_OVERLONG = '''
if len(lengths) >= 2:  # prune running branches far longer than the median finished one
    limit = ratio * median_length(lengths)
    overlong = [k for k in live if probes[k] + 1 > limit]
    if overlong:
        overlong.sort(key=lambda k: -probes[k])
        $drop
'''

_DROP = '''
for k in $chosen[: max(0, len(live) - keep)]:
    dropped[k] = True
live = [k for k in live if not dropped[k]]
alive[:] = live  # live was alive's copy; both in opening order
'''
"""The end of a prune rule: mark the chosen branches dropped, then refilter ``live`` and make
it ``alive`` (``live`` was ``alive``'s copy; both stay in opening order)."""


def _prune(p: Shape) -> Lines:
    """Disagreeing branches first, then overlong ones (``disagree_overlong`` runs both)."""
    lines: Lines = []
    if p.disagree:
        lines += block(_PRUNE_DISAGREE, warm=p.warm, drop=block(_DROP, chosen="stale"))
    if p.overlong:
        lines += block(_PRUNE_OVERLONG, drop=block(_DROP, chosen="overlong"))
    return lines


# -------------------------------------------------------------------------- alloc
_ALLOC: dict[str, str] = {
    "round_robin": '''
for k in live:  # one interval each
    answer, done = probe_more(index[k])
    probes[k] += 1
    $settle
    latest[k] = answer
    if done:
        finish(k, answer)
''',
    "leader_burst": '''
live.sort(key=lambda k: -probes[k])  # most-probed first
for k in live:
    steps = burst if ${warm}winner is not None and latest[k] == winner else 1
    for _ in range(steps):
        answer, done = probe_more(index[k])
        probes[k] += 1
        $settle
        latest[k] = answer
        if done:
            finish(k, answer)
            break
''',
}
"""How the round's intervals are shared among the running branches, per alloc option."""


def _alloc(p: Shape) -> Lines:
    """Probe the running branches (``probe_mix`` also counts how long each answer has settled)."""
    settle = ["settled[k] = settled[k] + 1 if answer == latest[k] else 1"] if p.settles else []
    return block(_ALLOC[p.alloc], warm=p.warm, settle=settle)


# --------------------------------------------------------------------------- stop
_STOP_TEST: dict[str, str] = {
    "beta": "$tally.confidence() >= threshold",
    "momentum": "ema >= threshold and delta >= -slack",
    "margin": "$tally.top1 - $tally.top2 >= margin",
    "probe_mix": "confidence($tally) >= threshold",
}
"""The confidence test of each stop option (and of ``stop2``'s margin and beta)."""


def _return_final_if(condition: str, comment: str = "") -> Lines:
    return [f"if {condition}:{comment}", "    return final()"]


def _stop_rule(p: Shape, rule: str, comment: str = "") -> Lines:
    test = Template(_STOP_TEST[rule]).substitute(tally=p.tally)
    return _return_final_if(f"{p.warm}pool.n >= min_done and {test}", comment)


def _stop(p: Shape) -> Lines:
    """The first stopping rule: enough finished answers and the option's confidence test."""
    return _stop_rule(p, p.stop)


def _stop2(p: Shape) -> Lines:
    """A second stopping rule, OR-ed with the first (none when it repeats the first)."""
    if p.stop2 in ("none", p.stop):
        return []
    if p.stop2 == "unanimous":
        return _return_final_if("pool.n >= agree and pool.top1 == pool.n", "  # second rule: unanimous")
    return _stop_rule(p, p.stop2, "  # second rule")


def _cap(p: Shape) -> Lines:
    """A budget cap, written only when its knob can end a question (see ``Genome.switched_off``)."""
    if "cap" not in p.knobs:
        return []
    return _return_final_if("pool.n >= cap", "  # budget cap: enough finished answers, however split")


def _give_up(p: Shape) -> Lines:
    """Giving up on scattered answers, written only when its knobs can end a question."""
    if "futile_after" not in p.knobs:
        return []
    return _return_final_if("pool.n >= futile_after and pool.top1 < futile_share * pool.n",
                            "  # scattered: give up")
