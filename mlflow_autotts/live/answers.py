"""One answer extractor and normaliser, shared by live episodes and collection.

Answers are compared by exact string equality (as in the published evaluator), so live
answers must come out in the same shape as the published ones: the content of the last
``\\boxed{…}`` (nested braces kept), stripped, ``"ERR"`` when there is none. The
normaliser only removes wrapping that never changes the value (surrounding ``$``, a
``\\text{…}`` wrapper, a trailing full stop, thousands separators, a left-hand side
``x =``, trailing zeros of a decimal). On the published AIME 2024 sets it changes 64 of
7,428 distinct answer strings (``11,302,454``, ``2.0``, ``24  minutes.``) and not one
comparison with a gold answer, so live answers and replay answers compare alike.
"""

from __future__ import annotations

import re

NO_ANSWER = "ERR"
"""The answer of a branch or probe from which nothing could be extracted."""

BOX_COMMANDS = ("\\boxed", "\\fbox")

_WRAPPERS = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|textrm)\{(.*)\}$", re.DOTALL)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL = re.compile(r"^([+-]?\d+)\.(\d*?)0+$")


def _balanced(text: str, start: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``start - 1``, or None when it never closes."""
    depth = 1
    for i in range(start, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def boxed_contents(text: str) -> list[str]:
    """Contents of every closed ``\\boxed{…}`` (or ``\\fbox{…}``) in ``text``, in order."""
    out: list[str] = []
    i = 0
    while True:
        hits = [(text.find(cmd + "{", i), cmd) for cmd in BOX_COMMANDS]
        hits = [(pos, cmd) for pos, cmd in hits if pos >= 0]
        if not hits:
            return out
        pos, cmd = min(hits)
        start = pos + len(cmd) + 1
        end = _balanced(text, start)
        if end is None:
            return out
        out.append(text[start:end])
        i = end + 1


def normalize_answer(answer: str) -> str:
    """The answer without value-preserving wrapping; ``"ERR"`` when nothing is left.

    Idempotent: ``normalize_answer(normalize_answer(a)) == normalize_answer(a)``.
    """
    a = answer.strip()
    while True:
        before = a
        if len(a) >= 2 and a[0] == "$" and a[-1] == "$":
            a = a.strip("$").strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if a.startswith(left) and a.endswith(right) and len(a) >= 4:
                a = a[2:-2].strip()
        m = _WRAPPERS.match(a)
        if m and _balanced(a, a.index("{") + 1) == len(a) - 1:
            a = m.group(1).strip()
        if "=" in a and a.count("{") == a.count("}"):
            # "x = 5", "6 x 3 = 18": the value is the right-hand side
            rhs = a.rsplit("=", 1)[1].strip()
            if rhs:
                a = rhs
        if a.endswith(".") and not a.endswith(".."):
            a = a[:-1].rstrip()
        if _THOUSANDS.match(a):
            a = a.replace(",", "")
        m = _DECIMAL.match(a)
        if m:
            a = m.group(1) + ("." + m.group(2) if m.group(2) else "")
        if a.startswith("+") and len(a) > 1 and a[1].isdigit():
            a = a[1:]
        if a == before:
            break
    return a if a else NO_ANSWER


def extract_answer(text: str) -> str:
    """The normalised content of the last ``\\boxed{…}`` in ``text``, else ``"ERR"``."""
    boxes = boxed_contents(text)
    return normalize_answer(boxes[-1]) if boxes else NO_ANSWER


def probe_answer(continuation: str) -> str:
    """The answer of a probe: ``continuation`` is what followed a suffix ending in ``\\boxed{``.

    The box must close within the probe: an unclosed one (the probe ran out of tokens) is
    ``"ERR"``, like a branch that never states an answer.
    """
    end = _balanced(continuation, 0)
    if end is None:
        return NO_ANSWER
    return normalize_answer(continuation[:end])


def box_is_open(continuation: str) -> bool:
    """True while a probe continuation has not closed the ``\\boxed{`` it follows."""
    return _balanced(continuation, 0) is None


__all__ = ["NO_ANSWER", "box_is_open", "boxed_contents", "extract_answer", "normalize_answer", "probe_answer"]
