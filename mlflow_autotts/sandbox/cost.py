"""The trusted side's cost rules for sandboxed episodes: tokens from a per-branch step summary.

A batch-mode child reports, per episode, only how many charged steps each opened branch
took (sealed by its oracle); this module turns that into tokens, branches opened and
intervals with the replay rules, and tells whether an answer was revealed by those steps.
Costs are per branch and independent of the order of actions, so the summary fixes them
(``summary_cost`` equals ``replay.episode.replay_cost`` on any action log with that summary).

``revealing_cost`` inlines the billing rule of ``replay.billing`` on purpose (it runs once per
episode of every candidate, and also tells whether an answer was revealed), as the child's
oracle does; ``tests/test_billing.py`` checks both bill exactly as the rule.
"""

from __future__ import annotations

from typing import Any, Sequence

from mlflow_autotts.data.trajectory import Branches
from mlflow_autotts.replay.episode import Action, RecordingEpisode
from mlflow_autotts.sandbox.protocol import decode_action


def summary_cost(branches: Branches, order: Sequence[int], summary: Sequence[int]) -> tuple[int, int, int]:
    """(tokens, branches opened, intervals) of an episode from its per-branch step summary.

    ``summary[k]`` describes the k-th branch opened: 0 if it was read whole, else the number
    of charged steps (1..n_probes + 1; the last one reveals the final answer). O(branches
    opened). Raises ``ValueError`` on an impossible summary.
    """
    tokens, intervals, _ = revealing_cost(branches.n_probes, branches.branch_tokens, branches.interval_tokens,
                                          None, None, None, order, summary, None)
    return tokens, len(summary), intervals


def revealing_cost(nprobes, btok, iv, probes, offs, finals, order, summary, answer) -> tuple[int, int, bool]:
    """(tokens, intervals, whether ``answer`` was revealed) of a summary; True when
    ``answer`` is None. The branch tables are passed apart for speed (the parent calls this
    once per episode of every candidate)."""
    if len(summary) > len(order):
        raise ValueError(f"{len(summary)} branches opened, only {len(order)} exist")
    tokens = intervals = 0
    revealed = answer is None
    for k, s in enumerate(summary):
        if type(s) is not int:
            raise ValueError(f"step count of branch {k} is not an int")
        b = order[k]
        npb = nprobes[b]
        if s == 0:
            tokens += btok[b]
            intervals += 1
            if not revealed and finals[b] == answer:
                revealed = True
            continue
        if not 1 <= s <= npb + 1:
            raise ValueError(f"branch {k}: {s} steps, at most {npb + 1} possible")
        intervals += s
        if s > npb:
            tokens += iv * npb
            rest = btok[b] - iv * npb
            if rest > 0:
                tokens += rest
            if not revealed and finals[b] == answer:
                revealed = True
            s = npb
        else:
            tokens += iv * s
        if not revealed and s:
            lo = offs[b]
            if answer in probes[lo:lo + s]:
                revealed = True
    return tokens, intervals, revealed


def summary_from_actions(branches: Branches, order: Sequence[int], actions: Sequence[Action]) -> list[int]:
    """The step summary of an action log (free ``probe_more`` calls on finished branches
    count nothing). Raises ``ValueError`` on an impossible log."""
    steps: list[int] = []
    for kind, k in actions:
        if type(k) is not int or k < 0:
            raise ValueError(f"bad branch index {k!r}")
        if kind in ("probe_new", "read"):
            if k != len(steps) or k >= len(order):
                raise ValueError(f"{kind} opened branch {k}, expected {len(steps)}")
            steps.append(1 if kind == "probe_new" else 0)
        elif kind == "probe_more":
            if k >= len(steps):
                raise ValueError(f"probe_more on unopened branch {k}")
            if steps[k] and steps[k] <= branches.n_probes[order[k]]:
                steps[k] += 1
        else:
            raise ValueError(f"unknown action {kind!r}")
    return steps


def decode_log(codes: list) -> list[Action]:
    """A traced episode's action codes (``protocol.encode_action``) as actions."""
    return [decode_action(c) for c in codes]


def controller_actions(controller: Any, branches: Branches, order: Sequence[int] | None = None
                       ) -> tuple[Any, list[Action], tuple[int, int, int]]:
    """Run a *trusted* controller on one episode in this process, for traces:
    (answer, actions, (tokens, branches opened, intervals)). Untrusted source: use
    ``process.candidate_actions``."""
    ep = RecordingEpisode(branches, order)
    answer = controller.solve(ep)
    return answer, list(ep.actions), (ep.tokens_used, ep.branches_opened, ep.intervals)
