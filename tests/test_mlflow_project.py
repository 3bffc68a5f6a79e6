"""The MLproject entry points, run for real with ``mlflow run --env-manager local``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mlflow_run_evaluate(mlflow_store, data_dir):
    from mlflow.tracking import MlflowClient

    bin_dir = Path(sys.executable).parent  # the console scripts of this environment
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "AUTOTTS_DATA_DIR": str(data_dir),
           "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow = bin_dir / "mlflow"
    p = subprocess.run(
        [str(mlflow), "run", str(ROOT), "-e", "evaluate", "--env-manager", "local", "--experiment-name", "autotts",
         "-P", "data=autotts:Qwen3-4B/aime24,autotts:Qwen3-8B/aime24", "-P", "beta=0.25,0.5", "-P", "shuffles=5"],
        capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("autotts").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics = runs[0].data.metrics
    assert 70 < metrics["accuracy.Qwen3-4B.aime24.beta_0.5"] <= 100
    assert metrics["token_reduction_vs_sc64.Qwen3-8B.aime24.beta_0.25"] > 50
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"results.json", "episodes.parquet", "accuracy_vs_tokens.png"} <= artifacts


@pytest.mark.slow
def test_mlflow_run_search_leaves_a_challenger(mlflow_store, data_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    small = tmp_path / "small.yaml"
    small.write_text("data: [autotts:Qwen3-4B/aime24, autotts:Qwen3-8B/aime24]\npopulation: 2\nsearch_shuffles: 2\n"
                     "final_shuffles: 3\nfinalists: 1\nbetas: [0.0, 1.0]\n")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "AUTOTTS_DATA_DIR": str(data_dir),
           "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    p = subprocess.run(
        [str(bin_dir / "mlflow"), "run", str(ROOT), "-e", "search", "--env-manager", "local",
         "--experiment-name", "autotts", "-P", f"config={small}", "-P", "max_candidates=3"],
        capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    client = MlflowClient(mlflow_store)
    version = client.get_model_version_by_alias("autotts-controller", "challenger")
    parent = client.get_run(version.tags["autotts.search_run"])
    assert parent.info.status == "FINISHED" and parent.data.params["max_candidates"] == "3"
    assert "search:" in p.stderr  # the progress bar
