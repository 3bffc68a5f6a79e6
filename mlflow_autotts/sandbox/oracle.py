"""The batch-mode child's replay episodes: branches the candidate can use but not read.

A controller runs in the same interpreter as whatever holds the branches, and Python has
no private attributes, so an episode object holding the branches would hand them over
(``episode._final``). The branches therefore live only in the locals of a suspended
generator (``oracle``), reachable only through ``gi_frame``, frame objects or
``gc.get_referents``, all of which the audit hook denies. The candidate's episode
(``SandboxEpisode``) is a thin proxy that sends it ``protocol.Op`` codes.

The oracle binds every builtin it calls as a local before the candidate is imported,
checks that ops are exact ``int``, and never calls an object the candidate made, so
monkeypatching builtins or modules cannot run candidate code inside it. When an episode
ends it seals, with a keyed BLAKE2b MAC, the episode's sequence number, the number of
forbidden operations the audit hook has seen so far, and the per-branch step summary;
the key lives only in its frame. The parent recomputes costs from the summary
(``sandbox.cost``) and checks the seal.

The oracle bills with its own inlined copy of the billing rule (``replay.billing``): the
child imports as little as it can, and nothing in its loop may call out. ``tests/test_billing.py``
checks that it bills exactly as the rule.
"""

from __future__ import annotations

import array
import hashlib
import operator

from mlflow_autotts.controllers.base import EpisodeFacts
from mlflow_autotts.sandbox.protocol import EPISODE_ERROR_TEXT, Data, EpisodeError, Op, encode_action, signals_op

_PROBE_NEW, _READ_WHOLE, _SEAL = int(Op.PROBE_NEW), int(Op.READ_WHOLE), int(Op.SEAL)
_TOKENS, _OPENED, _INTERVALS, _SIGNALS = int(Op.TOKENS_USED), int(Op.BRANCHES_OPENED), int(Op.INTERVALS), int(Op.SIGNALS)
_NO_BRANCH, _NOT_OPEN, _BAD_OP, _TRACE_FULL = (int(EpisodeError.NO_BRANCH_LEFT), int(EpisodeError.NOT_OPEN),
                                              int(EpisodeError.BAD_OP), int(EpisodeError.TRACE_FULL))
_ACT_NEW, _ACT_MORE, _ACT_READ = encode_action(0, 0), encode_action(1, 0), encode_action(2, 0)
_ACT_STRIDE = encode_action(0, 1)


def resolve(datasets: list) -> list:
    """Per problem: (probe answers, offsets, probe counts, tokens, final answers, interval, signals)."""
    problems = []
    for ds in datasets:
        resolved = []
        for pr in ds:
            strings = pr[Data.STRINGS]
            offs = pr[Data.OFFSETS]
            resolved.append(([strings[j] for j in pr[Data.PROBE_IDS]], offs,
                             [offs[b + 1] - offs[b] for b in range(len(offs) - 1)], pr[Data.BRANCH_TOKENS],
                             [strings[j] for j in pr[Data.FINAL_IDS]], pr[Data.INTERVAL], pr.get(Data.SIGNALS) or None))
        problems.append(resolved)
    return problems


def oracle(datasets, orders, betas_n, seeds_n, key, trace_cap, viol,
           _type=type, _int=int, _len=len, _range=range, _array=array.array,
           _mac=hashlib.blake2b, _list=list, _dict=dict):
    """The replay episodes of the whole run, as one generator (see the module docstring).

    Ops sent in are ``protocol.Op`` codes (exact ints); errors come back as
    ``EpisodeError`` ints, answers as str or tuples. ``trace_cap`` (None: no trace) keeps
    every action of an episode, at most that many. Nothing in the loop calls code that
    controller code could have replaced.
    """
    problems = resolve(datasets)  # before any controller code runs
    del datasets
    full = trace_cap is not None
    seq = 0
    op = yield None
    for _b in _range(betas_n):
        for d in _range(_len(problems)):
            for s in _range(seeds_n):
                for probes, offs, nprobes, btok, finals, iv, sig in problems[d]:
                    order = orders[_len(btok)][s]
                    n = _len(order)
                    opened = []
                    taken = []
                    done = []
                    whole = []
                    log = []
                    tokens = 0
                    intervals = 0
                    while True:
                        if _type(op) is not _int:
                            out = _BAD_OP
                        elif full and _len(log) >= trace_cap and op != _SEAL:
                            out = _TRACE_FULL
                        elif op >= 0:  # probe_more(op)
                            if op < _len(opened):
                                b = opened[op]
                                if full:
                                    log.append(op * _ACT_STRIDE + _ACT_MORE)
                                if done[op]:
                                    out = (finals[b], True)
                                else:
                                    t = taken[op]
                                    intervals += 1
                                    if t < nprobes[b]:
                                        taken[op] = t + 1
                                        tokens += iv
                                        out = (probes[offs[b] + t], False)
                                    else:
                                        rest = btok[b] - iv * t
                                        if rest > 0:
                                            tokens += rest
                                        done[op] = True
                                        out = (finals[b], True)
                            else:
                                out = _NOT_OPEN
                        elif op == _PROBE_NEW:
                            k = _len(opened)
                            if k >= n:
                                out = _NO_BRANCH
                            else:
                                b = order[k]
                                opened.append(b)
                                whole.append(False)
                                intervals += 1
                                if full:
                                    log.append(k * _ACT_STRIDE + _ACT_NEW)
                                if nprobes[b] > 0:
                                    taken.append(1)
                                    done.append(False)
                                    tokens += iv
                                    out = (probes[offs[b]], k, False)
                                else:
                                    taken.append(0)
                                    done.append(True)
                                    if btok[b] > 0:
                                        tokens += btok[b]
                                    out = (finals[b], k, True)
                        elif op == _READ_WHOLE:
                            k = _len(opened)
                            if k >= n:
                                out = _NO_BRANCH
                            else:
                                b = order[k]
                                opened.append(b)
                                whole.append(True)
                                taken.append(nprobes[b])
                                done.append(True)
                                tokens += btok[b]
                                intervals += 1
                                if full:
                                    log.append(k * _ACT_STRIDE + _ACT_READ)
                                out = finals[b]
                        elif op == _TOKENS:
                            out = tokens
                        elif op == _OPENED:
                            out = _len(opened)
                        elif op == _INTERVALS:
                            out = intervals
                        elif op == _SEAL:
                            break
                        elif op <= _SIGNALS:
                            i = _SIGNALS - op
                            if sig is None:
                                out = _BAD_OP
                            elif i < _len(opened):
                                lo = offs[opened[i]]
                                hi = lo + taken[i]
                                out = _dict((name, vals[lo:hi]) for name, vals in sig.items())
                            else:
                                out = _NOT_OPEN
                        else:
                            out = _BAD_OP
                        op = yield out
                    if full:
                        summary = log
                    else:
                        summary = [0 if whole[k] else taken[k] + done[k] for k in _range(_len(opened))]
                    nviol = _len(viol)
                    msg = _array("q", [seq, nviol, _len(summary)] + summary).tobytes()
                    mac = _mac(msg, key=key, digest_size=16).hexdigest()
                    op = yield (seq, nviol, _list(summary), mac)
                    seq += 1
    while True:  # the schedule is over: every further op is an error
        op = yield _BAD_OP


def episode_error(code: int, i=None) -> ValueError:
    """The ``ValueError`` a replay episode raises for an ``EpisodeError`` code."""
    if code == _NOT_OPEN and i is not None:
        return ValueError(f"branch {i} is not open")
    return ValueError(EPISODE_ERROR_TEXT.get(code, "invalid episode operation"))


def branch_index(i) -> int:
    """``i`` as an exact non-negative int, or ValueError (as ``ReplayEpisode._check_open``)."""
    if isinstance(i, bool):
        raise ValueError("branch index must be an int, got bool")
    try:
        i = operator.index(i)
    except TypeError:
        raise ValueError(f"branch index must be an int, got {type(i).__name__}") from None
    i = int.__add__(0, i)
    if i < 0:
        raise ValueError(f"branch {i} is not open")
    return i


class SandboxEpisode(EpisodeFacts):
    """The episode a sandboxed controller sees (the controller API), forwarded to ``send``:
    the oracle in batch mode, the parent in session mode (``worker.SessionLink``)."""

    __slots__ = ("_send", "_signals")

    def __init__(self, send, question: str, n: int, interval: int, has_signals: bool):
        self._send = send
        self._question = question
        self._n = n
        self._interval = interval
        self._signals = has_signals

    @property
    def tokens_used(self) -> int:
        return self._send(_TOKENS)

    @property
    def branches_opened(self) -> int:
        return self._send(_OPENED)

    @property
    def intervals(self) -> int:
        return self._send(_INTERVALS)

    @property
    def signals(self):
        if not self._signals:
            raise AttributeError("this episode's data carries no per-interval signals")
        return self._branch_signals

    def _checked(self, op, i=None):
        out = self._send(op)
        if type(out) is int:
            raise episode_error(out, i)
        return out

    def _branch_signals(self, i):
        i = branch_index(i)
        return self._checked(signals_op(i), i)

    def probe_new(self):
        return self._checked(_PROBE_NEW)

    def probe_more(self, i):  # the hot path: inlined
        out = self._send(i if type(i) is int and i >= 0 else branch_index(i))
        if type(out) is int:
            raise episode_error(out, i)
        return out

    def get_new_branch_final_answer(self):
        return self._checked(_READ_WHOLE)
