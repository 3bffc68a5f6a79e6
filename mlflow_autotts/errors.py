"""Errors that reach the user as one line (exit status 2), never as a traceback."""

from __future__ import annotations

import re
import unicodedata


class AutoTTSError(Exception):
    """Base for every error caused by the user's input (data, names, parameters)."""

    exit_code = 2


class DataError(AutoTTSError):
    """Trajectory data that cannot be read or fails validation.

    The message always names the source (file or URI) and, where it applies, the problem
    index and field, so a user can find the bad record without a debugger.
    """

    def __init__(self, source: str, message: str, problem: int | None = None, field: str | None = None):
        self.source = source
        self.problem = problem
        self.field = field
        self.detail = message
        where = source
        if problem is not None:
            where += f": problem {problem}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # its own arguments, so it crosses a process (a worker, a Ray task) as itself
        return type(self), (self.source, self.detail, self.problem, self.field)


class ControllerError(AutoTTSError):
    """An unknown controller name, a bad source file, or invalid controller parameters."""


class BackendError(AutoTTSError):
    """Generation failed outside the controller (a backend refused a request, is down or
    timed out). Neither the controller's fault nor the caller's: runners let it through
    and serving answers 503 (``docs/architecture.md``, "Live generation")."""


# ------------------------------------------------------------------ untrusted text
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI: cursor moves, clear screen, colours
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC/DCS/…: titles, links
    r"|\x1b[ -/]*[0-~]?")  # any other escape (charset switches, resets)
"""Terminal escape sequences, 7- and 8-bit; an unterminated one runs to the end of its payload."""
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Control characters, format characters (bidi overrides, zero-width), lone surrogates (which
cannot be written as UTF-8) and line/paragraph separators: nothing of them is shown raw."""
_NAMED = {"\r": "\\r", "\t": "\\t", "\n": "\\n"}
_TRUNCATED = "… [truncated]"


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe_text(text: object, limit: int = 2000, *, multiline: bool = False) -> str:
    """``text`` fit to show on a terminal, in a log or a response, whoever wrote it.

    Text from untrusted code (a candidate's exception message, a name it reports) can
    hold carriage returns that overwrite what came before on a terminal, escape
    sequences that clear the screen, retitle the window or forge links, and bidi
    overrides that make text read other than it is. Escape sequences are removed; every
    other control or format character is shown escaped (``\\r``, ``\\x07``, ``\\u202e``),
    newlines too unless ``multiline`` (tracebacks); the result is at most ``limit``
    characters. Idempotent, so text sanitised twice reads the same.
    """
    raw = str(text)
    cut = len(raw) > 4 * limit + 64  # bounded work whatever comes in
    s = _ESCAPE_SEQUENCE.sub("", raw[: 4 * limit + 64] if cut else raw)
    out = []
    for ch in s:
        if ch == "\n" and multiline:
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            out.append(_escaped(ch))
        else:
            out.append(ch)
    s = "".join(out)
    if len(s) > limit or cut:
        s = (s[: max(0, limit - len(_TRUNCATED))] + _TRUNCATED)[:limit]
    return s


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (MLflow's ``message`` when it has one), for
    one-line errors; the type's name when the message is empty."""
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
