"""Published JSON and Parquet forms: lossless round trips and one-line errors that
name the file, the problem and the field for every kind of bad input; and, by property, the
one parser of the ``[probe_answers, branch_tokens, final_answer]`` triple that files and
served requests share (``data.triples``)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_autotts.data import DataWarning, read_json, read_parquet, write_json, write_parquet
from mlflow_autotts.data import triples as tp
from mlflow_autotts.data.json_io import FILE_TRIPLES, check_records
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.data.uris import SHA256
from mlflow_autotts.errors import DataError
from mlflow_autotts.serving.payload import REQUEST_TRIPLES, TrajectoryError, parse_trajectory
from tests.helpers import random_set


def records(n_problems: int = 3, n_branches: int = 4) -> list[dict]:
    """Published-form records with unicode text, empty probe lists and zero-token branches."""
    out = []
    for p in range(n_problems):
        each = [[[f"{(p + b + k) % 3}" for k in range(b % 3)],
                 0 if b == 0 else 450 * b + p,
                 "ERR" if b == 1 else str(b % 2)] for b in range(n_branches)]
        out.append({"question": f"Problem {p}: √2 · ü ∑ “quotes”",
                    "final_answers_trace": [br[2] for br in each],
                    "each_branch": each, "gold_answer": str(p % 2), "probe_freq": 500})
    return out


def dump(path: Path, recs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recs, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def same_set(a: TrajectorySet, b: TrajectorySet) -> None:
    assert len(a) == len(b)
    for pa_, pb in zip(a.problems, b.problems):
        x, y = pa_.branches, pb.branches
        assert pa_.gold_answer == pb.gold_answer and x.question == y.question
        assert x.interval_tokens == y.interval_tokens
        assert x.probe_answers == y.probe_answers and x.probe_offsets == y.probe_offsets
        assert x.branch_tokens == y.branch_tokens and x.final_answers == y.final_answers
        assert x.signals.keys() == y.signals.keys()
        for k in x.signals:
            assert [v if not math.isnan(v) else "nan" for v in x.signals[k]] == \
                   [v if not math.isnan(v) else "nan" for v in y.signals[k]]


def with_signals() -> TrajectorySet:
    """A set whose problems carry different signals (one has none), with NaN and negatives."""
    base = random_set(n_problems=3, n_branches=5, seed=3)
    problems = []
    for p, prob in enumerate(base.problems):
        br = prob.branches
        n = len(br.probe_answers)
        signals = {} if p == 1 else {"confidence": [round(0.01 * i, 6) for i in range(n)]}
        if p == 2:
            signals["entropy"] = [-1.5 if i % 4 else float("nan") for i in range(n)]
        problems.append(Problem(Branches(br.question, br.interval_tokens, br.probe_answers, br.probe_offsets,
                                         br.branch_tokens, br.final_answers, signals), prob.gold_answer))
    return TrajectorySet(problems, Provenance("Synth-1B", "toy", "synthetic", {"temperature": 0.7, "top_p": 0.95}))


# ------------------------------------------------------------------------ round trips
def test_json_round_trip_keeps_content_and_infers_provenance(tmp_path):
    src = dump(tmp_path / "Qwen3-4B" / "aime24.json", records())
    ts = read_json(src)
    assert ts.name == "Qwen3-4B/aime24" and ts.provenance.source == str(src)
    assert ts.problems[0].branches.n_probes == [0, 1, 2, 0]
    out = tmp_path / "out.json"
    write_json(ts, out)
    assert json.loads(out.read_text(encoding="utf-8")) == records()
    assert out.read_bytes() == src.read_bytes()  # same layout as the published files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Qwen3-4B", "out.json"]  # no temp files left


def test_name_comes_from_the_last_two_path_parts_when_they_are_plain_names(tmp_path):
    assert read_json(dump(tmp_path / "results" / "run-2.json", records())).name == "results/run-2"
    odd = dump(tmp_path / "my results" / "run.json", records())
    ts = read_json(odd)
    assert ts.provenance.model == "" and ts.name == str(odd)


def test_parquet_round_trip_with_signals_and_provenance(tmp_path):
    ts = with_signals()
    path = tmp_path / "toy.parquet"
    write_parquet(ts, path)
    schema = pq.read_schema(path)
    assert {"signal.confidence", "signal.entropy"} <= set(schema.names)
    assert schema.field("probe_answers").type == pa.list_(pa.string())
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items() if k.startswith(b"autotts.")}
    assert meta["autotts.model"] == "Synth-1B" and json.loads(meta["autotts.sampling"])["temperature"] == 0.7
    assert meta["autotts.format_version"] == "1" and meta["autotts.interval_tokens"] == "500"
    back = read_parquet(path)
    same_set(ts, back)
    assert back.provenance == Provenance("Synth-1B", "toy", str(path), {"temperature": 0.7, "top_p": 0.95})
    assert pq.read_table(path).num_rows == 15


def test_signals_survive_json_too(tmp_path):
    ts = with_signals()
    ts.problems[2].branches.signals["entropy"][:] = [0.5] * len(ts.problems[2].branches.signals["entropy"])
    write_json(ts, tmp_path / "s.json")
    same_set(ts, read_json(tmp_path / "s.json"))
    recs = json.loads((tmp_path / "s.json").read_text())
    assert "signals" not in recs[1] and set(recs[2]["signals"]) == {"confidence", "entropy"}


def test_json_refuses_nan_signals_and_leaves_nothing(tmp_path):
    with pytest.raises(DataError, match=r"problem 2, field 'signals.entropy': JSON cannot hold NaN"):
        write_json(with_signals(), tmp_path / "s.json")
    assert list(tmp_path.iterdir()) == []


def test_published_file_json_parquet_json_is_byte_identical(data_dir, tmp_path):
    src = data_dir / "Qwen3-4B" / "aime24.json"
    ts = read_json(src)
    assert len(ts) == 30 and {p.branches.n_branches for p in ts.problems} == {128}
    write_parquet(ts, tmp_path / "Qwen3-4B.parquet")
    back = read_parquet(tmp_path / "Qwen3-4B.parquet")
    same_set(ts, back)
    write_json(back, tmp_path / "back.json")
    parsed = json.loads((tmp_path / "back.json").read_text(encoding="utf-8"))
    assert parsed == json.loads(src.read_text(encoding="utf-8"))
    assert hashlib.sha256((tmp_path / "back.json").read_bytes()).hexdigest() == SHA256["Qwen3-4B/aime24"]


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "x.parquet"
    write_parquet(random_set(2, 3), path)
    before = path.read_bytes()

    def broken(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(DataError, match="cannot write: No space left on device"):
        write_parquet(random_set(2, 3, seed=9), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


# ------------------------------------------------------------------------ bad JSON input
def _set(path, value):
    def mutate(recs):
        target = recs
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _del(p, key):
    def mutate(recs):
        del recs[p][key]
    return mutate


BAD_JSON = [
    ("branch with 2 fields", _set([1, "each_branch", 2], [["1"], 700]), 1, "each_branch[2]",
     "expected 3 fields [probe_answers, branch_tokens, final_answer], got 2"),
    ("negative tokens", _set([2, "each_branch", 3, 1], -5), 2, "each_branch[3].branch_tokens",
     "expected a non-negative integer, got -5"),
    ("boolean tokens", _set([0, "each_branch", 1, 1], True), 0, "each_branch[1].branch_tokens",
     "expected a non-negative integer, got boolean true"),
    ("float tokens", _set([0, "each_branch", 1, 1], 12.5), 0, "each_branch[1].branch_tokens",
     "expected a non-negative integer, got number 12.5"),
    ("non-string final answer", _set([1, "each_branch", 1, 2], 42), 1, "each_branch[1].final_answer",
     "expected a string, got 42"),
    ("non-string probe answer", _set([2, "each_branch", 2, 0, 1], None), 2, "each_branch[2].probe_answers[1]",
     "expected a string, got null"),
    ("probe answers not a list", _set([0, "each_branch", 3, 0], "1,2"), 0, "each_branch[3].probe_answers",
     "expected a list of strings, got string '1,2'"),
    ("branch not a list", _set([0, "each_branch", 0], {"a": 1}), 0, "each_branch[0]",
     "expected 3 fields [probe_answers, branch_tokens, final_answer], got an object"),
    ("empty branch list", _set([2, "each_branch"], []), 2, "each_branch",
     "expected a non-empty list of branches, got an empty list"),
    ("branches not a list", _set([1, "each_branch"], "many"), 1, "each_branch",
     "expected a non-empty list of branches, got string 'many'"),
    ("missing gold answer", _del(1, "gold_answer"), 1, "gold_answer", "missing"),
    ("missing branches", _del(0, "each_branch"), 0, "each_branch", "missing"),
    ("question not a string", _set([0, "question"], 7), 0, "question", "expected a string, got 7"),
    ("gold answer not a string", _set([2, "gold_answer"], 17), 2, "gold_answer", "expected a string, got 17"),
    ("zero probe_freq", _set([1, "probe_freq"], 0), 1, "probe_freq", "expected a positive integer"),
    ("string probe_freq", _set([1, "probe_freq"], "500"), 1, "probe_freq", "got string '500'"),
    ("trace disagrees", _set([2, "final_answers_trace", 3], "99"), 2, "final_answers_trace[3]",
     "string '99' differs from the branch's final answer"),
    ("trace too short", _set([0, "final_answers_trace"], ["1"]), 0, "final_answers_trace",
     "has 1 entries but each_branch has 4 branches"),
]


@pytest.mark.parametrize("case, mutate, problem, field, message", BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_names_file_problem_and_field(tmp_path, case, mutate, problem, field, message):
    recs = copy.deepcopy(records())
    mutate(recs)
    path = dump(tmp_path / "bad.json", recs)
    with pytest.raises(DataError) as err:
        read_json(path)
    text = str(err.value)
    assert text.startswith(f"{path}: problem {problem}, field {field!r}: ")
    assert message in text and "\n" not in text


@pytest.mark.parametrize("content, message", [
    (None, "not valid JSON: truncated, the file ends at line"),
    ('[{"question": "q",, }]', "not valid JSON at line 1 column 19 (char 18): Expecting property name"),
    ('{"question": "q"}', "expected a list of problems at the top level, got an object"),
    ("[]", "no problems: the list is empty"),
    ('[1]', "problem 0: expected an object with keys question, gold_answer, probe_freq, each_branch, got 1"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe", "not UTF-8 text"),
])
def test_unreadable_json_is_one_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if content is None:  # a published-shaped file cut in the middle of a branch
        full = json.dumps(records(), indent=2).encode()
        path.write_bytes(full[: len(full) // 2])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(DataError) as err:
        read_json(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.json: cannot read: No such file or directory"):
        read_json(tmp_path / "nope.json")


def test_different_branch_counts_load_with_a_warning(tmp_path):
    recs = records(n_problems=4, n_branches=4)
    recs[2]["each_branch"] = recs[2]["each_branch"][:3]
    del recs[2]["final_answers_trace"]
    with pytest.warns(DataWarning, match=r"branch counts differ across problems: 4 in most, but problem 2 has 3"):
        ts = read_json(dump(tmp_path / "odd.json", recs))
    assert [p.branches.n_branches for p in ts.problems] == [4, 4, 3, 4]


# ------------------------------------------------------------------------ bad Parquet input
def _table(tmp_path) -> pa.Table:
    path = tmp_path / "good.parquet"
    write_parquet(read_json(dump(tmp_path / "src.json", records())), path)
    return pq.read_table(path)


def _write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


def _replace(table: pa.Table, column: str, rows: int | range, value, type_=None) -> pa.Table:
    values = table.column(column).to_pylist()
    for row in (rows if isinstance(rows, range) else [rows]):
        values[row] = value
    i = table.schema.get_field_index(column)
    return table.set_column(i, table.schema.field(i).with_type(type_ or table.schema.field(i).type),
                            pa.array(values, type_ or table.schema.field(i).type))


@pytest.mark.parametrize("edit, problem, field, message", [
    (lambda t: _replace(t, "branch_tokens", 6, -3), 1, "branch_tokens[2]", "expected a non-negative integer, got -3"),
    (lambda t: _replace(t, "final_answer", 9, None), 2, "final_answer[1]", "expected a string, got null"),
    (lambda t: _replace(t, "probe_answers", 10, ["1", None]), 2, "probe_answers[2][1]", "expected a string, got null"),
    (lambda t: _replace(t, "probe_answers", 3, None), 0, "probe_answers[3]", "expected a list of strings, got null"),
    (lambda t: _replace(t, "question", 5, "another question"), 1, "question",
     "differs between branch 0 and branch 1 (one value per problem)"),
    (lambda t: _replace(t, "interval_tokens", range(4), 0), 0, "interval_tokens", "expected a positive integer"),
    (lambda t: _replace(t, "branch", 7, 2), 1, "branch", "branch 2 appears twice"),
    (lambda t: t.filter(pa.array([i != 5 for i in range(t.num_rows)])), 1, "branch", "branch 1 is missing"),
])
def test_bad_parquet_names_file_problem_and_column(tmp_path, edit, problem, field, message):
    path = _write(edit(_table(tmp_path)), tmp_path / "bad.parquet")
    with pytest.raises(DataError) as err:
        read_parquet(path)
    text = str(err.value)
    assert text.startswith(f"{path}: problem {problem}, field {field!r}: ") and message in text and "\n" not in text


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.drop_columns(["branch_tokens"]), "missing column 'branch_tokens'"),
    (lambda t: t.set_column(6, "branch_tokens", pa.array([str(v) for v in t.column("branch_tokens").to_pylist()])),
     "field 'branch_tokens': has type string, expected an integer"),
    (lambda t: t.replace_schema_metadata({b"autotts.format_version": b"7"}), "written in trajectory format 7"),
])
def test_unreadable_parquet_is_one_line(tmp_path, edit, message):
    path = _write(edit(_table(tmp_path)), tmp_path / "bad.parquet")
    with pytest.raises(DataError) as err:
        read_parquet(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value) and "\n" not in str(err.value)


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_text("[]")
    with pytest.raises(DataError, match=r"x.parquet: not a readable Parquet file"):
        read_parquet(path)


# ------------------------------------------------------------------ the one triple parser
_junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.just(2**63), st.floats(allow_nan=False),
                  st.text(max_size=3), st.lists(st.text(max_size=2), max_size=2))
_field = st.one_of(st.lists(st.one_of(st.text(max_size=3), _junk), max_size=3), st.integers(0, 10**6), _junk)
_any_triples = st.lists(st.one_of(st.lists(_field, min_size=3, max_size=3), st.lists(_field, max_size=4), _junk),
                        min_size=1, max_size=5)


def _slow(value, rules):
    """Columns by the checking loop alone (no fast path), or the faults by branch."""
    flat, offsets, tokens, finals, faults = [], [0], [], [], {}
    for b, br in enumerate(value):
        parsed = tp.parse_triple(br, rules)
        if type(parsed) is list:
            faults[b] = parsed
            continue
        flat.extend(parsed[0])
        offsets.append(len(flat))
        tokens.append(parsed[1])
        finals.append(parsed[2])
    return faults or (flat, offsets, tokens, finals)


@settings(max_examples=300, deadline=None)
@given(value=_any_triples, rules=st.sampled_from([FILE_TRIPLES, REQUEST_TRIPLES]))
def test_the_fast_path_and_the_checking_loop_parse_any_branch_list_alike(value, rules):
    heard = {}
    columns = tp.parse_triples(value, rules, heard.__setitem__)
    slow = _slow(value, rules)
    if heard:
        assert heard == slow  # every bad branch, each with every fault of its own
    else:
        assert columns == slow


@settings(max_examples=300, deadline=None)
@given(value=_any_triples)
def test_both_readers_refuse_exactly_the_branches_the_parser_faults_naming_the_first(value):
    file_faults = _slow(value, FILE_TRIPLES)
    rec = {"question": "q", "gold_answer": "1", "probe_freq": 500, "each_branch": value}
    issues = check_records([rec], "f.json", strict=False).issues
    if isinstance(file_faults, dict):
        assert {i.field.split("]")[0] + "]" for i in issues} == {f"each_branch[{b}]" for b in file_faults}
        assert len(issues) == sum(map(len, file_faults.values()))
    else:
        assert not issues
    request_faults = _slow(value, REQUEST_TRIPLES)
    if isinstance(request_faults, dict):
        with pytest.raises(TrajectoryError, match=rf"^branch {min(request_faults)}: "):
            parse_trajectory(value, "q")
    else:
        assert parse_trajectory(value, "q").n_branches == len(value)


def test_each_reader_words_the_same_fault_its_own_way():
    bad = [[["1"], -5, "1"], [["1"], 2**63, "1"], [["1"], 3, None]]
    assert tp.parse_triple(bad[0], FILE_TRIPLES) == [tp.Fault(tp.NEGATIVE, -5)]
    assert tp.parse_triple(bad[1], FILE_TRIPLES) == [tp.Fault(tp.TOO_LARGE, 2**63)]
    assert tp.parse_triple(bad[1], REQUEST_TRIPLES) == (["1"], 2**63, "1")  # requests have no int64 bound
    issues = check_records([{"question": "q", "gold_answer": "1", "probe_freq": 500, "each_branch": bad}],
                           "f.json", strict=False).issues
    assert [(i.field, i.message) for i in issues] == [
        ("each_branch[0].branch_tokens", "expected a non-negative integer, got -5"),
        ("each_branch[1].branch_tokens", "9223372036854775808 is past the 64-bit range token counts are stored in"),
        ("each_branch[2].final_answer", "expected a string, got null")]
    with pytest.raises(TrajectoryError, match=r"^branch 0: branch_tokens must be >= 0, got -5$"):
        parse_trajectory(bad, "q")
    # a branch with a bad token count and a bad final answer: the request names the answer first
    with pytest.raises(TrajectoryError, match=r"^branch 0: final_answer must be a string, got None$"):
        parse_trajectory([[["1"], -1, None]], "q")
