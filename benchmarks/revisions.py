"""Run a benchmark against another git revision of this repository, side by side with the
working tree, in one run: ``--baseline REV`` checks REV out into a temporary worktree and
runs the same script there (its own ``mlflow_autotts`` first on ``PYTHONPATH``), with
``--json``, and returns what it printed last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_at(rev: str, script: str, args: list[str]) -> dict:
    """The JSON the benchmark ``script`` (a path under ``benchmarks/``) prints last when run
    at revision ``rev`` with ``args`` and ``--json``. The script itself is taken from the
    working tree, so a baseline older than the script still runs it."""
    with tempfile.TemporaryDirectory(prefix="autotts-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree) + os.pathsep + os.environ.get("PYTHONPATH", "")}
            out = subprocess.run([sys.executable, str(ROOT / script), *args, "--json"], env=env, cwd=tree,
                                 check=True, stdout=subprocess.PIPE, text=True).stdout
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    return json.loads(out.strip().splitlines()[-1])
