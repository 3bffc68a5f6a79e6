"""Controller code that is not built in never runs in a trusted process: a controller whose
module body leaves a mark whenever it runs outside the sandbox (under any module name but
the sandbox's) goes through every command that touches controllers, and every step works
without a mark appearing: ``register``, ``evaluate`` from a file and from ``models:/``,
``promote``, ``search`` (proposed by an LLM explorer), and ``mlflow models serve`` with replay
and live rows. The commands run in this test's process, so a mark means this process ran it."""

from __future__ import annotations

import json

import pytest
import requests
from click.testing import CliRunner

from mlflow_autotts.cli.main import main
from mlflow_autotts.data import write_json
from mlflow_autotts.sandbox.protocol import CANDIDATE_MODULE
from tests.helpers import random_set
from tests.openai_stub import OpenAIStub, StubReply, fenced
from tests.servers import served_model

MARKED = '''
if __name__ != "{module}":  # anywhere but the sandbox, this body leaves its mark
    open({mark!r}, "a").write(__name__ + "\\n")

from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.controllers.voting import plurality


class Marked(Controller):
    """Reads up to four branches whole and votes (a proper controller otherwise)."""

    name = "marked"

    def solve(self, episode):
        answers = []
        for _ in range(4):
            try:
                answers.append(episode.get_new_branch_final_answer())
            except ValueError:
                break
        return plurality(answers)
'''


@pytest.fixture
def marked(tmp_path):
    mark = tmp_path / "MARK"
    source = MARKED.format(module=CANDIDATE_MODULE, mark=str(mark))
    path = tmp_path / "marked.py"
    path.write_text(source)
    data = tmp_path / "Synth" / "marks.json"
    data.parent.mkdir()
    write_json(random_set(n_problems=6, n_branches=16, seed=9, name="Synth/marks"), data)
    return path, source, mark, data


def _ok(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _replay_row(data) -> list:
    record = json.loads(data.read_text())[0]
    return [record["question"], record["each_branch"]]


@pytest.mark.slow
def test_a_marked_controller_goes_through_every_command_without_running_here(marked, mlflow_store, tmp_path,
                                                                             monkeypatch):
    path, source, mark, data = marked
    common = ["--shuffles", "3", "--workers", "1", "--no-progress"]
    out = tmp_path / "file.json"
    _ok("evaluate", str(data), "-c", str(path), *common, "--no-mlflow", "--output-json", str(out))
    assert json.loads(out.read_text())["results"][0]["controller"] == "marked"
    _ok("register", "cmc", "--name", "marks", "--alias", "champion")
    _ok("register", str(path), "--name", "marks", "--alias", "challenger")
    _ok("evaluate", str(data), "-c", "models:/marks@challenger", *common)
    _ok("promote", "--name", "marks", "--gate", str(data), *common, "--max-token-ratio", "10",
        "--max-accuracy-drop", "100")
    assert not mark.exists(), mark.read_text()

    replies = [StubReply(fenced(source), prompt_tokens=100, completion_tokens=100)] * 8
    with OpenAIStub(replies) as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        _ok("search", "--data", str(data), "--explorer", "openai:stub-model", "--max-candidates", "2",
            "--betas", "0,1", "--search-shuffles", "2", "--final-shuffles", "2", "--finalists", "1", "--workers", "1",
            "--model-name", "marks-search", "--no-progress")
        assert stub.chat_requests, "the explorer was never asked"
    assert not mark.exists(), mark.read_text()

    with served_model("models:/marks@champion", tmp_path) as url:
        r = requests.post(f"{url}/invocations", json={"dataframe_split": {
            "columns": ["question", "trajectory"], "data": [_replay_row(data)]}}, timeout=120)
        assert r.status_code == 200, r.text[:500]
        assert r.json()["predictions"][0]["error"] is None
    assert not mark.exists(), mark.read_text()


@pytest.mark.slow
@pytest.mark.vllm
def test_a_marked_controller_served_on_live_rows_never_runs_in_the_server(marked, mlflow_store, vllm_server,
                                                                          tiny_model, tmp_path):
    path, _, mark, data = marked
    live = {"interval_tokens": 16, "max_tokens_per_branch": 32, "probe_tokens": 4, "request_timeout": 120,
            "overall_timeout": 300, "max_retries": 0, "seed": 1}
    _ok("register", str(path), "--name", "marks", "--alias", "champion", "--live-model", tiny_model,
        "--live-base-url", vllm_server.base_url, *[a for k, v in live.items() for a in ("--live", f"{k}={v}")])
    with served_model("models:/marks@champion", tmp_path) as url:
        for body in ({"dataframe_split": {"columns": ["question"], "data": [["What is 2 + 3?"]]}},
                     {"dataframe_split": {"columns": ["question", "trajectory"], "data": [_replay_row(data)]}}):
            r = requests.post(f"{url}/invocations", json=body, timeout=300)
            assert r.status_code == 200, r.text[:500]
            assert r.json()["predictions"][0]["error"] is None, r.text[:500]
    assert not mark.exists(), mark.read_text()
