"""The replay episode: one question's pre-collected branches behind the controller API.

Costs follow the published evaluator exactly, by the one billing rule of
``replay.billing``: a probe step reveals the next intermediate answer and costs one
interval; once a branch's probes are used up, the next step reveals the final answer and
brings the branch to its whole length; reading a branch whole costs its full length.
Branches are opened in a fixed order (the shuffle of the run).

The episode holds only the branches, never the gold answer, and keeps its counters in
private slots exposed through read-only properties, so a controller cannot lower its own
bill by assignment.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any, Sequence

from mlflow_autotts.controllers.base import EpisodeFacts, open_branch
from mlflow_autotts.data.trajectory import Branches
from mlflow_autotts.replay.billing import branch_intervals, branch_tokens

Action = tuple[str, int]
"""One recorded action: (``"probe_new"`` | ``"probe_more"`` | ``"read"``, branch index)."""


@lru_cache(maxsize=4096)
def shuffle_order(n_branches: int, seed: int) -> tuple[int, ...]:
    """The branch visiting order of run ``seed``: ``random.Random(seed).shuffle``.

    ``shuffle`` only depends on the list's length, so shuffling indices gives the same
    permutation the reference evaluator applies to its branch objects.
    """
    order = list(range(n_branches))
    random.Random(seed).shuffle(order)
    return tuple(order)


class ReplayEpisode(EpisodeFacts):
    """One question replayed from its branches in a given order.

    Branch indices seen by the controller are positions in the opening order (0 for the
    first branch opened, 1 for the next, …), as in the published environment.

    The hot path (``probe_more`` on an unfinished branch) only moves a cursor; tokens and
    intervals are derived from the cursors when asked for, which is what keeps a replay
    step near the cost of a list lookup.
    """

    __slots__ = (
        "_order", "_probes", "_offsets", "_nprobes", "_btok",
        "_final", "_signals", "_opened", "_pos", "_end", "_read",
    )

    def __init__(self, branches: Branches, order: Sequence[int] | None = None):
        self._question = branches.question
        self._interval = branches.interval_tokens
        self._order = tuple(range(branches.n_branches)) if order is None else tuple(order)
        self._n = len(self._order)
        self._probes = branches.probe_answers
        self._offsets = branches.probe_offsets
        self._nprobes = branches.n_probes
        self._btok = branches.branch_tokens
        self._final = branches.final_answers
        self._signals = branches.signals
        self._opened = 0
        # Per opened branch: a cursor into the flat probe list and the end of its probes.
        # pos < end: probes remain; pos == end: the next step is the finishing one;
        # pos == end + 1: finished.
        self._pos: list[int] = []
        self._end: list[int] = []
        self._read: set[int] = set()  # branches read whole (charged their full length)

    # ----------------------------------------------------------------- read-only facts
    @property
    def branches_opened(self) -> int:
        return self._opened

    @property
    def tokens_used(self) -> int:
        """Tokens charged so far, by the billing rule (``replay.billing``)."""
        total = 0
        interval, offsets, btok, order, read = self._interval, self._offsets, self._btok, self._order, self._read
        for i, (pos, end) in enumerate(zip(self._pos, self._end)):
            b = order[i]
            lo = offsets[b]
            total += branch_tokens(interval, end - lo, btok[b], pos - lo, i in read)
        return total

    @property
    def intervals(self) -> int:
        """Steps taken: probe steps, finishing steps and whole reads (``replay.billing``)."""
        total = 0
        offsets, order, read = self._offsets, self._order, self._read
        for i, pos in enumerate(self._pos):
            total += branch_intervals(pos - offsets[order[i]], i in read)
        return total

    @property
    def signals(self):
        """``signals(i)``: per-interval signals of branch ``i`` so far (absent without data)."""
        if not self._signals:
            raise AttributeError("this episode's data carries no per-interval signals")
        return self._branch_signals

    def _branch_signals(self, i: int) -> dict[str, list[float]]:
        i = self._check_open(i)
        lo = self._offsets[self._order[i]]
        hi = min(self._pos[i], self._end[i])
        return {k: list(v[lo:hi]) for k, v in self._signals.items()}

    def _check_open(self, i: Any) -> int:
        """``i`` as a plain int if it names an open branch, else ``ValueError``."""
        return open_branch(i, self._opened)

    # ----------------------------------------------------------------------- actions
    def probe_new(self) -> tuple[str, int, bool]:
        """Open the next branch and advance it one interval."""
        i = self._opened
        if i >= self._n:
            raise ValueError("no unopened branch left")
        b = self._order[i]
        self._opened = i + 1
        self._pos.append(self._offsets[b])
        self._end.append(self._offsets[b + 1])
        answer, finished = self.probe_more(i)
        return answer, i, finished

    def probe_more(self, i: int) -> tuple[str, bool]:
        """Advance branch ``i`` one interval; a finished branch answers again for free."""
        if type(i) is not int or not 0 <= i < self._opened:
            i = self._check_open(i)
        pos = self._pos[i]
        if pos < self._end[i]:
            self._pos[i] = pos + 1
            return self._probes[pos], False
        if pos == self._end[i]:  # the finishing step reveals the final answer
            self._pos[i] = pos + 1
        return self._final[self._order[i]], True

    def get_new_branch_final_answer(self) -> str:
        """Open the next branch and read it whole."""
        i = self._opened
        if i >= self._n:
            raise ValueError("no unopened branch left")
        b = self._order[i]
        self._opened = i + 1
        self._pos.append(self._offsets[b + 1] + 1)
        self._end.append(self._offsets[b + 1])
        self._read.add(i)
        return self._final[b]


class RecordingEpisode(ReplayEpisode):
    """A replay episode that also keeps the list of actions taken, for traces and audits."""

    __slots__ = ("actions",)

    def __init__(self, branches: Branches, order: Sequence[int] | None = None):
        super().__init__(branches, order)
        self.actions: list[Action] = []

    def probe_new(self) -> tuple[str, int, bool]:
        i = self._opened
        if i >= self._n:
            raise ValueError("no unopened branch left")
        self.actions.append(("probe_new", i))
        b = self._order[i]
        self._opened = i + 1
        self._pos.append(self._offsets[b])
        self._end.append(self._offsets[b + 1])
        answer, finished = ReplayEpisode.probe_more(self, i)
        return answer, i, finished

    def probe_more(self, i: int) -> tuple[str, bool]:
        result = super().probe_more(i)
        self.actions.append(("probe_more", i))
        return result

    def get_new_branch_final_answer(self) -> str:
        answer = super().get_new_branch_final_answer()
        self.actions.append(("read", self._opened - 1))
        return answer


def replay_cost(branches: Branches, order: Sequence[int], actions: Sequence[Action]) -> tuple[int, int, int]:
    """Recompute (tokens, branches opened, intervals) from an action log.

    The trusted side of the sandbox uses this: a candidate reports what it did, never
    what it cost. Raises ``ValueError`` on an impossible log.
    """
    ep = ReplayEpisode(branches, order)
    for kind, i in actions:
        if kind == "probe_new":
            if i != ep.branches_opened:
                raise ValueError(f"probe_new opened branch {i}, expected {ep.branches_opened}")
            ep.probe_new()
        elif kind == "probe_more":
            ep.probe_more(int(i))
        elif kind == "read":
            if i != ep.branches_opened:
                raise ValueError(f"read opened branch {i}, expected {ep.branches_opened}")
            ep.get_new_branch_final_answer()
        else:
            raise ValueError(f"unknown action {kind!r}")
    return ep.tokens_used, ep.branches_opened, ep.intervals
