"""CLI speed: ``autotts evaluate`` as a user runs it, against the paper's evaluator.

    AUTOTTS_DATA_DIR=../shared/data/autotts-replay python benchmarks/cli_speed.py

Runs the real console command in fresh processes on an existing sqlite MLflow store (made
once in a temporary folder before the timings) and reports, as medians of ``--repeat``
interleaved runs:

- ``autotts --help``;
- ``autotts evaluate autotts:Qwen3-4B/aime24 -c cmc --beta 0.5 --workers 2`` with 1 and with
  100 shuffles (each logs a run with its episodes table to the store);
- the marginal cost of the 99 more shuffles (median of the paired differences), and the
  paper's evaluator's time for the 3,000 episodes on one core over that marginal cost.

The paper's evaluator takes about 16 s for those 3,000 episodes on one core of this machine
(``benchmarks/replay_speed.py``); pass ``--reference-seconds`` with your own measurement.
Targets (issue 10): marginal ratio >= 50x, ``--help`` < 0.5 s, 1 shuffle < 3 s.

The commands run with ``MLFLOW_DISABLE_TELEMETRY=true`` and, as an installed package would,
with Python's bytecode cache enabled (``PYTHONDONTWRITEBYTECODE`` is removed from their
environment; the first, untimed run compiles it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CELL = ["autotts:Qwen3-4B/aime24", "--controller", "cmc", "--beta", "0.5", "--workers", "2", "--no-progress"]
TARGETS = {"help": 0.5, "one": 3.0, "ratio": 50.0}


def command() -> list[str]:
    """The ``autotts`` console script beside this Python, else ``python -m mlflow_autotts.cli``."""
    script = Path(sys.executable).with_name("autotts")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlflow_autotts.cli"]


def timed(args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    done = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def make_store(folder: Path, env: dict[str, str]) -> str:
    """A migrated sqlite store (creating one takes seconds: never timed)."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    code = "import sys; from mlflow import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"
    subprocess.run([sys.executable, "-c", code, uri], env=env, check=True, capture_output=True)
    return uri


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-seconds", type=float, default=16.0,
                    help="the reference evaluator's time for the 3,000 episodes on one core")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (medians are reported)")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="autotts-cli-speed-"))
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        env["MLFLOW_TRACKING_URI"] = make_store(folder, env)
        cli = command()
        evaluate = [*cli, "evaluate", *CELL, "--experiment", "cli-speed"]
        timed(evaluate + ["--shuffles", "1"], env)  # compiles bytecode, creates the experiment
        timed([*cli, "--help"], env)

        helps, ones, hundreds = [], [], []
        for _ in range(args.repeat):  # interleaved, so drifting load hits every figure alike
            helps.append(timed([*cli, "--help"], env))
            ones.append(timed(evaluate + ["--shuffles", "1"], env))
            hundreds.append(timed(evaluate + ["--shuffles", "100"], env))
        marginal = statistics.median(h - o for h, o in zip(hundreds, ones))
        ratio = args.reference_seconds / marginal if marginal > 0 else float("inf")
        rows = [
            ("autotts --help", statistics.median(helps), f"< {TARGETS['help']} s", statistics.median(helps) < TARGETS["help"]),
            ("evaluate, 1 shuffle", statistics.median(ones), f"< {TARGETS['one']} s", statistics.median(ones) < TARGETS["one"]),
            ("evaluate, 100 shuffles", statistics.median(hundreds), "", None),
            ("marginal cost of 99 shuffles", marginal, "", None),
            (f"reference evaluator ({args.reference_seconds:g} s) / marginal", ratio,
             f">= {TARGETS['ratio']:g}x", ratio >= TARGETS["ratio"]),
        ]
        print(f"cmc beta=0.5 on Qwen3-4B/aime24 through `{' '.join(evaluate[:2])}`, 2 workers, sqlite store; "
              f"medians of {args.repeat} runs on {os.cpu_count()} cores")
        print(f"{'figure':<48} {'value':>9}  {'target':<9} ok")
        for name, value, target, ok in rows:
            shown = f"{value:8.1f}x" if name.startswith("reference") else f"{value:8.3f}s"
            print(f"{name:<48} {shown:>9}  {target:<9} {'' if ok is None else 'yes' if ok else 'NO'}")
        print("runs (s): help " + " ".join(f"{t:.2f}" for t in helps) + " | 1 shuffle "
              + " ".join(f"{t:.2f}" for t in ones) + " | 100 shuffles " + " ".join(f"{t:.2f}" for t in hundreds))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
