"""The billing rule: what one branch of an episode costs, in one place.

The published evaluator's cost rules (see the data README, "Cost semantics"), per branch:

- a branch read whole costs its length and counts one interval;
- a probed branch costs one interval of tokens per step taken while probes remain; the
  step after its last probe (the finishing step, which reveals the final answer) brings it
  to its whole length: ``max(interval * probes, length)``; every step counts one interval.

A question's bill is the sum over the branches opened. Replay (``replay.episode``) and live
generation (``live.episode``) both bill with these functions; the sandbox keeps its own
inlined copies (``sandbox.oracle`` in the child, ``sandbox.cost`` in the parent) on purpose,
and ``tests/test_billing.py`` checks that they bill exactly as this module does.
"""

from __future__ import annotations


def branch_tokens(interval: int, probes: int, length: int, steps: int, read: bool = False) -> int:
    """Tokens billed for one opened branch.

    ``probes``: the branch's probe steps (intervals that do not end it); ``length``: its
    tokens; ``steps``: charged steps taken, from 0 to ``probes + 1`` (the last one being
    the finishing step); ``read``: it was read whole (``steps`` is then ignored).
    """
    if read:
        return length
    if steps > probes:
        return max(interval * probes, length)
    return interval * steps


def branch_intervals(steps: int, read: bool = False) -> int:
    """Intervals counted for one opened branch: one for a whole read, else its steps."""
    return 1 if read else steps


__all__ = ["branch_intervals", "branch_tokens"]
