"""The laptop recipe end to end, at a small size: the README's "The whole workflow on one
laptop" block run as written by bash (collect on the real demo model in process → search →
promote → a vLLM server and ``mlflow models serve`` on free ports, waited for → one question
asked), with only the sizes made small by the parameters appended below."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_autotts.data.parquet_io import read_parquet
from tests.helpers import mlflow_env
from tests.live_fixtures import _require_vllm

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parent.parent
NAME = "autotts-arithmetic"
QUESTIONS, BRANCHES = 6, 4
SMALL = {  # the start of a line of the block -> what is appended to it
    "mlflow run . -e collect": f" -P limit={QUESTIONS} -P branches={BRANCHES} -P progress=false",
    "mlflow run . -e search": " -P max_candidates=4 -P population=4 -P search_shuffles=3 -P final_shuffles=5"
                              " -P finalists=1 -P workers=2",
    "autotts promote": " --shuffles 5 --no-progress",
}


def recipe_block() -> str:
    """The bash block of the README's laptop section that runs the workflow (not the install)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### The whole workflow on one laptop", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if "mlflow run . -e collect" in b]
    assert len(blocks) == 1, "the laptop section must hold one bash block running the workflow"
    return blocks[0]


def small(block: str) -> str:
    """``block`` with ``SMALL``'s parameters appended to its lines (each found exactly once)."""
    lines = block.splitlines()
    for start, extra in SMALL.items():
        hits = [i for i, line in enumerate(lines) if line.startswith(start)]
        assert len(hits) == 1, f"the README block must run {start!r} once, on a line of its own"
        line = lines[hits[0]]
        code, _, comment = line.partition("  #")
        lines[hits[0]] = code.rstrip() + extra + (f"  #{comment}" if comment else "")
    return "\n".join(lines) + "\n"


def project_dir(tmp_path: Path) -> Path:
    """A folder that is the project for ``mlflow run .`` (its MLproject and recipes linked),
    so the block's relative outputs (collected/, the servers' logs) land in the test's folder."""
    work = tmp_path / "project"
    work.mkdir()
    for name in ("MLproject", "conda.yaml", "projects"):
        (work / name).symlink_to(ROOT / name)
    return work


def test_the_readme_block_runs_the_workflow_on_the_demo_model(mlflow_store, demo_model, tmp_path):
    _require_vllm()
    work = project_dir(tmp_path)
    script = tmp_path / "recipe.sh"  # a file, so no command line holds the block's text
    script.write_text(small(recipe_block()))
    env = mlflow_env(mlflow_store, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                               if p))
    for name in ("VLLM_PORT", "SERVE_PORT"):  # the block picks free ports itself
        env.pop(name, None)
    proc = subprocess.Popen(["bash", "-euo", "pipefail", str(script)], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=1500)
    finally:
        try:  # the block stops its servers; anything left of its process group goes too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"{out[-3000:]}\n{err[-5000:]}"

    ts = read_parquet(work / "collected" / "arithmetic.parquet")
    assert len(ts) == QUESTIONS and all(p.branches.n_branches == BRANCHES for p in ts.problems)
    assert ts.provenance.benchmark == "arithmetic" and ts.provenance.sampling["top_logprobs"] == 5
    finals = [(a, p.gold_answer) for p in ts.problems for a in p.branches.final_answers]
    # questions the demo model answers right about half the time (README: 52.5% of 640 samples);
    # a quarter of 24 samples is far below that, so this fails only if the recipe stops showing it
    assert sum(a == g for a, g in finals) >= len(finals) // 4

    # labels name SC with the data's branches; the search registered a winner against it
    assert f"vs SC@{BRANCHES} (LCB)" in out and "SC@64" not in out
    assert "challenger: models:/autotts-arithmetic@challenger" in out, out[-3000:]
    client = MlflowClient(mlflow_store)
    runs = {r.data.tags.get("autotts.command"): r for r in client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "attributes.status = 'FINISHED'")
        if r.data.tags.get("autotts.command")}
    collected = {d.dataset.digest for d in runs["collect"].inputs.dataset_inputs}
    searched = {d.dataset.name for d in runs["search"].inputs.dataset_inputs}
    assert len(collected) == 1 and searched and all(name.startswith(ts.name) for name in searched)
    rows = json.loads(Path(client.download_artifacts(runs["search"].info.run_id, "selection.json")).read_text())
    assert rows[0]["controller"] == f"sc@{BRANCHES}" and rows[0]["accuracy"] >= 10.0
    assert client.get_model_version_by_alias(NAME, "champion").version

    # the served champion answered the block's question live
    answer = json.loads(out.strip().splitlines()[-1])["predictions"][0]
    assert answer["error"] is None and answer["answer"] and 0 < answer["tokens"] <= answer["generated_tokens"]
    assert answer["branches_opened"] >= 1 and answer["engine_calls"] >= 1
