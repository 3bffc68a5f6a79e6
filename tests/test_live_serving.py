"""End to end: a registered controller served by the real ``mlflow models serve``, driving
real generation on a real vLLM server (SmolLM2-135M on CPU), both on loopback ports."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from mlflow_autotts.live.server import VLLMServer
from tests.live_fixtures import _require_vllm
from tests.servers import served_model

NAME = "autotts-controller"
QUESTIONS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "7"),
    ("A box holds 6 pens. How many pens are in 2 boxes?", "12"),
    ("Sara had 10 sweets and ate 3. How many are left?", "7"),
    ("There are 5 birds on a tree and 2 more arrive. How many birds are there?", "7"),
    ("A pack has 4 cards. How many cards are in 3 packs?", "12"),
    ("Ben reads 2 pages a day for 5 days. How many pages does he read?", "10"),
    ("A class has 9 girls and 8 boys. How many children are in the class?", "17"),
    ("Mia has 20 coins and gives away 6. How many coins does she keep?", "14"),
]
LIVE = {"interval_tokens": 32, "max_tokens_per_branch": 64, "lookahead": 8, "probe_tokens": 8,
        "request_timeout": 300, "overall_timeout": 600, "max_retries": 0, "seed": 1}


def _post(url: str, body: dict, timeout: float = 300) -> requests.Response:
    return requests.post(f"{url}/invocations", json=body, timeout=timeout)


def _question(url: str, q: str) -> requests.Response:
    return _post(url, {"dataframe_split": {"columns": ["question"], "data": [[q]]}})


@pytest.mark.slow
@pytest.mark.vllm
def test_served_cmc_generates_on_vllm_for_concurrent_questions_and_fails_cleanly(mlflow_store, demo_model, tmp_path):
    _require_vllm()
    from click.testing import CliRunner

    from mlflow_autotts.cli.main import main

    server = VLLMServer(demo_model, tmp_path / "vllm.log", max_model_len=2048).start()
    try:
        args = ["register", "cmc", "--beta", "0", "--alias", "champion", "--live-model", demo_model,
                "--live-base-url", server.base_url] + [a for k, v in LIVE.items() for a in ("--live", f"{k}={v}")]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output

        with served_model(f"models:/{NAME}@champion", tmp_path) as url:
            # eight questions at once, one request each: every one is answered by generation
            with ThreadPoolExecutor(len(QUESTIONS)) as pool:
                responses = list(pool.map(lambda qa: _question(url, qa[0]), QUESTIONS))
            rows = []
            for r in responses:
                assert r.status_code == 200, r.text[:1000]
                (row,) = json.loads(r.text)["predictions"]
                rows.append(row)
            for row in rows:
                assert row["error"] is None and isinstance(row["answer"], str) and row["answer"]
                # cmc at β=0 opens 2 branches first; every step is billed by the replay rules
                assert row["branches_opened"] >= 2 and row["intervals"] >= row["branches_opened"]
                assert 0 < row["tokens"] <= row["generated_tokens"]
                assert row["probe_tokens"] > 0 and row["engine_calls"] >= 2 and row["wall_seconds"] > 0
                assert row["tokens"] <= row["branches_opened"] * LIVE["max_tokens_per_branch"]
            print("live answers:", [(row["answer"], a) for row, (_, a) in zip(rows, QUESTIONS)])

            # the same question twice in one request: same seed, same branches, same answer and bill
            r = _post(url, {"dataframe_split": {"columns": ["question"], "data": [[QUESTIONS[0][0]]] * 2}})
            a, b = json.loads(r.text)["predictions"]
            assert (a["answer"], a["tokens"]) == (b["answer"], b["tokens"]) == (rows[0]["answer"], rows[0]["tokens"])

            # a malformed request is a 400 that says what is wrong
            r = _post(url, {"dataframe_split": {"columns": ["question"], "data": [[""]]}})
            assert r.status_code == 400 and "question" in json.loads(r.text)["message"], r.text[:500]

            # a question longer than the model's context is the caller's fault: a 400 naming the limit
            r = _question(url, "How many apples? " * 600)
            assert r.status_code == 400, r.text[:500]
            assert "too long" in json.loads(r.text)["message"] and "max_model_len 2,048" in json.loads(r.text)["message"]

            # the backend stops: a 503 with the reason, within the configured timeouts
            server.stop()
            r = _question(url, QUESTIONS[1][0])
            assert r.status_code == 503, r.text[:500]
            assert "live backend failed" in json.loads(r.text)["message"]
    finally:
        server.stop()
