"""Text from untrusted code reaches terminals, logs and responses only sanitised and bounded.

A candidate controller's exception message travels from the sandbox child to the trusted
parent, which turns it into a ``CandidateFailure``; from there it is printed by the CLI,
logged to MLflow and returned by a served model. Carriage returns, terminal escape
sequences (clear screen, retitle, hyperlinks) and other control characters must not
survive that trip, and no message may be unbounded (``errors.safe_text``).
"""

from __future__ import annotations

import unicodedata

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_autotts.cli.main import main
from mlflow_autotts.data.json_io import write_json
from mlflow_autotts.errors import safe_text
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateFailedError, CandidateFailure
from mlflow_autotts.sandbox.process import run_candidate
from mlflow_autotts.sandbox.protocol import MAX_MESSAGE_CHARS, MAX_TRACEBACK_CHARS
from tests.helpers import random_set

UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}
HOSTILE_MESSAGE = "\x1b[2J\x1b[H\rfake\x07 ok\x1b]0;pwned\x07\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\\u202eevil\x9b31m"
LIMITS = SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=512)


def unsafe_chars(text: str, multiline: bool = False) -> list[str]:
    return [c for c in text if unicodedata.category(c) in UNSAFE and not (multiline and c == "\n")]


# ------------------------------------------------------------------ the sanitiser
hostile_text = st.lists(st.one_of(
    st.characters(),  # any code point, surrogates included
    st.sampled_from(["\x1b", "\x1b[", "\x1b]", "\x07", "\x9b", "\x9c", "\\", "\r", "\n", "0;", "2J", "\u202e", "\u2028"]),
), max_size=120).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=hostile_text, limit=st.integers(20, 400), multiline=st.booleans())
def test_safe_text_leaves_no_control_character_is_bounded_and_idempotent(text, limit, multiline):
    out = safe_text(text, limit, multiline=multiline)
    assert not unsafe_chars(out, multiline), out
    assert len(out) <= limit
    out.encode("utf-8")  # no lone surrogate: printable to any UTF-8 terminal or log
    assert safe_text(out, limit, multiline=multiline) == out


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=tuple(UNSAFE)), max_size=200))
def test_safe_text_keeps_ordinary_text_as_it_is(text):
    assert safe_text(text, 200) == text


def test_escape_sequences_go_and_other_controls_show_escaped():
    assert safe_text("a\x1b[2Jb\x1b]0;title\x07c\rd\x07e\tf\ng") == "abc\\rd\\x07e\\tf\\ng"
    assert safe_text("line 1\nline 2\r", multiline=True) == "line 1\nline 2\\r"
    assert safe_text("x" * 10_000, 100).endswith("[truncated]") and len(safe_text("x" * 10_000, 100)) == 100
    assert len(safe_text("\x07" * 10**6, 100)) == 100  # bounded work and output whatever comes in


# ------------------------------------------------------------------ through the sandbox
RAISER = f'''
from mlflow_autotts.controllers.base import Controller


class Raiser(Controller):
    name = "raiser"

    def solve(self, episode):
        episode.probe_new()
        raise ValueError({HOSTILE_MESSAGE!r} + "x" * 50_000 + "\\r\\n" + "\\x1b[1A" * 1000)
'''


def test_a_candidates_hostile_exception_text_is_sanitised_and_bounded_by_the_parent():
    out = run_candidate(RAISER, [random_set(2, 6, seed=1, name="Toy/a")], [0.5], range(1), LIMITS)
    failure = out.failure
    assert failure is not None and failure.kind == "exception"
    for text in (failure.message, str(failure)):
        assert not unsafe_chars(text), repr(text[:200])
        assert "fake" in text and "ValueError" in text
    assert len(failure.message) <= MAX_MESSAGE_CHARS
    assert not unsafe_chars(failure.traceback, multiline=True) and len(failure.traceback) <= MAX_TRACEBACK_CHARS
    with pytest.raises(CandidateFailedError) as err:
        out.raise_for_failure("\x1b]0;label\x07raiser")
    assert not unsafe_chars(str(err.value)) and "raiser" in str(err.value)


def test_a_failure_built_anywhere_is_sanitised_and_a_reported_name_too():
    failure = CandidateFailure("exception", "a\rb\x1b[2J", "Traceback\n  line\x1b]0;x\x07\n",
                               where={"data": "Toy/\x1b[31ma"})
    assert failure.message == "a\\rb" and failure.traceback == "Traceback\n  line\n"
    assert not unsafe_chars(str(failure))
    err = CandidateFailedError("name\x1b[2J\u202e", failure)
    assert not unsafe_chars(str(err)) and not unsafe_chars(err.label)


def test_the_cli_prints_a_candidates_failure_as_one_safe_line(tmp_path):
    data = tmp_path / "Toy" / "a.json"
    data.parent.mkdir()
    write_json(random_set(2, 6, seed=1, name="Toy/a"), data)
    src = tmp_path / "raiser.py"
    src.write_text(RAISER)
    res = CliRunner().invoke(main, ["evaluate", str(data), "-c", f"{src}:Raiser", "--shuffles", "1", "--workers", "1",
                                    "--no-mlflow", "--no-progress"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "raiser" in lines[0], res.stderr[:500]
    assert not unsafe_chars(res.stderr.strip()), repr(res.stderr[:300])
    assert len(res.stderr) < 2 * MAX_MESSAGE_CHARS
