"""Hostile files never escape the one-line-error rule.

Trajectory files (JSON and Parquet), question files for ``collect`` and a collection's work
folder are read by one bounded, validating path each: whatever bytes come in, the outcome
is a valid set or the project's one-line error (exit 2 from the CLI), in bounded memory,
with nothing half-written. Explicit cases for each reported hole, then hypothesis over the
parsers.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlflow_autotts.collect.run as collect_run
from mlflow_autotts.cli.main import main
from mlflow_autotts.collect.endpoints import Endpoint
from mlflow_autotts.collect.questions import QuestionFileError, read_questions
from mlflow_autotts.collect.run import collect
from mlflow_autotts.collect.shards import MANIFEST, ResumeError, Shards, work_dir
from mlflow_autotts.data import read_json, read_parquet, write_parquet
from mlflow_autotts.data.json_io import check_records, parse_json
from mlflow_autotts.data.parquet_io import to_table
from mlflow_autotts.data.trajectory import Problem, TrajectorySet
from mlflow_autotts.errors import AutoTTSError, DataError
from tests.helpers import COLLECT_LENGTHS, COLLECT_QUESTIONS, FailAfter, collect_config, random_set
from tests.live_fixtures import ScriptedBackend, char_prompts

REPO = Path(__file__).resolve().parents[1]
HUGE = "9" * 5000


def one_line(res, *needles: str) -> str:
    """The CLI's answer: exit 2 and a single ``error:`` line holding every needle."""
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, text
    assert len(text) < 1000, text
    for needle in needles:
        assert needle in text, text
    return text


def convert(src: Path, tmp_path: Path):
    """``autotts data convert``: a strict load, so bad input is exit 2."""
    return CliRunner().invoke(main, ["data", "convert", str(src), str(tmp_path / "out.json")])


def one_error(exc: BaseException) -> None:
    assert isinstance(exc, AutoTTSError) and exc.exit_code == 2
    assert "\n" not in str(exc) and len(str(exc)) < 1000, str(exc)


def published_records() -> list[dict]:
    ts = random_set(n_problems=2, n_branches=3, seed=1)
    return json.loads(json.dumps([{"question": p.question, "gold_answer": p.gold_answer,
                                   "probe_freq": p.branches.interval_tokens, "each_branch": p.branches.triples()}
                                  for p in ts.problems]))


def parquet_with(tmp_path: Path, name: str, *, meta: dict[bytes, bytes] | None = None,
                 column: tuple[str, pa.Array] | None = None, problems: int = 2) -> Path:
    """A valid Parquet set (3 branches a problem) with its metadata or one column replaced."""
    table = to_table(random_set(n_problems=problems, n_branches=3, seed=1))
    if meta is not None:
        table = table.replace_schema_metadata({**table.schema.metadata, **meta})
    if column is not None:
        name_, values = column
        i = table.schema.names.index(name_)
        table = table.set_column(i, pa.field(name_, values.type), values).replace_schema_metadata(table.schema.metadata)
    path = tmp_path / name
    pq.write_table(table, path)
    return path


# ------------------------------------------------------------------ trajectory files
def test_deeply_nested_json_is_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    one_line(convert(path, tmp_path), str(path), "nested too deeply")
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("where, field", [("probe_freq", "probe_freq"), ("tokens", "each_branch[1].branch_tokens")])
def test_a_5000_digit_integer_is_refused_at_its_field(tmp_path, where, field):
    recs = published_records()
    text = json.dumps(recs)
    if where == "probe_freq":
        text = text.replace('"probe_freq": 500', f'"probe_freq": {HUGE}', 1)
    else:
        tokens = recs[0]["each_branch"][1][1]
        text = text.replace(f', {tokens}, ', f', {HUGE}, ', 1)
    path = tmp_path / "big.json"
    path.write_text(text)
    one_line(convert(path, tmp_path), "problem 0", repr(field), "an integer of 5000 digits")
    res = CliRunner().invoke(main, ["data", "validate", str(path)])  # validation reports it, exit 1
    assert res.exit_code == 1 and "an integer of 5000 digits" in res.output and "Traceback" not in res.output


def test_an_integer_past_int64_is_refused_before_it_reaches_parquet(tmp_path):
    recs = published_records()
    recs[1]["each_branch"][0][1] = 2**64
    path = tmp_path / "wide.json"
    path.write_text(json.dumps(recs))
    one_line(convert(path, tmp_path), "problem 1", "each_branch[0].branch_tokens", "64-bit")


@pytest.mark.parametrize("meta, needle", [
    ({b"autotts.model": b"\xff\xfeQwen"}, "'autotts.model' is not UTF-8 text"),
    ({b"autotts.\xff": b"x"}, "metadata key"),
    ({b"autotts.sampling": b"[" * 50_000 + b"]" * 50_000}, "autotts.sampling nested too deeply"),
    ({b"autotts.sampling": b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}"}, "nested more than 16 levels"),
    ({b"autotts.sampling": b'{"temperature": ' + HUGE.encode() + b"}"}, "an integer of 5000 digits"),
    ({b"autotts.format_version": HUGE.encode()}, "bad metadata autotts.format_version"),
    ({b"autotts.interval_tokens": b"\xc3"}, "not UTF-8"),
])
def test_malformed_parquet_metadata_is_one_line(tmp_path, meta, needle):
    path = parquet_with(tmp_path, "meta.parquet", meta=meta)
    one_line(convert(path, tmp_path), str(path), needle)
    res = CliRunner().invoke(main, ["data", "validate", str(path)])
    one_line(res, needle)


def test_pandas_metadata_of_a_trajectory_file_is_not_read(tmp_path):
    path = parquet_with(tmp_path, "pandas.parquet", meta={b"pandas": b"{not json"})
    assert len(read_parquet(path)) == 2


def _jump_file(tmp_path: Path) -> Path:
    table = to_table(random_set(n_problems=2, n_branches=3, seed=1))
    problems = [p if p == 0 else 10**12 for p in table.column("problem").to_pylist()]
    path = parquet_with(tmp_path, "jump.parquet", column=("problem", pa.array(problems, pa.int64())))
    assert path.stat().st_size < 8000
    return path


def test_a_problem_index_jumping_to_1e12_is_reported_in_bounded_memory(tmp_path):
    """Validation used to build a placeholder record per missing index: 10^12 of them.
    Here it runs under a 3 GB address-space limit and reports the jump once."""
    path = _jump_file(tmp_path)
    limit = 3 << 30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "mlflow_autotts.cli", "data", "validate", str(path)],
                          capture_output=True, text=True, cwd=REPO, preexec_fn=cap,
                          env={**__import__("os").environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 1, proc.stderr  # the file reads, and fails its checks
    assert "problem 1, field 'problem': missing: the problem indices jump from 0 to 1000000000000" in proc.stdout
    assert "2 problems, 6 branches" in proc.stdout
    one_line(convert(path, tmp_path), "jump from 0 to 1000000000000")


def test_a_dictionary_bomb_is_decoded_once(tmp_path):
    """One 1 MB final answer repeated in 60 rows: 60 MB if every row became its own string."""
    big = "7" * (1 << 20)
    finals = pa.array([big] * 60, pa.string()).dictionary_encode()
    path = parquet_with(tmp_path, "bomb.parquet", column=("final_answer", finals), problems=20)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        ts = read_parquet(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ts.problems[0].branches.final_answers[0] == big
    assert peak < 16 << 20, peak


def test_footer_limits_refuse_before_reading_rows(tmp_path, monkeypatch):
    import mlflow_autotts.data.parquet_io as parquet_io

    path = tmp_path / "Synth/toy.parquet"
    path.parent.mkdir()
    write_parquet(random_set(n_problems=3, n_branches=4, seed=2), path)
    monkeypatch.setattr(parquet_io, "MAX_ROWS", 5)
    with pytest.raises(DataError, match=r"has 12 rows; at most 5 are read") as err:
        read_parquet(path)
    one_error(err.value)
    monkeypatch.setattr(parquet_io, "MAX_ROWS", 10**6)
    monkeypatch.setattr(parquet_io, "MAX_VALUES", 3)
    with pytest.raises(DataError, match=r"list columns hold .* values; at most 3 are read"):
        read_parquet(path)
    monkeypatch.setattr(parquet_io, "MAX_VALUES", 10**6)
    monkeypatch.setattr(parquet_io, "MAX_BYTES", 100)
    with pytest.raises(DataError, match=r"its rows take .* bytes uncompressed; at most 100 are read"):
        read_parquet(path)


def test_a_footer_that_aborts_pyarrows_metadata_objects_is_one_line(tmp_path):
    """A corrupt size histogram in a column chunk's footer entry (found by the property
    test below): reading that chunk's metadata object from Python aborts the process
    (pyarrow 25 throws a C++ exception it does not catch), reading the data raises. Run in
    a child so an abort is a failure, not the end of the test session."""
    path = tmp_path / "Synth" / "toy.parquet"
    path.parent.mkdir()
    write_parquet(random_set(n_problems=2, n_branches=3, seed=4), path)
    blob = bytearray(path.read_bytes())
    assert blob[1406] == 6, "the file's layout changed with pyarrow: find the histogram byte again"
    blob[1406] = 65
    path.write_bytes(bytes(blob))
    code = ("import sys\nfrom mlflow_autotts.data import read_parquet\nfrom mlflow_autotts.errors import DataError\n"
            "try:\n    read_parquet(sys.argv[1])\nexcept DataError as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"{path}: not a readable Parquet file: ") and proc.stdout.count("\n") == 1


def test_parquet_with_a_deeply_nested_extra_column_is_one_line(tmp_path):
    ty, value = pa.string(), "x"
    for _ in range(300):
        ty, value = pa.list_(ty), [value]
    table = to_table(random_set(n_problems=1, n_branches=2, seed=1))
    table = table.append_column("deep", pa.array([value] * table.num_rows, ty))
    path = tmp_path / "deep.parquet"
    pq.write_table(table, path)
    one_line(convert(path, tmp_path), str(path))


# ------------------------------------------------------------------ question files
def _collect_cli(tmp_path: Path, questions: Path):
    out = tmp_path / "new" / "c.parquet"
    res = CliRunner().invoke(main, ["collect", "-q", str(questions), "-o", str(out), "--model", "served-name",
                                    "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--no-progress",
                                    "--no-mlflow"])
    assert not out.parent.exists()  # refused before any server is asked or anything is written
    return res


def test_jsonl_mixing_objects_and_arrays_names_the_line(tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "a", "answer": "1"}\n\n["not", "an", "object"]\n')
    one_line(_collect_cli(tmp_path, q), f"{q}: line 3: expected a JSON object", "got a list of 3 items")


@pytest.mark.parametrize("text, needle", [
    ('{"question": ' + "[" * 5000 + "]" * 5000 + ', "answer": "1"}\n', "line 1: JSON nested too deeply"),
    (b'{"question": "\xff", "answer": "1"}\n', "line 1: not UTF-8 text"),
    ('{"question": "q", "answer": ' + HUGE + "}\n", "row 1: 'answer' is an integer of 5000 digits"),
    ('{"question": "q", "answer": "1"}\n{"question": {"text": "q"}, "answer": "1"}\n', "row 2: 'question' is an object"),
    ('{"question": "q", "answer": true}\n', "row 1: 'answer' is boolean true"),
])
def test_hostile_jsonl_cells_are_one_line(tmp_path, text, needle):
    q = tmp_path / "q.jsonl"
    q.write_bytes(text if isinstance(text, bytes) else text.encode())
    one_line(_collect_cli(tmp_path, q), str(q), needle)


@pytest.mark.parametrize("pandas_meta", [b"{not json", json.dumps({"index_columns": ["nope"], "columns": 5}).encode()])
def test_bad_pandas_metadata_in_a_question_parquet_is_ignored(tmp_path, pandas_meta):
    table = pa.table({"question": ["Q one", "Q two"], "answer": ["7", "12"]})
    path = tmp_path / "q.parquet"
    pq.write_table(table.replace_schema_metadata({b"pandas": pandas_meta}), path)
    assert [(q.text, q.gold) for q in read_questions(path).questions] == [("Q one", "7"), ("Q two", "12")]


@pytest.mark.parametrize("column, values, needle", [
    ("question", pa.array([["a", "b"], ["c"]]), "row 1: 'question' is a list of 2 items, not text"),
    ("question", pa.array([None, {"x": 1}], pa.struct([("x", pa.int64())])), "row 2: 'question' is an object, not text"),
    ("answer", pa.array([b"7", b"12"]), "row 1: 'answer' is bytes, not text"),
])
def test_lists_structs_and_bytes_in_a_question_parquet_are_refused_by_row(tmp_path, column, values, needle):
    cols = {"question": pa.array(["Q one", "Q two"]), "answer": pa.array(["7", "12"])}
    if column == "question" and values.null_count:  # row 1 stays text: row 2 is the bad one
        values = pa.array([{"x": 0}, {"x": 1}], values.type)
        needle = "row 1: 'question' is an object, not text"
    cols[column] = values
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table(cols), path)
    with pytest.raises(QuestionFileError) as err:
        read_questions(path)
    one_error(err.value)
    assert needle in str(err.value)
    one_line(_collect_cli(tmp_path, path), needle)


# ------------------------------------------------------------------ collect --resume
def _interrupted(tmp_path: Path):
    cfg = collect_config(tmp_path, concurrency=1)
    with pytest.raises(AutoTTSError):
        collect(cfg, backend=FailAfter(COLLECT_LENGTHS, interval=4, ok_calls=25), prompts=char_prompts(),
                warn=lambda m: None)
    folder = work_dir(cfg.output)
    assert (folder / "q000000.parquet").is_file() and not Path(cfg.output).exists()
    return cfg, folder


def _resume_cli(tmp_path: Path, cfg, monkeypatch):
    """``autotts collect --resume`` with the run's settings, on the scripted backend."""
    monkeypatch.setattr(collect_run, "open_endpoints",
                        lambda config, warn: [Endpoint("in-process", ScriptedBackend(COLLECT_LENGTHS, interval=4))])
    monkeypatch.setattr(collect_run.ChatPrompts, "from_pretrained", classmethod(lambda cls, *a, **k: char_prompts()))
    settings_file = tmp_path / "collect.yaml"
    values = {k: getattr(cfg, k) for k in ("questions", "output", "model", "branches", "interval_tokens",
                                           "max_tokens_per_branch", "top_logprobs", "group_window", "instruction",
                                           "concurrency")}
    settings_file.write_text(yaml.safe_dump({**values, "live": {"probe_tokens": 4}}))
    return CliRunner().invoke(main, ["collect", "--config", str(settings_file), "--resume", "--no-progress",
                                     "--no-mlflow"])


@pytest.mark.parametrize("manifest, needle", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object of settings, got a list of 2 items"),
    (b"\xff\xfe", "not UTF-8 text"),
    (b"[" * 50_000, "nested too deeply"),
    (b'{"temperature": ' + HUGE.encode() + b"}", "an integer of 5000 digits"),
])
def test_a_malformed_manifest_is_one_line(tmp_path, monkeypatch, manifest, needle):
    cfg, folder = _interrupted(tmp_path)
    (folder / MANIFEST).write_bytes(manifest)
    one_line(_resume_cli(tmp_path, cfg, monkeypatch), str(folder / MANIFEST), needle)
    assert not Path(cfg.output).exists()


def test_resume_refuses_a_shard_that_is_not_its_question_row(tmp_path, monkeypatch):
    cfg, folder = _interrupted(tmp_path)
    shard = folder / "q000001.parquet"
    original = read_parquet(shard)
    forged = Problem(original.problems[0].branches, gold_answer="999")  # the same question, another gold answer
    write_parquet(TrajectorySet([forged], original.provenance), shard)
    one_line(_resume_cli(tmp_path, cfg, monkeypatch), str(shard), "gold answer '999' is not row 2's '4'")
    assert not Path(cfg.output).exists() and shard.is_file()

    other = random_set(n_problems=1, n_branches=4, seed=9)  # another question altogether
    write_parquet(other, shard)
    one_line(_resume_cli(tmp_path, cfg, monkeypatch), str(shard), "its question", "is not row 2's 'What is 2 + 2?'")
    assert not Path(cfg.output).exists()


def test_merge_checks_every_shard_against_its_row(tmp_path):
    """A shard swapped in after it was written (or written for a row the file lacks) is
    refused when the set is published, not published under the question file's sha256."""
    cfg, folder = _interrupted(tmp_path)
    questions = read_questions(cfg.questions).questions
    shards = Shards(cfg.output)
    first = folder / "q000000.parquet"
    first.replace(folder / "q000001.parquet.bak")
    (folder / "q000001.parquet").replace(first)  # question 2's branches as question 1's shard
    with pytest.raises(ResumeError, match=r"q000000\.parquet: its question 'What is 2 \+ 2\?' is not row 1's") as err:
        shards.merge(questions, read_parquet(first).provenance)
    one_error(err.value)
    (folder / "q000001.parquet.bak").replace(first)  # question 1's own shard again
    write_parquet(read_parquet(first), folder / "q000007.parquet")
    with pytest.raises(ResumeError, match=r"a shard for row 8, but the question file has 5 questions"):
        shards.open(json.loads((folder / MANIFEST).read_text()), resume=True, questions=questions)


def test_resume_with_honest_shards_still_publishes(tmp_path, monkeypatch):
    cfg, _ = _interrupted(tmp_path)
    res = _resume_cli(tmp_path, cfg, monkeypatch)
    assert res.exit_code == 0, res.output
    ts = read_parquet(cfg.output)
    assert [(p.question, p.gold_answer) for p in ts.problems] == \
        [(q["question"], q["answer"]) for q in COLLECT_QUESTIONS]


# ------------------------------------------------------------------ properties
def _json_values(leaves: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["question", "gold_answer", "probe_freq", "each_branch", "final_answers_trace", "signals",
                         "confidence", "x"]) | st.text(max_size=4), inner, max_size=5), max_leaves=40)


json_values = _json_values(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8))
"""Anything ``json.dumps`` can write."""
python_values = _json_values(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
                             | st.text(max_size=8) | st.integers(63, 6000).map(lambda n: 10**n))
"""Also integers no JSON parse of ours hands over (past int64, past Python's 4,300-digit str limit)."""

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mutated(records: list, data: st.DataObject) -> list:
    """Valid records with one value somewhere replaced by an arbitrary JSON value."""
    node, path = records, []
    while isinstance(node, (list, dict)) and node and data.draw(st.booleans()):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        path.append(key)
        node = node[key]
    if not path:
        return data.draw(python_values)
    parent = records
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = data.draw(python_values)
    return records


def test_a_signal_value_past_float_range_is_refused_at_its_place():
    recs = published_records()
    recs[1]["signals"] = {"confidence": [[0.5] * len(br[0]) for br in recs[1]["each_branch"]]}
    b = next(i for i, br in enumerate(recs[1]["each_branch"]) if br[0])
    recs[1]["signals"]["confidence"][b][0] = 10**400
    with pytest.raises(DataError, match=rf"problem 1, field 'signals.confidence\[{b}\]\[0\]': expected a number") as err:
        check_records(recs, "f.json")
    one_error(err.value)


@PROPERTY
@given(data=st.data())
def test_any_json_structure_is_a_set_or_one_data_error(data):
    records = data.draw(st.one_of(python_values, st.just(None).map(lambda _: _mutated(published_records(), data))))
    for strict in (True, False):
        try:
            result = check_records(records, "f.json", strict=strict)
        except DataError as exc:
            one_error(exc)
            continue
        for issue in result.issues:
            assert "\n" not in issue.render("f.json")


def _wrapped(inner: str, depth: int) -> str:
    return "[" * depth + inner + "]" * depth


hostile_json = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.builds(_wrapped, st.sampled_from(["", "1", '{"a": 2}']), st.integers(0, 5000)).map(str.encode),
    st.builds(lambda n, where: json.dumps(published_records()).replace('"probe_freq": 500',
                                                                     f'"probe_freq": {"9" * n}', where),
              st.integers(1, 6000), st.integers(0, 2)).map(str.encode),
)


@PROPERTY
@given(blob=hostile_json)
def test_any_bytes_as_a_json_file_load_or_fail_in_one_line(tmp_path, blob):
    path = tmp_path / "Synth" / "x.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(blob)
    try:
        read_json(path)
    except DataError as exc:
        one_error(exc)


@PROPERTY
@given(text=st.text(alphabet='[]{}"0123456789-.,:eE truefalsn\\x', max_size=200))
def test_parse_json_raises_only_data_error(text):
    try:
        parse_json(text.encode(), "f.json")
    except DataError as exc:
        one_error(exc)


@pytest.fixture(scope="module")
def parquet_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("pq") / "good.parquet"
    write_parquet(random_set(n_problems=2, n_branches=3, seed=4), path)
    return path.read_bytes()


@PROPERTY
@given(data=st.data())
def test_corrupted_parquet_reads_or_fails_in_one_line(tmp_path, parquet_bytes, data):
    blob = bytearray(parquet_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    path = tmp_path / "Synth" / "x.parquet"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(bytes(blob))
    try:
        read_parquet(path)
    except DataError as exc:
        one_error(exc)


@PROPERTY
@given(meta=st.dictionaries(st.sampled_from([b"autotts.sampling", b"autotts.interval_tokens", b"autotts.model",
                                             b"autotts.format_version", b"autotts.benchmark"]) | st.binary(max_size=12),
                            st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()), max_size=4))
def test_any_parquet_metadata_reads_or_fails_in_one_line(tmp_path, meta):
    path = parquet_with(tmp_path, "m.parquet", meta=meta)
    try:
        read_parquet(path)
    except DataError as exc:
        one_error(exc)


@PROPERTY
@given(lines=st.lists(json_values.map(json.dumps) | st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
                      max_size=5))
def test_any_jsonl_question_file_reads_or_fails_in_one_line(tmp_path, lines):
    path = tmp_path / "q.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
    try:
        qf = read_questions(path)
    except QuestionFileError as exc:
        one_error(exc)
    else:
        assert all(isinstance(q.text, str) and q.text.strip() and isinstance(q.gold, str) for q in qf.questions)


@PROPERTY
@given(blob=st.binary(max_size=200))
def test_any_bytes_as_a_csv_or_parquet_question_file_read_or_fail_in_one_line(tmp_path, blob):
    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"q{suffix}"
        path.write_bytes(blob)
        try:
            read_questions(path)
        except QuestionFileError as exc:
            one_error(exc)


@PROPERTY
@given(blob=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_manifest_resumes_or_fails_in_one_line(tmp_path, blob):
    out = tmp_path / "c.parquet"
    folder = work_dir(out)
    folder.mkdir(exist_ok=True)
    (folder / MANIFEST).write_bytes(blob)
    try:
        Shards(out).open({"temperature": 0.7}, resume=True)
    except ResumeError as exc:
        one_error(exc)
