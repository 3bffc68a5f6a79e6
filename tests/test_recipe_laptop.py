"""The laptop recipe end to end, at a small size: collect on the real demo model (through a
real vLLM server) → search on the collected file → promote → serve the champion live with
``mlflow models serve``, as the README's "The whole workflow on one laptop" runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from mlflow_autotts.data.parquet_io import read_parquet
from mlflow_autotts.live.server import VLLMServer
from tests.helpers import mlflow_env
from tests.live_fixtures import _require_vllm
from tests.servers import served_model

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "projects" / "smollm2-arithmetic"
NAME = "autotts-arithmetic"
SIZE = {"limit": "5", "branches": "6", "interval_tokens": "48", "max_tokens_per_branch": "192"}


def mlflow_run(entry: str, params: dict[str, str], env: dict[str, str]) -> None:
    args = [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", entry, "--env-manager", "local",
            "--experiment-name", "autotts"]
    for k, v in params.items():
        args += ["-P", f"{k}={v}"]
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-4000:]


def test_collect_search_promote_serve_on_the_demo_model(mlflow_store, demo_model, tmp_path):
    _require_vllm()
    env = mlflow_env(mlflow_store)
    server = VLLMServer(demo_model, tmp_path / "vllm.log", max_model_len=1024).start()
    try:
        out = tmp_path / "collected.parquet"
        mlflow_run("collect", {**SIZE, "output": str(out), "backend": "openai", "base_url": server.base_url,
                               "progress": "false"}, env)
        ts = read_parquet(out)
        assert len(ts) == 5 and all(p.branches.n_branches == 6 for p in ts.problems)
        assert ts.provenance.benchmark == "arithmetic" and ts.provenance.sampling["top_logprobs"] == 5

        mlflow_run("search", {"config": str(RECIPE / "search.yaml"), "data": str(out), "max_candidates": "4",
                              "population": "4", "search_shuffles": "3", "final_shuffles": "5", "finalists": "1",
                              "workers": "2"}, env)
        client = MlflowClient(mlflow_store)
        runs = {r.data.tags.get("autotts.command"): r for r in client.search_runs(
            [client.get_experiment_by_name("autotts").experiment_id], "attributes.status = 'FINISHED'")
            if r.data.tags.get("autotts.command")}
        collected = {d.dataset.digest for d in runs["collect"].inputs.dataset_inputs}
        searched = {d.dataset.name: d.dataset.digest for d in runs["search"].inputs.dataset_inputs}
        assert len(collected) == 1 and searched  # the search's split halves are named after the collected set
        assert all(name.startswith(ts.name) for name in searched)

        p = subprocess.run([str(Path(sys.executable).parent / "autotts"), "promote", "--name", NAME, "--gate", str(out),
                            "--shuffles", "5", "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        assert client.get_model_version_by_alias(NAME, "champion").version

        live = {"AUTOTTS_LIVE_MODEL": demo_model, "AUTOTTS_LIVE_BACKEND": "openai",
                "AUTOTTS_LIVE_BASE_URL": server.base_url, "AUTOTTS_LIVE_INTERVAL_TOKENS": SIZE["interval_tokens"],
                "AUTOTTS_LIVE_MAX_TOKENS_PER_BRANCH": SIZE["max_tokens_per_branch"], "AUTOTTS_LIVE_LOOKAHEAD": "8",
                "AUTOTTS_LIVE_MAX_MODEL_LEN": "1024", "MLFLOW_TRACKING_URI": mlflow_store}
        with served_model(f"models:/{NAME}@champion", tmp_path, env=live) as url:
            def ask(question: str) -> dict:
                r = requests.post(f"{url}/invocations", timeout=600,
                                  json={"dataframe_split": {"columns": ["question"], "data": [[question]]}})
                assert r.status_code == 200, r.text[:1000]
                return json.loads(r.text)["predictions"][0]

            with ThreadPoolExecutor(2) as pool:
                rows = list(pool.map(ask, [p.question for p in ts.problems[:2]]))
        for row in rows:
            assert row["error"] is None and row["answer"] and 0 < row["tokens"] <= row["generated_tokens"]
            assert row["branches_opened"] >= 1 and row["engine_calls"] >= 1
    finally:
        server.stop()
