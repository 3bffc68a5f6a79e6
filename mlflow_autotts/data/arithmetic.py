"""Short arithmetic word problems with exact answers, generated deterministically.

The laptop recipe (``projects/smollm2-arithmetic``) needs questions a 135M model gets right
sometimes, not always, so that voting and early stopping have something to do, and that
anyone can regenerate bit for bit: one ``random.Random(seed)`` draws a template and its
numbers, and the answer is computed, never written by hand.
"""

from __future__ import annotations

import random
from collections.abc import Callable

Template = Callable[[random.Random], tuple[str, int]]

NAMES = ("Tom", "Sara", "Ali", "Mia", "Ken", "Lena", "Omar", "Ivy")
THINGS = ("apples", "marbles", "books", "stickers", "pencils", "cookies", "cards", "shells")


def _add(r: random.Random) -> tuple[str, int]:
    a, b, who, what = r.randint(2, 30), r.randint(2, 30), r.choice(NAMES), r.choice(THINGS)
    return f"{who} has {a} {what} and gets {b} more. How many {what} does {who} have now?", a + b


def _sub(r: random.Random) -> tuple[str, int]:
    a = r.randint(10, 50)
    b, who, what = r.randint(1, a - 1), r.choice(NAMES), r.choice(THINGS)
    return f"{who} had {a} {what} and gave away {b}. How many {what} are left?", a - b


def _mul(r: random.Random) -> tuple[str, int]:
    a, b, what = r.randint(2, 9), r.randint(2, 12), r.choice(THINGS)
    return f"A box holds {b} {what}. How many {what} are in {a} boxes?", a * b


def _div(r: random.Random) -> tuple[str, int]:
    groups, each, what = r.randint(2, 9), r.randint(2, 10), r.choice(THINGS)
    return (f"{groups * each} {what} are shared equally among {groups} friends. "
            f"How many {what} does each friend get?"), each


def _two_step(r: random.Random) -> tuple[str, int]:
    a, b, c, who, what = r.randint(2, 9), r.randint(2, 6), r.randint(1, 9), r.choice(NAMES), r.choice(THINGS)
    return (f"{who} buys {a} bags with {b} {what} in each, then finds {c} more {what}. "
            f"How many {what} does {who} have?"), a * b + c


TEMPLATES: tuple[Template, ...] = (_add, _sub, _mul, _div, _two_step)


def arithmetic_questions(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` questions as ``{"question", "answer"}`` rows; the same ``(n, seed)`` gives the same rows."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        question, answer = r.choice(TEMPLATES)(r)
        rows.append({"question": question, "answer": str(answer)})
    return rows


__all__ = ["TEMPLATES", "arithmetic_questions"]
