"""Validation reports (structural checks + the great-expectations suite) and the
``autotts data`` commands through a root group that handles errors like the real one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mlflow_autotts.data import read_parquet, write_json, write_parquet
from mlflow_autotts.cli.data import data_group
from mlflow_autotts.data.validate import ValidationReport, validate_uri, validate_uris
from mlflow_autotts.errors import AutoTTSError, DataError
from tests.helpers import random_set


class _Root(click.Group):
    """Mimics the ``autotts`` root: AutoTTSError -> ``error: <message>`` on stderr, exit 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AutoTTSError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def run_cli(group: click.Group, args: list[str]):
    root = _Root("autotts")
    root.add_command(group)
    return CliRunner().invoke(root, [group.name, *args], catch_exceptions=False)


def toy(tmp_path: Path, name: str = "Synth-1B/toy.json", **kw) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(random_set(**{"n_problems": 4, "n_branches": 6, **kw}), path)
    return path


def edit(path: Path, fn) -> Path:
    recs = json.loads(path.read_text())
    fn(recs)
    path.write_text(json.dumps(recs))
    return path


def check(report: ValidationReport, name: str):
    return next(c for c in report.checks if c.name == name)


# ------------------------------------------------------------------------ validate API
def test_published_file_passes_every_check(data_dir):
    report = validate_uri(str(data_dir / "Qwen3-4B" / "aime24.json"))
    assert report.passed and (report.n_problems, report.n_branches) == (30, 3840)
    assert all(c.passed for c in report.checks)
    names = [c.name for c in report.checks]
    assert "structure: branch tokens" in names and "expectation: branch_tokens >= 0" in names
    assert check(report, "expectation: branches per problem consistent").details == "every problem has 128 branches"


def test_report_collects_every_issue_with_its_place(tmp_path):
    def break_it(recs):
        recs[1]["each_branch"][0][1] = -5
        recs[1]["each_branch"][3][1] = -1
        recs[2]["each_branch"][4][2] = 7
        recs[3]["each_branch"][2] = recs[3]["each_branch"][2][:2]
        del recs[0]["final_answers_trace"]

    path = edit(toy(tmp_path), break_it)
    report = validate_uri(str(path))
    assert not report.passed
    tokens = check(report, "structure: branch tokens")
    assert not tokens.passed and tokens.details == (
        "2 issues: problem 1, field 'each_branch[0].branch_tokens': expected a non-negative integer, got -5; "
        "problem 1, field 'each_branch[3].branch_tokens': expected a non-negative integer, got -1")
    assert "problem 2, field 'each_branch[4].final_answer': expected a string, got 7" in check(
        report, "structure: final answers").details
    assert "problem 3, field 'each_branch[2]': expected 3 fields" in check(report, "structure: branch shape").details
    ge = check(report, "expectation: branch_tokens >= 0")
    assert not ge.passed and ge.details.startswith("2 of 24 rows unexpected, e.g. problem 1 branch 0: -5")
    assert not check(report, "expectation: final_answer is a string").passed
    assert check(report, "expectation: question is a string").passed
    text = report.format()
    assert "FAIL  structure: branch tokens" in text and text.splitlines()[-1].startswith("  => FAILED:")


def test_different_branch_counts_are_a_warning_not_a_failure(tmp_path):
    def drop(recs):
        recs[2]["each_branch"].pop()
        recs[2]["final_answers_trace"].pop()

    report = validate_uri(str(edit(toy(tmp_path), drop)))
    assert report.passed
    assert [c.name for c in report.warnings] == ["structure: branch counts",
                                                 "expectation: branches per problem consistent"]
    assert "problem 2 has 5" in report.warnings[0].details
    assert "1 warning" not in report.format() and "2 warnings" in report.format()


def test_parquet_is_validated_by_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "Synth-1B" / "toy.parquet"
    path.parent.mkdir()
    write_parquet(random_set(3, 4), path)
    table = pq.read_table(path)
    tokens = table.column("branch_tokens").to_pylist()
    tokens[5] = -9
    pq.write_table(table.set_column(6, "branch_tokens", pa.array(tokens, pa.int64())), path)
    report = validate_uri(str(path))
    assert not report.passed
    assert "problem 1, field 'branch_tokens[1]': expected a non-negative integer, got -9" in check(
        report, "structure: branch tokens").details
    assert "structure: final_answers_trace" not in [c.name for c in report.checks]  # JSON-only field


def test_unreadable_input_raises(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"question": ')
    with pytest.raises(DataError, match="not valid JSON: truncated"):
        validate_uri(str(bad))


def test_folder_validates_each_dataset(data_dir):
    reports = validate_uris([str(data_dir)])
    assert [Path(r.source).parent.name for r in reports] == ["Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B"]
    assert all(r.passed for r in reports)


# ------------------------------------------------------------------------ CLI: validate
def test_cli_validate_ok_fail_and_unreadable(tmp_path):
    good = toy(tmp_path)
    r = run_cli(data_group, ["validate", str(good)])
    assert r.exit_code == 0 and "=> PASSED: 25 of 25 checks passed" in r.stdout

    bad = edit(toy(tmp_path, "Synth-1B/bad.json"), lambda recs: recs[0]["each_branch"][1].__setitem__(1, -3))
    r = run_cli(data_group, ["validate", str(good), str(bad)])
    assert r.exit_code == 1
    assert "problem 0, field 'each_branch[1].branch_tokens': expected a non-negative integer, got -3" in r.stdout
    assert r.stdout.count("=> PASSED") == 1 and r.stdout.count("=> FAILED") == 1

    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    r = run_cli(data_group, ["validate", str(broken)])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == (f"error: {broken}: not valid JSON: truncated, "
                                "the file ends at line 1 column 3 (char 2) in the middle of a value")

    r = run_cli(data_group, ["validate", str(good), str(broken)])  # the readable one is still reported
    assert r.exit_code == 2 and "=> PASSED" in r.stdout and r.stderr.startswith(f"error: {broken}: ")


def test_cli_validate_published_uri_through_the_mirror(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOTTS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("AUTOTTS_CACHE_DIR", str(tmp_path / "cache"))
    r = run_cli(data_group, ["validate", "autotts:Qwen3-8B/aime24"])
    assert r.exit_code == 0
    mirror_file = data_dir / "Qwen3-8B" / "aime24.json"
    assert r.stdout.startswith(f"autotts:Qwen3-8B/aime24 ({mirror_file}): 30 problems, 3840 branches")
    r = run_cli(data_group, ["validate", "autotts:Qwen3-8B/aime26"])
    assert r.exit_code == 2 and "unknown benchmark 'aime26'" in r.stderr


# ------------------------------------------------------------------------ CLI: convert
def test_cli_convert_round_trip_is_lossless(data_dir, tmp_path):
    src = data_dir / "Qwen3-1.7B" / "aime24.json"
    pq_path, back = tmp_path / "Qwen3-1.7B" / "aime24.parquet", tmp_path / "back.json"
    pq_path.parent.mkdir()
    r = run_cli(data_group, ["convert", str(src), str(pq_path)])
    assert r.exit_code == 0 and r.stdout.strip() == f"wrote {pq_path} (Qwen3-1.7B/aime24: 30 problems, 3840 branches)"
    assert read_parquet(pq_path).provenance.source == str(pq_path)
    r = run_cli(data_group, ["convert", str(pq_path), str(back)])
    assert r.exit_code == 0
    assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()


def test_cli_convert_refuses_to_overwrite_without_force(tmp_path):
    src = toy(tmp_path)
    dst = tmp_path / "out.parquet"
    dst.write_bytes(b"keep me")
    r = run_cli(data_group, ["convert", str(src), str(dst)])
    assert r.exit_code == 2 and r.stderr.strip() == f"error: {dst}: already exists; pass --force to overwrite it"
    assert dst.read_bytes() == b"keep me"
    r = run_cli(data_group, ["convert", str(src), str(dst), "--force"])
    assert r.exit_code == 0 and len(read_parquet(dst)) == 4
    r = run_cli(data_group, ["convert", str(src), str(tmp_path / "out.csv")])
    assert r.exit_code == 2 and "unknown output format '.csv'" in r.stderr


BAD_INPUTS = [
    ("truncated JSON", None, "not valid JSON: truncated"),
    ("branch with 2 fields", lambda recs: recs[2]["each_branch"].__setitem__(3, [["1"], 700]),
     "problem 2, field 'each_branch[3]': expected 3 fields [probe_answers, branch_tokens, final_answer], got 2"),
    ("negative tokens", lambda recs: recs[1]["each_branch"][0].__setitem__(1, -5),
     "problem 1, field 'each_branch[0].branch_tokens': expected a non-negative integer, got -5"),
    ("non-string answer", lambda recs: recs[3]["each_branch"][5].__setitem__(2, 42),
     "problem 3, field 'each_branch[5].final_answer': expected a string, got 42"),
    ("empty branch list", lambda recs: recs[0].__setitem__("each_branch", []),
     "problem 0, field 'each_branch': expected a non-empty list of branches, got an empty list"),
]


@pytest.mark.parametrize("case, mutate, message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, case, mutate, message):
    src = toy(tmp_path)
    if mutate is None:
        src.write_bytes(src.read_bytes()[:-200])
    else:
        edit(src, mutate)
    dst = tmp_path / "out.parquet"
    r = run_cli(data_group, ["convert", str(src), str(dst)])
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {src}: ") and message in lines[0]
    assert "Traceback" not in r.stderr and not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Synth-1B"]


def test_cli_convert_prints_data_warnings(tmp_path):
    def drop(recs):
        recs[1]["each_branch"].pop()
        del recs[1]["final_answers_trace"]

    src = edit(toy(tmp_path), drop)
    r = run_cli(data_group, ["convert", str(src), str(tmp_path / "out.json")])
    assert r.exit_code == 0
    assert r.stderr.strip() == f"warning: {src}: branch counts differ across problems: 6 in most, but problem 1 has 5"
