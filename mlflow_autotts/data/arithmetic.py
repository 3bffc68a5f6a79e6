"""Short arithmetic questions with exact answers, generated deterministically.

The laptop recipe (``projects/smollm2-arithmetic``) needs questions a 135M model gets right
about half the time, neither never nor always, so that a vote beats one sample and early
stopping has something to save, and that anyone can regenerate bit for bit: one
``random.Random(seed)`` draws the numbers, and the answer is computed, never written by hand.

Two kinds: ``sums`` ("What is 3 + 4?", two single digits, no pair twice), the recipe's:
SmolLM2-135M-Instruct, asked for the answer alone, is right in 52.5% of its samples on the
recipe's 40 and a vote of 16 in 68% of the questions (``benchmarks/README.md``,
``recipe_questions.py``); ``word`` (one- and two-step word problems), which that model
answers right in about one sample of ten, too rarely for votes to mean anything, kept for
larger models and the collection benchmarks.
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


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return n


def arithmetic_questions(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` word problems as ``{"question", "answer"}`` rows; the same ``(n, seed)`` gives the same rows."""
    r = random.Random(seed)
    rows = []
    for _ in range(_count(n)):
        question, answer = r.choice(TEMPLATES)(r)
        rows.append({"question": question, "answer": str(answer)})
    return rows


SUM_PAIRS = tuple((a, b) for a in range(1, 10) for b in range(1, 10))
"""Every ordered pair of single digits 1–9: the ``sums`` questions are drawn from these."""


def sum_questions(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` questions "What is a + b?" (single digits, no pair twice, at most 81) as
    ``{"question", "answer"}`` rows; the same ``(n, seed)`` gives the same rows."""
    if _count(n) > len(SUM_PAIRS):
        raise ValueError(f"n must be at most {len(SUM_PAIRS)} (the distinct pairs of single digits), got {n}")
    return [{"question": f"What is {a} + {b}?", "answer": str(a + b)}
            for a, b in random.Random(seed).sample(SUM_PAIRS, n)]


KINDS: dict[str, Callable[[int, int], list[dict[str, str]]]] = {"sums": sum_questions, "word": arithmetic_questions}
"""Question kinds by name (``autotts data arithmetic --kind``)."""


__all__ = ["KINDS", "SUM_PAIRS", "TEMPLATES", "arithmetic_questions", "sum_questions"]
