"""The served path's overhead on live generation: ``mlflow models serve`` + pyfunc + episode
against the same controller driving the same generation directly (``LiveRunner``), both on
one vLLM server (the demo model, SmolLM2-135M, on CPU).

    python benchmarks/live_served_overhead.py [--questions 6] [--beta 0.5]

Each question runs on both paths with the same seeds, so both generate the same branches,
the path that goes first alternating (the second run finds its prompts in the prefix cache); the overhead is the median over questions of
served / direct wall time − 1, printed with both medians, the billed tokens (which must be
equal) and the engine's aggregate tokens/s. Target: ≤ 5% of wall time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

import mlflow_autotts.controllers  # noqa: F401  (registers the reference controllers)
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.live.episode import LiveRunner
from mlflow_autotts.live.models import demo_model_dir
from mlflow_autotts.live.server import VLLMServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import served_model  # noqa: E402  (the tests' server lifecycle, reused)

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "A box holds 6 eggs. How many eggs are in 3 boxes?",
    "Sara had 15 candies and ate 6 of them. How many candies are left?",
    "A pencil costs 2 dollars. How much do 5 pencils cost, in dollars?",
    "There are 24 students split equally into 4 groups. How many students are in each group?",
    "A farmer has 8 cows and buys 5 more. How many cows does he have?",
]
LIVE = {"interval_tokens": 64, "max_tokens_per_branch": 256, "lookahead": 8, "probe_tokens": 8, "seed": 7,
        "request_timeout": 600, "overall_timeout": 1200}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=len(QUESTIONS))
    ap.add_argument("--beta", type=float, default=0.5)
    args = ap.parse_args()
    questions = QUESTIONS[: args.questions]
    model = str(demo_model_dir())
    tmp = Path(tempfile.mkdtemp(prefix="autotts-bench-"))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    with VLLMServer(model, tmp / "vllm.log", max_model_len=2048) as server:
        live = {"model": model, "backend": "openai", "base_url": server.base_url, **LIVE}
        from mlflow_autotts.tracking.model_registry import register

        register(ControllerSpec("cmc", args.beta), aliases=["champion"], live=live)
        runner = LiveRunner(LiveConfig(**live))
        controller = ControllerSpec("cmc", args.beta).build()
        runner.solve(controller, "warm up: what is 1 + 1?")  # the first generation after start is slow
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
        direct, served, billed, gen_tokens, gen_time = [], [], [], 0, 0.0
        with served_model("models:/autotts-controller@champion", tmp, env=env) as url:
            body = lambda q: {"dataframe_split": {"columns": ["question"], "data": [[q]]}}  # noqa: E731
            requests.post(f"{url}/invocations", json=body("warm up: what is 1 + 1?"), timeout=1200)
            for k, q in enumerate(questions):
                # the second run of a question finds its prompts in vLLM's prefix cache:
                # alternate which path goes first so neither gets that advantage throughout
                def run_direct() -> None:
                    t0 = time.perf_counter()
                    out["res"] = runner.solve(controller, q)
                    direct.append(time.perf_counter() - t0)

                def run_served() -> None:
                    t0 = time.perf_counter()
                    r = requests.post(f"{url}/invocations", json=body(q), timeout=1200)
                    served.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    (out["row"],) = r.json()["predictions"]

                out: dict = {}
                for run in ((run_direct, run_served) if k % 2 == 0 else (run_served, run_direct)):
                    run()
                res, row = out["res"], out["row"]
                billed.append((res.stats.billed_tokens, row["tokens"]))
                gen_tokens += res.stats.generated_tokens + res.stats.probe_tokens
                gen_time += direct[-1]
        runner.close()
    ratios = [s / d - 1 for d, s in zip(direct, served)]
    print(f"cmc β={args.beta:g}, {len(questions)} questions, demo model on a vLLM server, lookahead {LIVE['lookahead']}")
    print(f"{'question':>8}  {'direct s':>9}  {'served s':>9}  {'overhead':>9}  {'billed direct/served':>21}")
    for k, (d, s, r, b) in enumerate(zip(direct, served, ratios, billed)):
        print(f"{k:>8}  {d:>9.2f}  {s:>9.2f}  {r:>+9.1%}  {b[0]:>10,} / {b[1]:<10,}")
    print(f"median wall time: direct {statistics.median(direct):.2f} s, served {statistics.median(served):.2f} s; "
          f"median overhead {statistics.median(ratios):+.1%} (target <= +5%)")
    print(f"same bill on both paths: {sum(a == b for a, b in billed)}/{len(billed)}; "
          f"direct path generated {gen_tokens / gen_time:.0f} tokens/s (branches + probes)")


if __name__ == "__main__":
    main()
