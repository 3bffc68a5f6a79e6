"""The project's Parquet form of a trajectory set: one row per branch.

Columns: ``problem``, ``branch`` (indices), ``question``, ``gold_answer``,
``interval_tokens``, ``probe_answers`` (list<string>), ``branch_tokens``,
``final_answer``, and one ``signal.<name>`` column (list<double>, one value per probe
answer) per per-interval signal; a problem without that signal has nulls there.
Provenance lives in the schema metadata under ``autotts.*`` keys, so any Parquet tool
shows where the trajectories came from without reading the rows.

Why rows per branch: it is the natural table for analysis (pandas, DuckDB, Spark) and for
the great-expectations suite, while the published JSON nests branches inside problems.
Reading converts the rows back to the published record form and runs the same structural
checks as the JSON reader, so both formats fail the same way on the same bad values
(field names are given as ``column[branch]``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from mlflow_autotts.data.json_io import (
    DataWarning,
    FieldStyle,
    IssueCollector,
    StructureResult,
    atomic_path,
    check_records,
    provenance_from_path,
)
from mlflow_autotts.data.trajectory import Provenance, TrajectorySet
from mlflow_autotts.errors import DataError

FORMAT_VERSION = 1
"""Bumped when the columns or metadata change incompatibly; readers refuse newer files."""

META_PREFIX = "autotts."
SIGNAL_PREFIX = "signal."
COLUMNS = ("problem", "branch", "question", "gold_answer", "interval_tokens",
           "probe_answers", "branch_tokens", "final_answer")

PARQUET_STYLE = FieldStyle(
    interval="interval_tokens",
    branch="branch {b}",
    branch_field="{name}[{b}]",
    probe="probe_answers[{b}][{k}]",
    trace="final_answer[{b}]",
    signal_name="signal.{name}",
    signal="signal.{name}[{b}]",
    signal_value="signal.{name}[{b}][{k}]",
)
"""Parquet field names in errors: the column, with the branch index in brackets."""


def to_table(ts: TrajectorySet) -> Any:
    """The set as a ``pyarrow.Table`` with provenance in the schema metadata.

    List columns are assembled from the flat per-problem arrays with offsets, with no
    per-branch Python lists, so writing stays fast.
    """
    import pyarrow as pa

    names = ts.signal_names()
    prob_idx: list[int] = []
    branch_idx: list[int] = []
    questions: list[str] = []
    golds: list[str] = []
    intervals: list[int] = []
    tokens: list[int] = []
    finals: list[str] = []
    probe_values: list[str] = []
    probe_offsets = [0]
    sig_values: dict[str, list[float]] = {n: [] for n in names}
    sig_offsets: dict[str, list[int]] = {n: [0] for n in names}
    sig_mask: dict[str, list[bool]] = {n: [] for n in names}
    for p, prob in enumerate(ts.problems):
        br = prob.branches
        n = br.n_branches
        prob_idx.extend([p] * n)
        branch_idx.extend(range(n))
        questions.extend([br.question] * n)
        golds.extend([prob.gold_answer] * n)
        intervals.extend([br.interval_tokens] * n)
        tokens.extend(br.branch_tokens)
        finals.extend(br.final_answers)
        base = len(probe_values)
        probe_values.extend(br.probe_answers)
        probe_offsets.extend(base + o for o in br.probe_offsets[1:])
        for name in names:
            vals, offs = sig_values[name], sig_offsets[name]
            if name in br.signals:
                base = len(vals)
                vals.extend(br.signals[name])
                offs.extend(base + o for o in br.probe_offsets[1:])
                sig_mask[name].extend([False] * n)
            else:
                offs.extend([len(vals)] * n)
                sig_mask[name].extend([True] * n)

    arrays = [
        pa.array(prob_idx, pa.int32()),
        pa.array(branch_idx, pa.int32()),
        pa.array(questions, pa.string()),
        pa.array(golds, pa.string()),
        pa.array(intervals, pa.int64()),
        pa.ListArray.from_arrays(pa.array(probe_offsets, pa.int32()), pa.array(probe_values, pa.string())),
        pa.array(tokens, pa.int64()),
        pa.array(finals, pa.string()),
    ]
    fields = list(COLUMNS)
    for name in names:
        mask = pa.array(sig_mask[name], pa.bool_()) if any(sig_mask[name]) else None
        arrays.append(pa.ListArray.from_arrays(pa.array(sig_offsets[name], pa.int32()),
                                               pa.array(sig_values[name], pa.float64()), mask=mask))
        fields.append(SIGNAL_PREFIX + name)
    table = pa.Table.from_arrays(arrays, names=fields)
    return table.replace_schema_metadata(_metadata(ts))


def _metadata(ts: TrajectorySet) -> dict[str, str]:
    prov = ts.provenance
    intervals = {p.branches.interval_tokens for p in ts.problems}
    try:
        sampling = json.dumps(prov.sampling, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise DataError(prov.source or ts.name, f"sampling settings are not JSON-serializable: {exc}") from None
    return {
        META_PREFIX + "format_version": str(FORMAT_VERSION),
        META_PREFIX + "model": prov.model,
        META_PREFIX + "benchmark": prov.benchmark,
        META_PREFIX + "source": prov.source,
        META_PREFIX + "sampling": sampling,
        # the common interval, or null when problems differ (the column is authoritative)
        META_PREFIX + "interval_tokens": json.dumps(intervals.pop() if len(intervals) == 1 else None),
    }


def write_parquet(ts: TrajectorySet, path: str | Path) -> None:
    """Write the Parquet form atomically (zstd-compressed)."""
    import pyarrow.parquet as pq

    path = Path(path)
    table = to_table(ts)
    try:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    except OSError as exc:
        raise DataError(str(path), f"cannot write: {exc.strerror or exc}") from None


def read_metadata(path: str | Path, table: Any) -> dict[str, Any]:
    """The ``autotts.*`` schema metadata as Python values (sampling and interval parsed)."""
    raw = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()
           if k.startswith(META_PREFIX.encode())}
    meta: dict[str, Any] = {k[len(META_PREFIX):]: v for k, v in raw.items()}
    try:
        version = int(meta.get("format_version", FORMAT_VERSION))
    except ValueError:
        raise DataError(str(path), f"bad metadata autotts.format_version {meta['format_version']!r}") from None
    if version > FORMAT_VERSION:
        raise DataError(str(path), f"written in trajectory format {version}; this version of mlflow-autotts "
                                   f"reads up to {FORMAT_VERSION} (upgrade mlflow-autotts)")
    meta["format_version"] = version
    for key in ("sampling", "interval_tokens"):
        if key in meta:
            try:
                meta[key] = json.loads(meta[key])
            except json.JSONDecodeError:
                raise DataError(str(path), f"metadata autotts.{key} is not valid JSON: {meta[key]!r}") from None
    if not isinstance(meta.get("sampling", {}), dict):
        raise DataError(str(path), "metadata autotts.sampling must be a JSON object")
    return meta


def load_table(path: str | Path) -> Any:
    """Read the file and check its schema; anything wrong here makes the file unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except OSError as exc:
        raise DataError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        raise DataError(str(path), f"not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    schema = table.schema
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise DataError(str(path), f"missing column{'s' if len(missing) > 1 else ''} "
                                   f"{', '.join(map(repr, missing))}; the trajectory form has {', '.join(COLUMNS)}")
    t = pa.types
    kinds = {
        "problem": (t.is_integer, "an integer"), "branch": (t.is_integer, "an integer"),
        "interval_tokens": (t.is_integer, "an integer"), "branch_tokens": (t.is_integer, "an integer"),
        "question": (_is_string, "string"), "gold_answer": (_is_string, "string"),
        "final_answer": (_is_string, "string"),
        "probe_answers": (lambda ty: _is_list(ty) and _is_string(ty.value_type), "list<string>"),
    }
    for name in schema.names:
        if name.startswith(SIGNAL_PREFIX):
            kinds[name] = (lambda ty: _is_list(ty) and (t.is_floating(ty.value_type) or t.is_integer(ty.value_type)),
                           "list<double>")
    for name, (ok, want) in kinds.items():
        ty = schema.field(name).type
        if not ok(ty):
            raise DataError(str(path), f"has type {ty}, expected {want}", field=name)
    for name in ("problem", "branch"):
        if table.column(name).null_count:
            raise DataError(str(path), "has null row indices", field=name)
    return table


def _is_string(ty: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(ty):
        ty = ty.value_type
    return pa.types.is_string(ty) or pa.types.is_large_string(ty)


def _is_list(ty: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_list(ty) or pa.types.is_large_list(ty)


def table_records(table: Any, source: str, fail: IssueCollector) -> list[dict[str, Any]]:
    """Group the rows back into published-form records (plus ``signals``), reporting rows
    that do not fit: gaps or duplicates in the indices, or per-problem values (question,
    gold answer, interval) that differ between a problem's rows."""
    table = table.sort_by([("problem", "ascending"), ("branch", "ascending")])
    cols = {name: table.column(name).to_pylist() for name in table.schema.names
            if name in COLUMNS or name.startswith(SIGNAL_PREFIX)}
    signal_names = [n for n in cols if n.startswith(SIGNAL_PREFIX)]
    pidx, bidx = cols["problem"], cols["branch"]
    records: list[dict[str, Any]] = []
    n = len(pidx)
    lo = 0
    expected_p = 0
    while lo < n:
        p = pidx[lo]
        hi = lo
        while hi < n and pidx[hi] == p:
            hi += 1
        if p != expected_p:
            if p < expected_p:
                fail("records", p, "problem", "negative problem index")
            else:
                fail("records", expected_p, "problem",
                     f"missing: the problem indices jump from {expected_p - 1} to {p}")
            records.extend({} for _ in range(max(0, p - expected_p)))
        expected_p = p + 1
        branches = bidx[lo:hi]
        if branches != list(range(hi - lo)):
            k = next(i for i, b in enumerate(branches) if b != i)
            dup = k and branches[k] == branches[k - 1]
            what = f"branch {branches[k]} appears twice" if dup else f"branch {k} is missing"
            fail("branch shape", p, "branch", f"branch indices must run 0, 1, 2, ... without gaps: {what}")
        rec: dict[str, Any] = {}
        for key, col in (("question", "question"), ("gold_answer", "gold_answer"), ("probe_freq", "interval_tokens")):
            values = cols[col][lo:hi]
            first = values[0]
            for b, v in enumerate(values):
                if v != first:
                    fail("problem fields", p, col, f"differs between branch 0 and branch {b} (one value per problem)")
                    break
            rec[key] = first
        rec["each_branch"] = [list(t) for t in zip(cols["probe_answers"][lo:hi], cols["branch_tokens"][lo:hi],
                                                   cols["final_answer"][lo:hi])]
        signals: dict[str, list[Any]] = {}
        for col in signal_names:
            values = cols[col][lo:hi]
            nulls = [b for b, v in enumerate(values) if v is None]
            if len(nulls) == len(values):
                continue  # this problem has no such signal
            if nulls:
                fail("signals", p, f"{col}[{nulls[0]}]", "null while other branches of this problem have values")
                continue
            signals[col[len(SIGNAL_PREFIX):]] = values
        if signals:
            rec["signals"] = signals
        records.append(rec)
        lo = hi
    return records


def check_parquet(path: str | Path, *, strict: bool = True,
                  per_check: int = 20) -> tuple[StructureResult, dict[str, Any], list[dict[str, Any]]]:
    """Structural checks of a Parquet file (strict: raise at the first error), with its
    metadata and the rows regrouped as published-form records (for the validation suite)."""
    path = Path(path)
    table = load_table(path)
    meta = read_metadata(path, table)
    fail = IssueCollector(str(path), strict, per_check)
    records = table_records(table, str(path), fail)
    if not records:
        fail("records", None, None, "no problems: the table has no rows")
        return StructureResult([], fail.issues, dict(fail.counts)), meta, records
    return check_records(records, str(path), strict=strict, style=PARQUET_STYLE, collector=fail), meta, records


def read_parquet(path: str | Path, provenance: Provenance | None = None) -> TrajectorySet:
    """Load the Parquet form; provenance from its metadata (model and benchmark from the path
    when the metadata has none), with ``source`` set to where it was loaded from."""
    path = Path(path)
    result, meta, _ = check_parquet(path, strict=True)
    for issue in result.issues:
        warnings.warn(DataWarning(issue.render(str(path))), stacklevel=2)
    if provenance is None:
        inferred = provenance_from_path(path)
        model, benchmark = meta.get("model", ""), meta.get("benchmark", "")
        if not (model and benchmark):
            model, benchmark = inferred.model, inferred.benchmark
        provenance = Provenance(model=model, benchmark=benchmark, source=str(path), sampling=meta.get("sampling", {}))
    return TrajectorySet(result.problems, provenance)
