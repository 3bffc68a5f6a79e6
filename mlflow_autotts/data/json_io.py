"""The published AutoTTS JSON format, and the structural checks shared by every format.

A file is a JSON list with one object per problem: ``question``, ``gold_answer``,
``probe_freq`` and ``each_branch`` (triples ``[probe_answers, branch_tokens,
final_answer]``), plus ``final_answers_trace`` (the final answers again). Sets that carry
per-interval signals add an optional ``signals`` object (``{name: [per-branch list of
floats]}``), which the paper's own code ignores.

The checks run while the flat arrays are built, in the same pass (the branch triples
through ``data.triples``, the parser served requests share): a published 2 MB file loads
in ~20 ms, and bad input stops at the first problem with an error naming the file, the
problem index and the field. :func:`check_records` can also
collect every issue instead of stopping, which is what ``autotts data validate`` reports.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import uuid
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

from mlflow_autotts.data import triples
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.data.triples import BRANCH_FIELDS, MAX_INT, Fault, TripleRules, parse_triples
from mlflow_autotts.errors import DataError

REQUIRED_KEYS = ("question", "gold_answer", "probe_freq", "each_branch")

STRUCTURE_CHECKS: dict[str, str] = {
    "records": "every problem is an object with question, gold_answer, probe_freq, each_branch",
    "problem fields": "question and gold_answer are strings, the interval is a positive integer",
    "branch shape": "each_branch is a non-empty list of [probe_answers, branch_tokens, final_answer]",
    "probe answers": "probe answers are lists of strings",
    "branch tokens": "branch token counts are non-negative integers",
    "final answers": "final answers are strings",
    "final_answers_trace": "final_answers_trace (where present) repeats the branch final answers",
    "signals": "per-interval signals are numbers, one per probe answer",
    "branch counts": "every problem has the same number of branches",
}
"""Structural check names and what each asserts (the validation report prints both)."""

WARNING_CHECKS = frozenset({"branch counts"})
"""Checks whose failure is a warning: the replay handles different branch counts per problem
(every cost rule is per branch), so such data is usable, but the published sets all have 128
and comparisons against them (SC@64, the reference numbers) assume one count."""

MAX_INT_DIGITS = 20
"""Integers with more digits are not converted when parsing: they cannot be valid (see
:data:`MAX_INT`), and Python refuses to convert ones past 4,300 digits with a ValueError."""

QUOTE_CHARS = 40
"""Characters of a value or name quoted in an error message; a message stays one short line."""

_MISSING = object()
_NUM = frozenset({int, float})


class LongInteger:
    """A JSON integer too long to be any valid value, kept unconverted by :func:`parse_json`.

    Converting it could fail (Python's 4,300-digit limit) or cost time; as a value of its
    own type it fails every type check at its place, which the error then names."""

    __slots__ = ("digits",)

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of ``text``: one line, whatever it holds."""
    r = repr(text[:limit])
    return r if len(text) <= limit else r[:-1] + "..." + r[-1]


class DataWarning(UserWarning):
    """Data that loads and replays correctly but is unusual enough to mention."""


class Issue(NamedTuple):
    """One structural problem found in a trajectory file."""

    check: str
    """Key of :data:`STRUCTURE_CHECKS` it belongs to."""
    problem: int | None
    """Problem index, or None for file-level issues."""
    field: str | None
    """Field path inside the problem, in the file format's own vocabulary."""
    message: str
    severity: str = "error"
    """``error`` (the set cannot be used) or ``warning``."""

    def render(self, source: str) -> str:
        """The one-line form, identical to the :class:`DataError` message."""
        return str(DataError(source, self.message, self.problem, self.field))


@dataclass(frozen=True)
class FieldStyle:
    """How a format names fields in error messages, so a user can find the bad value in the
    file they actually have (a JSON path for JSON, column[branch] for Parquet)."""

    interval: str
    branch: str
    branch_field: str
    probe: str
    trace: str
    signal_name: str
    signal: str
    signal_value: str


JSON_STYLE = FieldStyle(
    interval="probe_freq",
    branch="each_branch[{b}]",
    branch_field="each_branch[{b}].{name}",
    probe="each_branch[{b}].probe_answers[{k}]",
    trace="final_answers_trace[{b}]",
    signal_name="signals.{name}",
    signal="signals.{name}[{b}]",
    signal_value="signals.{name}[{b}][{k}]",
)


class IssueCollector:
    """Receives issues: raises on the first error (loading) or records them (validation)."""

    def __init__(self, source: str, strict: bool, per_check: int) -> None:
        self.source = source
        self.strict = strict
        self.per_check = per_check
        self.issues: list[Issue] = []
        self.counts: Counter[str] = Counter()

    def __call__(self, check: str, problem: int | None, field: str | None, message: str) -> None:
        severity = "warning" if check in WARNING_CHECKS else "error"
        if self.strict and severity == "error":
            raise DataError(self.source, message, problem, field)
        self.counts[check] += 1
        if self.counts[check] <= self.per_check:
            self.issues.append(Issue(check, problem, field, message, severity))


@dataclass
class StructureResult:
    """What :func:`check_records` found."""

    problems: list[Problem]
    """The problems that passed every error-level check, in file order."""
    issues: list[Issue]
    """Issues found (at most ``per_check`` examples per check)."""
    counts: dict[str, int]
    """Number of issues per check (uncapped)."""

    @property
    def ok(self) -> bool:
        return not any(i.severity == "error" for i in self.issues)


def describe(value: Any) -> str:
    """A short JSON-flavoured description of a wrong value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, LongInteger):
        return repr(value)[1:-1]
    if isinstance(value, int):
        if value.bit_length() > 64:  # str() of a huge int is slow or refused
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return str(value)
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def check_records(records: Any, source: str, *, strict: bool = True, style: FieldStyle = JSON_STYLE,
                  per_check: int = 20, collector: IssueCollector | None = None,
                  numbers: Sequence[int] | None = None) -> StructureResult:
    """Check published-form records and build their :class:`Problem` objects in one pass.

    ``strict`` raises :class:`DataError` at the first error (what loading wants: fail fast
    with the exact place); otherwise every issue is collected for a validation report. A
    top level that is not a list always raises: nothing else can be checked then.
    ``collector`` lets a caller (the Parquet reader) add its own format's issues to the same
    report.
    """
    if not isinstance(records, list):
        raise DataError(source, f"expected a list of problems at the top level, got {describe(records)}")
    fail = collector or IssueCollector(source, strict, per_check)
    if not records:
        fail("records", None, None, "no problems: the list is empty")
    problems: list[Problem] = []
    n_branches: list[tuple[int, int]] = []
    for i, rec in enumerate(records):
        p = i if numbers is None else numbers[i]
        problem = _check_problem(p, rec, fail, style)
        if problem is not None:
            problems.append(problem)
            n_branches.append((p, problem.branches.n_branches))
    counts = Counter(n for _, n in n_branches)
    if len(counts) > 1:
        common, _ = counts.most_common(1)[0]
        odd = [f"problem {p} has {n}" for p, n in n_branches if n != common]
        more = f" (and {len(odd) - 5} more)" if len(odd) > 5 else ""
        fail("branch counts", None, None,
             f"branch counts differ across problems: {common} in most, but {', '.join(odd[:5])}{more}")
    return StructureResult(problems, fail.issues, dict(fail.counts))


def _check_problem(p: int, rec: Any, fail: IssueCollector, style: FieldStyle) -> Problem | None:
    """Check one problem record; returns its Problem, or None when it has an error."""
    if type(rec) is not dict:
        fail("records", p, None, f"expected an object with keys {', '.join(REQUIRED_KEYS)}, got {describe(rec)}")
        return None
    start = sum(fail.counts.values())  # any issue recorded below makes this problem unusable

    question = rec.get("question", _MISSING)
    gold = rec.get("gold_answer", _MISSING)
    interval = rec.get("probe_freq", _MISSING)
    each = rec.get("each_branch", _MISSING)
    for key, value in (("question", question), ("gold_answer", gold)):
        if value is _MISSING:
            fail("records", p, key, "missing")
        elif type(value) is not str:
            fail("problem fields", p, key, f"expected a string, got {describe(value)}")
    if interval is _MISSING:
        fail("records", p, style.interval, "missing")
    elif type(interval) is not int or interval <= 0:
        fail("problem fields", p, style.interval,
             f"expected a positive integer (tokens per probe interval), got {describe(interval)}")
    elif interval > MAX_INT:
        fail("problem fields", p, style.interval, f"{describe(interval)} is past the 64-bit range intervals are stored in")
    if each is _MISSING:
        fail("records", p, "each_branch", "missing")
        return None
    if type(each) is not list or not each:
        what = "an empty list" if type(each) is list else describe(each)
        fail("branch shape", p, "each_branch", f"expected a non-empty list of branches, got {what}")
        return None

    def report(b: int, faults: list[Fault]) -> None:
        for fault in faults:
            _fail_triple(p, b, fault, fail, style)

    flat, offsets, tokens, finals = parse_triples(each, FILE_TRIPLES, report)

    trace = rec.get("final_answers_trace", _MISSING)
    if trace is not _MISSING and sum(fail.counts.values()) == start:
        if type(trace) is not list:
            fail("final_answers_trace", p, "final_answers_trace", f"expected a list of strings, got {describe(trace)}")
        elif len(trace) != len(each):
            fail("final_answers_trace", p, "final_answers_trace",
                 f"has {len(trace)} entries but each_branch has {len(each)} branches")
        elif trace != finals:
            k = next(i for i, (t, f) in enumerate(zip(trace, finals)) if t != f)
            fail("final_answers_trace", p, style.trace.format(b=k),
                 f"{describe(trace[k])} differs from the branch's final answer {describe(finals[k])}")

    signals: dict[str, list[float]] = {}
    raw_signals = rec.get("signals", _MISSING)
    if raw_signals is not _MISSING and sum(fail.counts.values()) == start:
        signals = _check_signals(p, raw_signals, offsets, fail, style)

    if sum(fail.counts.values()) != start:
        return None
    return Problem(Branches(question, interval, flat, offsets, tokens, finals, signals), gold)


def _exact_int(value: Any) -> int | None:
    return value if type(value) is int else None


def _is_list(value: Any) -> bool:
    return type(value) is list


FILE_TRIPLES = TripleRules(is_list=_is_list, integer=_exact_int, max_tokens=MAX_INT)
"""What a file's triple may hold: JSON lists, exact integers within int64."""


def _fail_triple(p: int, b: int, fault: Fault, fail: IssueCollector, style: FieldStyle) -> None:
    """Record one fault of branch ``b``'s triple under its check, named in ``style``."""
    what, value = fault.what, fault.value
    if what == triples.SHAPE:
        got = f"{len(value)}" if type(value) is list else describe(value)
        fail("branch shape", p, style.branch.format(b=b), f"expected 3 fields [{', '.join(BRANCH_FIELDS)}], got {got}")
    elif what == triples.PROBES:
        fail("probe answers", p, style.branch_field.format(b=b, name="probe_answers"),
             f"expected a list of strings, got {describe(value)}")
    elif what == triples.PROBE:
        fail("probe answers", p, style.probe.format(b=b, k=fault.k), f"expected a string, got {describe(value)}")
    elif what in (triples.TOKENS, triples.NEGATIVE):
        fail("branch tokens", p, style.branch_field.format(b=b, name="branch_tokens"),
             f"expected a non-negative integer, got {describe(value)}")
    elif what == triples.TOO_LARGE:
        fail("branch tokens", p, style.branch_field.format(b=b, name="branch_tokens"),
             f"{describe(value)} is past the 64-bit range token counts are stored in")
    else:
        fail("final answers", p, style.branch_field.format(b=b, name="final_answer"),
             f"expected a string, got {describe(value)}")


def _check_signals(p: int, raw: Any, offsets: list[int], fail: IssueCollector,
                   style: FieldStyle) -> dict[str, list[float]]:
    """Per-interval signals: ``{name: [one list of numbers per branch]}``, each list as long
    as that branch's probe answers (a signal belongs to one probe interval)."""
    if type(raw) is not dict:
        fail("signals", p, "signals", f"expected an object {{name: per-branch lists}}, got {describe(raw)}")
        return {}
    n = len(offsets) - 1
    out: dict[str, list[float]] = {}
    for name, per_branch in raw.items():
        shown = name if len(name) <= QUOTE_CHARS else name[:QUOTE_CHARS] + "..."
        if type(per_branch) is not list or len(per_branch) != n:
            got = f"{len(per_branch)} lists" if type(per_branch) is list else describe(per_branch)
            fail("signals", p, style.signal_name.format(name=shown), f"expected {n} lists (one per branch), got {got}")
            continue
        flat: list[float] = []
        for b, vals in enumerate(per_branch):
            want = offsets[b + 1] - offsets[b]
            if type(vals) is not list or len(vals) != want:
                got = f"{len(vals)} values" if type(vals) is list else describe(vals)
                fail("signals", p, style.signal.format(name=shown, b=b),
                     f"expected {want} numbers (one per probe answer), got {got}")
                break
            types = set(map(type, vals))
            if vals and (not types <= _NUM or int in types and any(type(v) is int and v.bit_length() > 64 for v in vals)):
                k = next(i for i, v in enumerate(vals) if type(v) not in _NUM or type(v) is int and v.bit_length() > 64)
                fail("signals", p, style.signal_value.format(name=shown, b=b, k=k),
                     f"expected a number, got {describe(vals[k])}")
                break
            flat.extend(vals)
        else:
            out[name] = [float(v) for v in flat]
    return out


def problems_from_records(records: Any, source: str, style: FieldStyle = JSON_STYLE) -> list[Problem]:
    """Strictly checked problems from published-form records; warnings go to :mod:`warnings`."""
    result = check_records(records, source, strict=True, style=style)
    for issue in result.issues:
        warnings.warn(DataWarning(issue.render(source)), stacklevel=3)
    return result.problems


def _int(text: str) -> int | LongInteger:
    return int(text) if len(text) <= MAX_INT_DIGITS else LongInteger(text)


def parse_json(data: bytes | str, source: str, what: str = "JSON", unit: str = "file") -> Any:
    """Parse JSON text from an untrusted file; every failure is one :class:`DataError` line.

    The one parser every file of the project goes through (trajectories, Parquet metadata,
    question lines, a collection's manifest), so each hostile input is refused the same
    way: bytes that are not UTF-8, nesting past what Python's recursive parser can take
    (a RecursionError there), integers too long to be valid (kept as :class:`LongInteger`,
    never converted), text that is not JSON. ``what`` names the text in messages, ``unit``
    what holds it (a file, a line, a value).
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(source, f"not UTF-8 text (byte {exc.start}): is this really a {what} {unit}?") from None
    else:
        text = data
    try:
        return json.loads(text, parse_int=_int)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno} (char {exc.pos})"
        if exc.pos >= len(exc.doc.rstrip()):
            raise DataError(source, f"not valid {what}: truncated, the {unit} ends at {where} in the middle of a value") from None
        raise DataError(source, f"not valid {what} at {where}: {exc.msg}") from None
    except RecursionError:
        raise DataError(source, f"{what} nested too deeply to read (Python's parser stops near "
                                f"{sys.getrecursionlimit()} levels)") from None
    except MemoryError:
        raise DataError(source, f"{what} too large to hold in memory") from None


def check_depth(value: Any, source: str, limit: int, what: str) -> None:
    """Refuse ``value`` nested more than ``limit`` levels, without recursing (a deep value
    would break every recursive reader after this one: repr, comparison, ``json.dumps``)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            if depth > limit:
                raise DataError(source, f"{what} is nested more than {limit} levels deep")
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
        elif isinstance(v, LongInteger):
            raise DataError(source, f"{what} holds {describe(v)}")


def load_json_records(path: str | Path) -> Any:
    """Parse a JSON file, turning every failure into one DataError line with the position."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except MemoryError:
        raise DataError(str(path), "too large to hold in memory") from None
    return parse_json(data, str(path))


_NAME = re.compile(r"[\w.+-]+")


def provenance_from_path(path: str | Path, source: str | None = None) -> Provenance:
    """Model and benchmark from a ``<model>/<benchmark>.<ext>`` path (both parts plain names:
    letters, digits, ``.``, ``_``, ``-``, ``+``); otherwise only the source. The set's name
    (``Qwen3-4B/aime24``) then labels results and metric keys, which a full path cannot."""
    path = Path(path)
    model, benchmark = path.parent.name, path.stem
    if _NAME.fullmatch(model) and _NAME.fullmatch(benchmark):
        return Provenance(model=model, benchmark=benchmark, source=source or str(path))
    return Provenance(source=source or str(path))


def read_json(path: str | Path, provenance: Provenance | None = None) -> TrajectorySet:
    """Load a published-format file; provenance defaults to what the path tells."""
    path = Path(path)
    records = load_json_records(path)
    problems = problems_from_records(records, str(path))
    return TrajectorySet(problems, provenance or provenance_from_path(path))


def to_records(ts: TrajectorySet) -> list[dict[str, Any]]:
    """The published form, keys in the published order so the output matches the original
    files byte for byte (``signals`` only where the set has any)."""
    out = []
    for p in ts.problems:
        br = p.branches
        rec: dict[str, Any] = {
            "question": br.question,
            "final_answers_trace": list(br.final_answers),
            "each_branch": br.triples(),
            "gold_answer": p.gold_answer,
            "probe_freq": br.interval_tokens,
        }
        if br.signals:
            offs = br.probe_offsets
            rec["signals"] = {name: [vals[offs[b]:offs[b + 1]] for b in range(br.n_branches)]
                              for name, vals in br.signals.items()}
        out.append(rec)
    return out


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to; it replaces ``path`` only when the
    block succeeds, so readers never see a half-written file and failures leave nothing."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(ts: TrajectorySet, path: str | Path) -> None:
    """Write the published format atomically (indent 2, UTF-8, as the published files)."""
    path = Path(path)
    _check_finite(ts, path)
    text = json.dumps(to_records(ts), indent=2, ensure_ascii=False)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DataError(str(path), f"cannot write: {exc.strerror or exc}") from None


def _check_finite(ts: TrajectorySet, path: Path) -> None:
    """JSON has no NaN or infinity; refuse rather than write a file other readers reject."""
    for p, prob in enumerate(ts.problems):
        for name, vals in prob.branches.signals.items():
            if not all(map(math.isfinite, vals)):
                raise DataError(str(path), "JSON cannot hold NaN or infinite signal values; write Parquet instead",
                                problem=p, field=f"signals.{name}")
