"""How often the demo model answers the laptop recipe's questions right: one sample, and a vote.

    python benchmarks/recipe_questions.py                          # 20 sums questions × 16 branches
    python benchmarks/recipe_questions.py --kind word --questions 10 --branches 8
    python benchmarks/recipe_questions.py --instruction "Please reason step by step, and put your final answer within \\boxed{}."

Collects the first ``--questions`` questions of ``autotts data arithmetic --kind KIND``
(seed 0, the recipe's file for ``sums``) on SmolLM2-135M-Instruct with the in-process
engine and the recipe's sampling (``projects/smollm2-arithmetic/collect.yaml`` unless
overridden), then prints the share of branches whose final answer is the gold one, the
majority vote's accuracy over all of a question's branches (SC@N), how many questions have
the gold answer in no branch, the mean branch length and the collection's wall time. A
question family suits the recipe when one sample is right about half the time or more and
the vote is right more often than one sample: only then can a controller's savings against
SC@N at equal accuracy mean anything.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.collect.run import collect
from mlflow_autotts.data.arithmetic import KINDS
from mlflow_autotts.data.trajectory import TrajectorySet

RECIPE = Path(__file__).resolve().parent.parent / "projects" / "smollm2-arithmetic" / "collect.yaml"


def figures(ts: TrajectorySet) -> dict[str, float]:
    """Per-sample and majority accuracy (%), questions with no right branch, mean branch tokens."""
    right = branches = majority = never = tokens = 0
    for p in ts.problems:
        finals = list(p.branches.final_answers)
        hits = sum(a == p.gold_answer for a in finals)
        right, branches = right + hits, branches + len(finals)
        majority += Counter(finals).most_common(1)[0][0] == p.gold_answer
        never += hits == 0
        tokens += sum(p.branches.branch_tokens)
    return {"per_sample": 100 * right / branches, "right": right, "branches": branches,
            "majority": 100 * majority / len(ts), "majority_right": majority, "questions": len(ts),
            "no_right_branch": never, "mean_branch_tokens": tokens / branches}


def main() -> None:
    recipe = yaml.safe_load(RECIPE.read_text())
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=sorted(KINDS), default="sums")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--branches", type=int, default=recipe["branches"])
    ap.add_argument("--interval", type=int, default=recipe["interval_tokens"], help="tokens per interval")
    ap.add_argument("--max-tokens", type=int, default=recipe["max_tokens_per_branch"], help="tokens per branch at most")
    ap.add_argument("--temperature", type=float, default=recipe["temperature"])
    ap.add_argument("--instruction", default=recipe["instruction"], help="appended to each question")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp())
    qfile = work / "questions.jsonl"
    qfile.write_text("".join(json.dumps(r) + "\n" for r in KINDS[args.kind](args.questions, 0)), encoding="utf-8")
    cfg = CollectConfig(str(qfile), str(work / "collected.parquet"), "demo", branches=args.branches,
                        interval_tokens=args.interval, max_tokens_per_branch=args.max_tokens,
                        temperature=args.temperature, instruction=args.instruction, top_p=recipe["top_p"],
                        seed=recipe["seed"],
                        concurrency=recipe["concurrency"], mlflow=False, progress=False, live=recipe.get("live", {}))
    t0 = time.monotonic()
    report = collect(cfg)
    f = figures(report.dataset)
    print(f"{args.kind}: {args.questions} questions × {args.branches} branches, interval {args.interval}, "
          f"≤ {args.max_tokens} tokens, temperature {args.temperature:g}, instruction {args.instruction!r}; "
          f"{time.monotonic() - t0:.0f} s with the engine start ({report.wall_seconds:.0f} s collecting)")
    print(f"  one sample right: {f['right']}/{f['branches']} = {f['per_sample']:.1f}%")
    print(f"  majority of {args.branches} (SC@{args.branches}) right: {f['majority_right']}/{f['questions']} = "
          f"{f['majority']:.1f}%; gold in no branch: {f['no_right_branch']} question(s)")
    print(f"  mean branch length {f['mean_branch_tokens']:.0f} tokens")


if __name__ == "__main__":
    main()
