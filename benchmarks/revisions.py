"""Run a benchmark against another git revision of this repository, side by side with the
working tree, in one run: ``--baseline REV`` checks REV out into a temporary worktree and
runs the same script there (its own ``mlflow_autotts`` first on ``PYTHONPATH``), with
``--json``, and returns what it printed last."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

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


def add_options(ap: argparse.ArgumentParser) -> None:
    """``--baseline REV`` and ``--json``, for a benchmark that compares itself with REV."""
    ap.add_argument("--baseline", help="also measure this git revision, side by side")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line")


def measure_both(args: argparse.Namespace, script: str, passthrough: list[str],
                 measure: Callable[[], dict]) -> tuple[dict, dict | None] | None:
    """``(this tree's figures, the baseline's or None)``: the baseline first when
    ``--baseline`` asks, with ``passthrough`` arguments. Under ``--json`` (the baseline's own
    run) the figures are printed and None is returned."""
    base = run_at(args.baseline, script, passthrough) if args.baseline else None
    now = measure()
    if args.json:
        print(json.dumps(now))
        return None
    return now, base
