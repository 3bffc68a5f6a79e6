"""The billing rule (the data README's cost rules), in one place: replay and live bill with it.

Per opened branch: read whole, its length (one interval); probed, one interval of tokens
per step while probes remain, and the finishing step (after the last probe) brings it to
``max(interval * probes, length)``. The sandbox inlines copies on purpose (``sandbox.oracle``,
``sandbox.cost``); ``tests/test_billing.py`` checks they bill exactly as this.
"""

from __future__ import annotations


def branch_tokens(interval: int, probes: int, length: int, steps: int, read: bool = False) -> int:
    """Tokens of one branch after ``steps`` charged steps (0 to ``probes + 1``), or read whole."""
    if read:
        return length
    if steps > probes:
        return max(interval * probes, length)
    return interval * steps


def branch_intervals(steps: int, read: bool = False) -> int:
    """Intervals counted for one branch: one for a whole read, else its steps."""
    return 1 if read else steps
