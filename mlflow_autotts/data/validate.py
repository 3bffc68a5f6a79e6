"""Validation reports: the structural checks plus a great-expectations suite.

Loading stops at the first bad value; validation instead collects every issue, so one run
of ``autotts data validate`` shows everything wrong with a file. The great-expectations
suite runs over a per-branch table built leniently from the raw records (wrong types kept
as they are), so it checks the data independently of the structural pass and reports
share-of-rows figures a structural error message cannot. great_expectations takes seconds
to import, so it is imported only when a suite actually runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Sequence

from mlflow_autotts.data.json_io import (
    MAX_INT,
    STRUCTURE_CHECKS,
    WARNING_CHECKS,
    Issue,
    StructureResult,
    check_records,
    describe,
    load_json_records,
    quote,
)
from mlflow_autotts.data.parquet_io import check_parquet
from mlflow_autotts.data.uris import SCHEME, expand_dataset_uri, resolve_dataset_uri
from mlflow_autotts.errors import DataError

EXAMPLES = 3
"""Issues quoted per failed check in a report."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one dataset."""

    name: str
    """``structure: <check>`` or ``expectation: <check>``."""
    passed: bool
    details: str
    """What was checked, or, on failure, how many values failed and where the first are."""
    severity: str = "error"
    """``error`` fails the validation; ``warning`` is reported but does not."""


@dataclass
class ValidationReport:
    """Every check run on one dataset."""

    uri: str
    """The dataset URI as given."""
    source: str
    """The local file that was checked."""
    n_problems: int
    n_branches: int
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no error-level check failed (warnings allowed)."""
        return all(c.passed or c.severity == "warning" for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed and c.severity == "error"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed and c.severity == "warning"]

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "source": self.source, "passed": self.passed, "n_problems": self.n_problems,
                "n_branches": self.n_branches,
                "checks": [{"name": c.name, "passed": c.passed, "severity": c.severity, "details": c.details}
                           for c in self.checks]}

    def format(self) -> str:
        """A readable multi-line report: one line per check, then the verdict."""
        where = self.uri if self.uri == self.source else f"{self.uri} ({self.source})"
        lines = [f"{where}: {_plural(self.n_problems, 'problem')}, {_plural(self.n_branches, 'branch', 'branches')}"]
        width = max((len(c.name) for c in self.checks), default=0)
        for c in self.checks:
            mark = "ok  " if c.passed else ("FAIL" if c.severity == "error" else "warn")
            lines.append(f"  {mark}  {c.name:<{width}}  {c.details}")
        n_fail, n_warn = len(self.failures), len(self.warnings)
        verdict = "PASSED" if self.passed else "FAILED"
        extra = f", {n_warn} warning{'s' if n_warn != 1 else ''}" if n_warn else ""
        lines.append(f"  => {verdict}: {len(self.checks) - n_fail} of {len(self.checks)} checks passed{extra}")
        return "\n".join(lines)


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


# ---------------------------------------------------------------------------- structure
def _where(issue: Issue) -> str:
    parts = []
    if issue.problem is not None:
        parts.append(f"problem {issue.problem}")
    if issue.field is not None:
        parts.append(f"field {issue.field!r}")
    return (", ".join(parts) + ": " if parts else "") + issue.message


def structure_checks(result: StructureResult, names: list[str]) -> list[CheckResult]:
    """One result per structural check: its description, or its issue count and first issues."""
    out = []
    for name in names:
        n = result.counts.get(name, 0)
        severity = "warning" if name in WARNING_CHECKS else "error"
        if not n:
            out.append(CheckResult(f"structure: {name}", True, STRUCTURE_CHECKS[name], severity))
            continue
        quoted = [_where(i) for i in result.issues if i.check == name][:EXAMPLES]
        more = f" (+{n - len(quoted)} more)" if n > len(quoted) else ""
        out.append(CheckResult(f"structure: {name}", False,
                               f"{n} issue{'s' if n != 1 else ''}: {'; '.join(quoted)}{more}", severity))
    return out


# ---------------------------------------------------------------------------- expectations
class Shown(str):
    """A value that is not a scalar (a list, an object, an over-long integer), kept in the
    branch table as its short description: its type still fails the type expectations, and
    nothing downstream (pandas, great-expectations, the report) walks a structure the file
    may have nested a thousand levels deep."""

    def __repr__(self) -> str:
        return f"<{self}>"


_SCALARS = (str, int, float, bool, type(None))


def _cell(value: Any) -> Any:
    if type(value) is int and value.bit_length() > 64:
        return Shown(describe(value))
    return value if isinstance(value, _SCALARS) else Shown(describe(value))


def branch_frame(records: list[Any], numbers: Sequence[int] | None = None) -> Any:
    """One row per branch, values kept as found (so wrong types stay visible; containers as
    a :class:`Shown` description), plus numeric columns holding only the well-typed
    integers, which range expectations can compare. ``numbers``: each record's problem
    index where it is not its position."""
    import pandas as pd

    cols: dict[str, list[Any]] = {k: [] for k in (
        "problem", "branch", "question", "gold_answer", "interval_tokens", "n_probes",
        "branch_tokens", "final_answer", "problem_branches")}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("each_branch"), list):
            continue
        p = i if numbers is None else numbers[i]
        each = rec["each_branch"]
        for b, br in enumerate(each):
            ok = isinstance(br, list) and len(br) == 3
            probes, tokens, final = br if ok else (None, None, None)
            cols["problem"].append(p)
            cols["branch"].append(b)
            cols["question"].append(_cell(rec.get("question")))
            cols["gold_answer"].append(_cell(rec.get("gold_answer")))
            cols["interval_tokens"].append(_cell(rec.get("probe_freq")))
            cols["n_probes"].append(len(probes) if isinstance(probes, list) else None)
            cols["branch_tokens"].append(_cell(tokens))
            cols["final_answer"].append(_cell(final))
            cols["problem_branches"].append(len(each))
    df = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in cols.items()})
    for col in ("branch_tokens", "interval_tokens", "n_probes"):
        df[col + "_value"] = pd.Series([float(v) if type(v) is int and abs(v) <= MAX_INT else None for v in cols[col]],
                                       dtype="float64")
    return df


@dataclass(frozen=True)
class _Expectation:
    name: str
    """Label in the report."""
    kind: str
    """great_expectations.expectations class name."""
    kwargs: dict[str, Any]
    severity: str = "error"


def _expectations() -> list[_Expectation]:
    """The suite: what every replayable branch table must satisfy."""
    exps = [_Expectation("table has rows", "ExpectTableRowCountToBeBetween", {"min_value": 1})]
    for col in ("question", "gold_answer", "final_answer"):
        exps.append(_Expectation(f"{col} not null", "ExpectColumnValuesToNotBeNull", {"column": col}))
        exps.append(_Expectation(f"{col} is a string", "ExpectColumnValuesToBeOfType", {"column": col, "type_": "str"}))
    for col, low, what in (("branch_tokens", 0, ">= 0"), ("interval_tokens", 1, "> 0")):
        exps.append(_Expectation(f"{col} not null", "ExpectColumnValuesToNotBeNull", {"column": col}))
        exps.append(_Expectation(f"{col} is an integer", "ExpectColumnValuesToBeOfType",
                                 {"column": col, "type_": "int"}))
        exps.append(_Expectation(f"{col} {what}", "ExpectColumnValuesToBeBetween",
                                 {"column": col + "_value", "min_value": low}))
    exps.append(_Expectation("probe_answers is a list", "ExpectColumnValuesToNotBeNull", {"column": "n_probes"}))
    exps.append(_Expectation("probe count >= 0", "ExpectColumnValuesToBeBetween",
                             {"column": "n_probes_value", "min_value": 0}))
    exps.append(_Expectation("branches per problem consistent", "ExpectColumnUniqueValueCountToBeBetween",
                             {"column": "problem_branches", "min_value": 1, "max_value": 1}, "warning"))
    return exps


@functools.lru_cache(maxsize=1)
def _suite() -> tuple[Any, Any, dict[str, _Expectation]]:
    """An ephemeral context, a whole-dataframe batch definition and the suite, built once per
    process (reused for every dataset of a CLI call)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (context.data_sources.add_pandas("autotts")
                        .add_dataframe_asset("branches")
                        .add_batch_definition_whole_dataframe("all branches"))
    suite = gx.ExpectationSuite(name="autotts-trajectories")
    by_id: dict[str, _Expectation] = {}
    for i, exp in enumerate(_expectations()):
        key = f"check-{i}"
        suite.add_expectation(getattr(gxe, exp.kind)(**exp.kwargs, meta={"check": key}))
        by_id[key] = exp
    return batch_definition, suite, by_id


def expectation_checks(df: Any) -> list[CheckResult]:
    """Run the suite on a branch table; one result per expectation, in suite order."""
    batch_definition, suite, by_id = _suite()
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES})
    found: dict[str, CheckResult] = {}
    for r in result.results:
        key = (r.expectation_config.meta or {}).get("check")
        exp = by_id.get(key)
        if exp is None:
            continue
        found[key] = CheckResult(f"expectation: {exp.name}", bool(r.success), _details(r, df), exp.severity)
    return [found[k] for k in by_id if k in found]


def _shown(value: Any) -> str:
    """A found value as the report quotes it: short and on one line."""
    if isinstance(value, Shown):
        return repr(value)
    if type(value) is str:
        return quote(value)
    return describe(value) if type(value) is int else repr(value)


def _details(r: Any, df: Any) -> str:
    """Readable details of one expectation result, with the locations of unexpected rows."""
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return f"could not evaluate: {info.get('exception_message')}"
    res = r.result or {}
    if "observed_value" in res and "unexpected_count" not in res:
        if r.expectation_config.type == "expect_column_unique_value_count_to_be_between":
            counts = sorted(df["problem_branches"].unique().tolist()) if len(df) else []
            if not counts:
                return "no branches"
            return (f"every problem has {counts[0]} branches" if r.success
                    else f"problems have different branch counts: {', '.join(map(str, counts))}")
        if r.expectation_config.type == "expect_table_row_count_to_be_between":
            return f"{res['observed_value']} rows"
        return f"observed {res['observed_value']}"
    total = res.get("element_count", len(df))
    bad = res.get("unexpected_count", 0)
    if r.success:
        return f"{total} rows, none unexpected"
    where = []
    for idx, value in zip(res.get("partial_unexpected_index_list") or [], res.get("partial_unexpected_list") or []):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # the numeric helper columns are float; show the integer found
        try:
            where.append(f"problem {df.at[idx, 'problem']} branch {df.at[idx, 'branch']}: {_shown(value)}")
        except KeyError:
            where.append(_shown(value))
    return f"{bad} of {total} rows unexpected" + (f", e.g. {'; '.join(where)}" if where else "")


# ---------------------------------------------------------------------------- entry points
def validate_records(records: Any, source: str, uri: str | None = None,
                     structure: StructureResult | None = None, parquet: bool = False,
                     numbers: Sequence[int] | None = None) -> ValidationReport:
    """Validate published-form records: structural checks, then the expectation suite."""
    if structure is None:
        structure = check_records(records, source, strict=False, numbers=numbers)
    names = [n for n in STRUCTURE_CHECKS if not (parquet and n == "final_answers_trace")]
    df = branch_frame(records, numbers)
    report = ValidationReport(uri or source, source, len(records), len(df))
    report.checks = structure_checks(structure, names) + expectation_checks(df)
    return report


def validate_uri(uri: str) -> ValidationReport:
    """Validate one dataset. Raises :class:`DataError` when the input cannot be read at all
    (missing file, broken JSON, not a list, not a trajectory Parquet table): that is a
    different outcome from data that reads but fails checks."""
    files = expand_dataset_uri(uri)
    if len(files) > 1:
        raise DataError(uri, f"folder holds {len(files)} datasets; validate_uris checks them all")
    path = resolve_dataset_uri(files[0])
    label = uri if uri.startswith(SCHEME) or len(files) == 1 and files[0] == uri else files[0]
    if path.suffix == ".parquet":
        structure, _, records, numbers = check_parquet(path, strict=False)
        return validate_records(records, str(path), label, structure, parquet=True, numbers=numbers)
    if path.suffix == ".json":
        records = load_json_records(path)
        structure = check_records(records, str(path), strict=False)
        return validate_records(records, str(path), label, structure)
    raise DataError(str(path), f"unsupported file type {path.suffix or '(none)'!r}; expected .json or .parquet")


def validate_uris(uris: list[str]) -> list[ValidationReport]:
    """A report per dataset, folders expanded."""
    return [validate_uri(u) for uri in uris for u in expand_dataset_uri(uri)]
