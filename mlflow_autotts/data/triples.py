"""The published per-branch record ``[probe_answers, branch_tokens, final_answer]``, parsed once.

Its readers (trajectory files in ``data.json_io``, request rows in ``serving.payload``) differ
in what counts as a list or an integer, in the bound on token counts (``TripleRules``) and in
how a ``Fault`` is worded and reported; the checks themselves are here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from itertools import accumulate
from operator import iadd
from typing import Any, Callable, NamedTuple, Sequence

BRANCH_FIELDS = ("probe_answers", "branch_tokens", "final_answer")
MAX_INT = 2**63 - 1
"""Largest token count or interval a set may hold: the Parquet form stores them as int64."""
# Fault kinds: not 3 fields; probe_answers not a list; probe_answers[k] not a string;
# branch_tokens not an integer, below 0, past the bound; final_answer not a string.
SHAPE, PROBES, PROBE, TOKENS, NEGATIVE, TOO_LARGE, FINAL = (
    "shape", "probes", "probe", "tokens", "negative", "too large", "final")


class Fault(NamedTuple):
    """One thing wrong with a triple: its kind, the bad value (a token count as converted,
    unless ``TOKENS``) and, for ``PROBE``, the index of the bad answer."""

    what: str
    value: Any
    k: int | None = None


@dataclass(frozen=True)
class TripleRules:
    """What a reader accepts as a list and as an int (``integer``: the int, or None)."""

    is_list: Callable[[Any], bool]
    integer: Callable[[Any], int | None]
    max_tokens: int | None = None


Columns = tuple[list[str], list[int], list[int], list[str]]
"""Flat probe answers, per-branch offsets, token counts, final answers (as ``Branches``)."""


def parse_triple(branch: Any, rules: TripleRules) -> tuple[Sequence[str], int, str] | list[Fault]:
    """The triple's three values, or its faults: a bad shape alone, else every bad field."""
    if not rules.is_list(branch) or len(branch) != 3:
        return [Fault(SHAPE, branch)]
    probes, raw, final = branch
    faults = []
    if not rules.is_list(probes):
        faults.append(Fault(PROBES, probes))
    else:
        k = next((k for k, a in enumerate(probes) if type(a) is not str), None)
        if k is not None:
            faults.append(Fault(PROBE, probes[k], k))
    tokens = rules.integer(raw)
    if tokens is None:
        faults.append(Fault(TOKENS, raw))
    elif tokens < 0 or rules.max_tokens is not None and tokens > rules.max_tokens:
        faults.append(Fault(NEGATIVE if tokens < 0 else TOO_LARGE, tokens))
    if type(final) is not str:
        faults.append(Fault(FINAL, final))
    return faults or (probes, tokens, final)


def parse_triples(triples: Sequence[Any], rules: TripleRules, on_fault: Callable[[int, list[Fault]], None]) -> Columns:
    """The columns of a branch list; ``on_fault(b, faults)`` hears each bad branch (it may
    raise), and the columns are then not to be used."""
    fast = _fast_columns(triples, rules.max_tokens)
    if fast is not None:
        return fast
    flat: list[str] = []
    offsets, tokens, finals = [0], [], []
    for b, branch in enumerate(triples):
        parsed = parse_triple(branch, rules)
        if type(parsed) is list:
            on_fault(b, parsed)
            continue
        flat.extend(parsed[0])
        offsets.append(len(flat))
        tokens.append(parsed[1])
        finals.append(parsed[2])
    return flat, offsets, tokens, finals


def _fast_columns(triples: Any, max_tokens: int | None) -> Columns | None:
    """The columns in a few C-speed passes when well formed (lists of str/int, as JSON gives
    them); None sends anything else to the checking loop, which names the problem."""
    if type(triples) is not list or not triples or set(map(type, triples)) != {list} or set(map(len, triples)) != {3}:
        return None
    probes, tokens, finals = zip(*triples)
    if (set(map(type, probes)) != {list} or not set(map(type, tokens)) <= {int} or min(tokens) < 0
            or max_tokens is not None and max(tokens) > max_tokens):
        return None
    flat = reduce(iadd, probes, [])  # list.extend per branch: twice as fast as chain.from_iterable
    try:  # str.join is the cheapest "all strings" check there is
        "".join(flat)
        "".join(finals)
    except TypeError:
        return None
    return flat, [0, *accumulate(map(len, probes))], list(tokens), list(finals)
