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
from typing import Any, Sequence

from mlflow_autotts.data.json_io import (
    DataWarning,
    FieldStyle,
    IssueCollector,
    StructureResult,
    atomic_path,
    check_depth,
    check_records,
    parse_json,
    provenance_from_path,
    quote,
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


MAX_ROWS = 4_000_000
"""Most rows (branches) a trajectory file may have: a published set has 3,840. Checked in the
footer before anything is read, and again on what was read."""
MAX_VALUES = 50_000_000
"""Most list elements (probe answers, signal values) in all list columns together."""
MAX_BYTES = 2 << 30
"""Most bytes the columns read may take uncompressed (as the footer declares them), and most
distinct text (dictionary) bytes they may decode to."""
METADATA_DEPTH = 16
"""Deepest nesting of the ``autotts.sampling`` settings (flat settings, a few mappings)."""

_ARROW_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError, RecursionError)
"""What pyarrow raises on a file it cannot read (``ArrowException`` subclasses these or is
added where pyarrow is imported); every such failure is one ``not a readable Parquet file``
line, whichever part of the file (footer, schema, pages) it came from."""


def read_metadata(path: str | Path, metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    """The ``autotts.*`` key-value metadata as Python values (sampling and interval parsed),
    every key and value checked: UTF-8, valid bounded JSON where JSON is expected."""
    source = str(path)
    meta: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        if not key.startswith(META_PREFIX.encode()):
            continue  # other tools' metadata (pandas, ARROW:schema) is not ours to read
        try:
            name = key.decode("utf-8")[len(META_PREFIX):]
        except UnicodeDecodeError:
            raise DataError(source, f"metadata key {quote(key.decode('utf-8', 'replace'))} is not UTF-8 text") from None
        try:
            meta[name] = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(source, f"metadata {quote(META_PREFIX + name)} is not UTF-8 text (byte {exc.start})") from None
    if "format_version" in meta:
        text = meta["format_version"]
        if not (text.isascii() and text.isdigit() and len(text) <= 9):
            raise DataError(source, f"bad metadata autotts.format_version {quote(text)}")
        version = int(text)
    else:
        version = FORMAT_VERSION
    if version > FORMAT_VERSION:
        raise DataError(source, f"written in trajectory format {version}; this version of mlflow-autotts "
                                f"reads up to {FORMAT_VERSION} (upgrade mlflow-autotts)")
    meta["format_version"] = version
    for key in ("sampling", "interval_tokens"):
        if key in meta:
            what = f"metadata autotts.{key}"
            meta[key] = parse_json(meta[key], source, what, "value")
            check_depth(meta[key], source, METADATA_DEPTH, what)
    if not isinstance(meta.get("sampling", {}), dict):
        raise DataError(source, "metadata autotts.sampling must be a JSON object")
    for key in ("model", "benchmark"):
        if len(meta.get(key, "")) > 200:
            raise DataError(source, f"metadata autotts.{key} is {len(meta[key])} characters long; a name is expected")
    return meta


def _read_error(path: Path, exc: BaseException) -> DataError:
    """One line for a failure inside pyarrow (its messages can span lines)."""
    if isinstance(exc, MemoryError):
        return DataError(str(path), "not readable in bounded memory: the file decodes to more than it declares")
    if isinstance(exc, OSError) and exc.errno is not None:  # the OS refused (missing file, permissions)
        return DataError(str(path), f"cannot read: {quote(str(exc.strerror or exc), 200)[1:-1]}")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return DataError(str(path), f"not a readable Parquet file: {quote(first, 200)[1:-1]}")


def open_parquet(path: str | Path, columns: Sequence[str], prefixes: Sequence[str] = (),
                 *, max_rows: int | None = None) -> tuple[Any, Any]:
    """Open a Parquet file for reading ``columns`` with bounded memory, checking only its
    footer: its row count and the bytes its row groups declare (every other column is never
    read; the list values are counted once read, by :func:`read_columns`). Text columns are then read as dictionaries, so a value repeated
    in many rows (a question per branch, a dictionary bomb) is decoded once.

    Only the columns among ``columns`` or starting with one of ``prefixes`` count. Returns
    the ``ParquetFile`` and the file's own Arrow schema (types as written, for the caller's
    checks; missing columns are the caller's to report); raises one ``DataError`` line for a
    file that is not Parquet or breaks a limit.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    errors = (*_ARROW_ERRORS, pa.ArrowException)
    try:
        md = pq.read_metadata(path)
        schema = md.schema
        leaves = [schema.column(i) for i in range(len(schema))]
        arrow_schema = schema.to_arrow_schema()
    except errors as exc:
        raise _read_error(path, exc) from None
    found = [n for n in arrow_schema.names if n in set(columns) or n.startswith(tuple(prefixes))]
    mine = [i for i, leaf in enumerate(leaves)
            if any(leaf.path == n or leaf.path.startswith(n + ".") for n in found)]
    limit = MAX_ROWS if max_rows is None else max_rows
    if md.num_rows > limit:
        raise DataError(str(path), f"has {md.num_rows:,} rows; at most {limit:,} are read")
    try:
        # Row-group totals only: pyarrow's per-column-chunk metadata objects abort the whole
        # process (an uncaught C++ exception) on some corrupt footers, so they are never touched.
        declared = sum(md.row_group(g).total_byte_size for g in range(md.num_row_groups))
    except errors as exc:
        raise _read_error(path, exc) from None
    if declared > MAX_BYTES:
        raise DataError(str(path), f"its rows take {declared:,} bytes uncompressed; at most {MAX_BYTES:,} are read")
    text = [leaves[i].path for i in mine if leaves[i].physical_type == "BYTE_ARRAY"]
    try:
        return pq.ParquetFile(path, metadata=md, read_dictionary=text), arrow_schema
    except errors as exc:
        raise _read_error(path, exc) from None


def read_columns(pf: Any, path: str | Path, columns: Sequence[str]) -> Any:
    """Read ``columns`` of an :func:`open_parquet` file, and check what was decoded against
    the limits before anything becomes Python objects (a file can declare less than its
    pages hold)."""
    import pyarrow as pa

    path = Path(path)
    try:
        table = pf.read(columns=list(columns))
    except (*_ARROW_ERRORS, pa.ArrowException) as exc:
        raise _read_error(path, exc) from None
    if table.num_rows > MAX_ROWS:
        raise DataError(str(path), f"has {table.num_rows:,} rows; at most {MAX_ROWS:,} are read")
    values = text = 0
    for column in table.columns:
        for chunk in column.chunks:
            arr = chunk
            if _is_list(arr.type):
                values += len(arr.values)
                arr = arr.values
            if pa.types.is_dictionary(arr.type):
                text += arr.dictionary.nbytes
    if values > MAX_VALUES:
        raise DataError(str(path), f"its list columns hold {values:,} values; at most {MAX_VALUES:,} are read")
    if text > MAX_BYTES:
        raise DataError(str(path), f"its text takes {text:,} bytes; at most {MAX_BYTES:,} are read")
    return table


def pylist(column: Any, source: str, field: str) -> list[Any]:
    """A column (chunked) as Python values; dictionary-encoded text shares one ``str`` per
    distinct value, so memory follows the distinct text, not the rows."""
    import pyarrow as pa

    out: list[Any] = []
    try:
        for chunk in column.chunks:
            out.extend(_chunk_values(chunk))
    except UnicodeDecodeError as exc:
        raise DataError(source, f"text that is not UTF-8 ({quote(exc.reason, 60)[1:-1]})", field=field) from None
    except (*_ARROW_ERRORS, pa.ArrowException) as exc:  # indices out of range, corrupt buffers
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(source, f"not a readable column: {quote(first, 200)[1:-1]}", field=field) from None
    return out


def _chunk_values(arr: Any) -> list[Any]:
    import pyarrow as pa

    ty = arr.type
    if pa.types.is_dictionary(ty):
        values = arr.dictionary.to_pylist()
        return [None if i is None else values[i] for i in arr.indices.to_pylist()]
    if _is_list(ty) and pa.types.is_dictionary(ty.value_type):
        flat = _chunk_values(arr.values)
        offs = arr.offsets.to_pylist()
        nulls = arr.is_null().to_pylist()
        return [None if null else flat[offs[i]:offs[i + 1]] for i, null in enumerate(nulls)]
    return arr.to_pylist()


def load_table(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read the columns of the trajectory form (and nothing else) with bounded memory after
    checking the schema and the ``autotts.*`` metadata: anything wrong here makes the file
    unreadable. Returns the table and the parsed metadata."""
    import pyarrow as pa

    path = Path(path)
    pf, schema = open_parquet(path, COLUMNS, (SIGNAL_PREFIX,))
    meta = read_metadata(path, pf.metadata.metadata)
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise DataError(str(path), f"missing column{'s' if len(missing) > 1 else ''} "
                                   f"{', '.join(map(repr, missing))}; the trajectory form has {', '.join(COLUMNS)}")
    if len(set(schema.names)) != len(schema.names):
        dup = next(n for n in schema.names if schema.names.count(n) > 1)
        raise DataError(str(path), "appears more than once", field=quote(dup)[1:-1])
    t = pa.types
    kinds = {
        "problem": (t.is_integer, "an integer"), "branch": (t.is_integer, "an integer"),
        "interval_tokens": (t.is_integer, "an integer"), "branch_tokens": (t.is_integer, "an integer"),
        "question": (_is_string, "string"), "gold_answer": (_is_string, "string"),
        "final_answer": (_is_string, "string"),
        "probe_answers": (lambda ty: _is_list(ty) and _is_string(ty.value_type), "list<string>"),
    }
    signals = [n for n in schema.names if n.startswith(SIGNAL_PREFIX)]
    for name in signals:
        kinds[name] = (lambda ty: _is_list(ty) and (t.is_floating(ty.value_type) or t.is_integer(ty.value_type)),
                       "list<double>")
    for name, (ok, want) in kinds.items():
        ty = schema.field(name).type
        if not ok(ty):
            raise DataError(str(path), f"has type {quote(str(ty), 80)[1:-1]}, expected {want}",
                            field=quote(name)[1:-1])
    table = read_columns(pf, path, [*COLUMNS, *signals])
    for name in ("problem", "branch"):
        if table.column(name).null_count:
            raise DataError(str(path), "has null row indices", field=name)
    return table, meta


def _is_string(ty: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(ty):
        ty = ty.value_type
    return pa.types.is_string(ty) or pa.types.is_large_string(ty)


def _is_list(ty: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_list(ty) or pa.types.is_large_list(ty)


def table_records(table: Any, source: str, fail: IssueCollector) -> tuple[list[dict[str, Any]], list[int]]:
    """Group the rows back into published-form records (plus ``signals``), reporting rows
    that do not fit: gaps or duplicates in the indices, or per-problem values (question,
    gold answer, interval) that differ between a problem's rows.

    Returns the records and each one's problem index. A gap in the indices is reported
    once and never filled: a few rows can name problem 10^12, and records are only made
    for rows that exist, so memory follows the file's rows whatever its indices say.
    """
    cols = {name: pylist(table.column(name), source, name) for name in table.schema.names
            if name in COLUMNS or name.startswith(SIGNAL_PREFIX)}
    signal_names = [n for n in cols if n.startswith(SIGNAL_PREFIX)]
    order = sorted(range(len(cols["problem"])), key=lambda r: (cols["problem"][r], cols["branch"][r]))
    cols = {name: [values[r] for r in order] for name, values in cols.items()}
    pidx, bidx = cols["problem"], cols["branch"]
    records: list[dict[str, Any]] = []
    numbers: list[int] = []
    n = len(pidx)
    lo = 0
    expected_p = 0
    while lo < n:
        p = pidx[lo]
        hi = lo
        while hi < n and pidx[hi] == p:
            hi += 1
        if p < 0:
            fail("records", p, "problem", "negative problem index")
        elif p != expected_p:
            fail("records", expected_p, "problem", f"missing: the problem indices jump from {expected_p - 1} to {p}")
        expected_p = max(expected_p, p + 1)
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
                fail("signals", p, f"{quote(col)[1:-1]}[{nulls[0]}]", "null while other branches of this problem have values")
                continue
            signals[col[len(SIGNAL_PREFIX):]] = values
        if signals:
            rec["signals"] = signals
        records.append(rec)
        numbers.append(p)
        lo = hi
    return records, numbers


def check_parquet(path: str | Path, *, strict: bool = True, per_check: int = 20
                  ) -> tuple[StructureResult, dict[str, Any], list[dict[str, Any]], list[int]]:
    """Structural checks of a Parquet file (strict: raise at the first error), with its
    metadata, the rows regrouped as published-form records (for the validation suite) and
    each record's problem index."""
    path = Path(path)
    table, meta = load_table(path)
    fail = IssueCollector(str(path), strict, per_check)
    records, numbers = table_records(table, str(path), fail)
    if not records:
        fail("records", None, None, "no problems: the table has no rows")
        return StructureResult([], fail.issues, dict(fail.counts)), meta, records, numbers
    result = check_records(records, str(path), strict=strict, style=PARQUET_STYLE, collector=fail, numbers=numbers)
    return result, meta, records, numbers


def read_parquet(path: str | Path, provenance: Provenance | None = None) -> TrajectorySet:
    """Load the Parquet form; provenance from its metadata (model and benchmark from the path
    when the metadata has none), with ``source`` set to where it was loaded from."""
    path = Path(path)
    result, meta, _, _ = check_parquet(path, strict=True)
    for issue in result.issues:
        warnings.warn(DataWarning(issue.render(str(path))), stacklevel=2)
    if provenance is None:
        inferred = provenance_from_path(path)
        model, benchmark = meta.get("model", ""), meta.get("benchmark", "")
        if not (model and benchmark):
            model, benchmark = inferred.model, inferred.benchmark
        provenance = Provenance(model=model, benchmark=benchmark, source=str(path), sampling=meta.get("sampling", {}))
    return TrajectorySet(result.problems, provenance)
