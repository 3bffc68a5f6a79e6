"""Controllers on real generation: accuracy, tokens and wall time, sequential vs lookahead.

    python benchmarks/live_serving.py                  # in-process vLLM engine, demo model
    python benchmarks/live_serving.py --backend openai # the same through vLLM's server

On the demo model (SmolLM2-135M-Instruct, built into the model cache on first use) and a
handful of one-step arithmetic word problems, each controller (SC@N, CMC, Parallel-Probe)
answers every question live, with ``lookahead`` 1 (plain sequential generation) and 8. Per
controller and lookahead it prints accuracy, billed / generated / probe tokens and wall
time per question, engine calls, prefix-cache hits and aggregate tokens/s, then the
live serving's targets: lookahead 8 at least 3× faster than 1 for cmc and parallel_probe with
generated ≤ 1.5× billed, and cmc's bill against SC@N's at SC@N's accuracy. Beside the speedup
it prints its ceiling (a branch's intervals decode one after another: generation calls at
lookahead 1 over those at 8) and what one interval costs in a call 1 and 8 branches wide.

Branches are sampled with a seed per (branch, interval), so both lookaheads see the same
branches up to floating-point batch effects; the "same answers" column counts how many
questions got the same answer at both.

The overhead of the served path (``mlflow models serve`` + pyfunc + episode) against the
same generation made directly is measured by ``benchmarks/live_served_overhead.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow_autotts.controllers  # noqa: F401  (registers the reference controllers)
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.live.answers import normalize_answer
from mlflow_autotts.live.backends import (
    GenerationRequest,
    OpenAIServerBackend,
    VLLMEngineBackend,
)
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.live.episode import LiveResult, LiveRunner
from mlflow_autotts.live.models import demo_model_dir
from mlflow_autotts.live.server import VLLMServer

QUESTIONS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have now?", "7"),
    ("A box holds 6 eggs. How many eggs are in 3 boxes?", "18"),
    ("Sara had 15 candies and ate 6 of them. How many candies are left?", "9"),
    ("A pencil costs 2 dollars. How much do 5 pencils cost, in dollars?", "10"),
    ("There are 24 students split equally into 4 groups. How many students are in each group?", "6"),
    ("A farmer has 8 cows and buys 5 more. How many cows does he have?", "13"),
]

CONTROLLERS = {
    "sc": ControllerSpec("sc", None, {"n": 8}),
    "cmc": ControllerSpec("cmc", 0.5),
    # Parallel-Probe's published knobs (T=40, warm-up 15) are for 500-token intervals over
    # 15k-token branches; these branches have at most 6 intervals
    "parallel_probe": ControllerSpec("parallel_probe", None, {"chains": 8, "T": 3, "patience": 2, "warm_up": 2,
                                                               "max_steps": 8}),
}


@dataclass
class Row:
    controller: str
    lookahead: int
    results: list[LiveResult]
    golds: list[str]

    @property
    def accuracy(self) -> float:
        return 100.0 * sum(normalize_answer(r.answer or "") == g for r, g in zip(self.results, self.golds)) / len(self.golds)

    def mean(self, field: str) -> float:
        return statistics.fmean(getattr(r.stats, field) for r in self.results)

    @property
    def median_wall(self) -> float:
        return statistics.median(r.stats.wall_seconds for r in self.results)

    @property
    def tokens_per_s(self) -> float:
        wall = sum(r.stats.wall_seconds for r in self.results)
        return sum(r.stats.generated_tokens + r.stats.probe_tokens for r in self.results) / wall


def solve(runner: LiveRunner, name: str, lookahead: int, question: str, gold: str) -> LiveResult:
    res = runner.solve(CONTROLLERS[name].build(), question)
    s = res.stats
    print(f"  {name:<15} L={lookahead} {res.answer!s:>6} (gold {gold:>3})  billed {s.billed_tokens:>5}  "
          f"generated {s.generated_tokens:>5}  probes {s.probe_tokens:>4}  calls {s.engine_calls:>3}  "
          f"{s.wall_seconds:6.1f} s", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("vllm", "openai"), default="vllm")
    ap.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many of the built-in questions")
    ap.add_argument("--controllers", default="sc,cmc,parallel_probe")
    ap.add_argument("--lookaheads", default="1,8")
    ap.add_argument("--interval", type=int, default=64, help="tokens per interval")
    ap.add_argument("--max-tokens", type=int, default=384, help="tokens per branch at most")
    ap.add_argument("--depth", type=int, default=LiveConfig.lookahead_depth,
                    help="intervals an open branch may hold generated ahead (lookahead_depth)")
    args = ap.parse_args()

    model = str(demo_model_dir())
    questions = QUESTIONS[: args.questions]
    names = [n for n in args.controllers.split(",") if n]
    lookaheads = [int(x) for x in args.lookaheads.split(",")]
    server = None
    t0 = time.monotonic()
    if args.backend == "openai":
        server = VLLMServer(model, Path(tempfile.mkdtemp()) / "vllm.log", max_model_len=2048).start()
        backend = OpenAIServerBackend(server.base_url, model, timeout=600)
        # the first batches after start are slow: warm up as the in-process engine does
        backend.generate([GenerationRequest((1, 2, 3), 16, temperature=1.0, seed=s) for s in range(8)], 600)
    else:
        backend = VLLMEngineBackend(model, max_model_len=2048)
    print(f"demo model {model}, backend {args.backend} ready in {time.monotonic() - t0:.0f} s; "
          f"{len(questions)} questions, interval {args.interval}, branches ≤ {args.max_tokens} tokens", flush=True)
    runners = {}
    for lookahead in lookaheads:
        cfg = LiveConfig(model=model, backend=args.backend, base_url=server.base_url if server else None,
                         interval_tokens=args.interval, max_tokens_per_branch=args.max_tokens, max_branches=16,
                         lookahead=lookahead, lookahead_depth=args.depth, max_model_len=2048, request_timeout=900, overall_timeout=3600)
        runners[lookahead] = LiveRunner(cfg, backend=backend)
    rows = {(n, la): Row(n, la, [], []) for n in names for la in lookaheads}
    try:
        # each question at every lookahead back to back, so machine noise hits them alike
        for name in names:
            for question, gold in questions:
                for lookahead in lookaheads:
                    row = rows[name, lookahead]
                    row.results.append(solve(runners[lookahead], name, lookahead, question, gold))
                    row.golds.append(gold)
        widths = calibrate(runners[lookaheads[0]], args.interval)
    finally:
        backend.close()
        if server:
            server.stop()
    report(list(rows.values()), backend, widths)


def calibrate(runner: LiveRunner, interval: int, repeat: int = 3) -> dict[int, float]:
    """Median seconds of one engine call generating one interval for 1 and for 8 branches.

    A branch's intervals decode one after another, so lookahead can only make each call
    wider; what a wider call costs on this engine bounds the speedup as much as the calls do.
    """
    prompt = tuple(runner.prompts.question_ids(QUESTIONS[0][0]))
    out = {}
    for width in (1, 8):
        times = []
        for r in range(repeat):
            reqs = [GenerationRequest(prompt, interval, temperature=1.0, seed=1000 * r + j, ignore_eos=True)
                    for j in range(width)]
            t = time.monotonic()
            runner.backend.generate(reqs, 600)
            times.append(time.monotonic() - t)
        out[width] = statistics.median(times)
    return out


def report(rows: list[Row], backend, widths: dict[int, float]) -> None:
    print("\nper question (means)")
    head = (f"{'controller':<15}{'L':>3}{'acc %':>7}{'billed':>8}{'generated':>10}{'gen/billed':>11}"
            f"{'probe':>7}{'calls':>7}{'cached %':>9}{'wall s':>8}{'median s':>9}{'tok/s':>7}")
    print(head)
    for r in rows:
        cached = 100.0 * r.mean("cached_prompt_tokens") / max(1.0, r.mean("prompt_tokens"))
        print(f"{r.controller:<15}{r.lookahead:>3}{r.accuracy:>7.1f}{r.mean('billed_tokens'):>8.0f}"
              f"{r.mean('generated_tokens'):>10.0f}{r.mean('generated_tokens') / r.mean('billed_tokens'):>11.2f}"
              f"{r.mean('probe_tokens'):>7.0f}{r.mean('engine_calls'):>7.1f}{cached:>9.1f}"
              f"{r.mean('wall_seconds'):>8.1f}{r.median_wall:>9.1f}{r.tokens_per_s:>7.1f}")
    by = {(r.controller, r.lookahead): r for r in rows}
    print("\ntargets")
    for name in ("cmc", "parallel_probe"):
        seq, ahead = by.get((name, 1)), by.get((name, 8))
        if seq and ahead:
            # per question, both runs back to back: the median ratio shrugs off load spikes
            speed = statistics.median(a.stats.wall_seconds / b.stats.wall_seconds
                                      for a, b in zip(seq.results, ahead.results))
            mean_speed = seq.mean("wall_seconds") / ahead.mean("wall_seconds")
            ratio = ahead.mean("generated_tokens") / ahead.mean("billed_tokens")
            same = sum(a.answer == b.answer for a, b in zip(seq.results, ahead.results))
            # a branch's intervals decode one after another, so lookahead can at best turn the
            # sequential generation calls into the rounds the controller needs: their ratio
            # bounds the speedup (from above, since bigger batches make each step slower)
            ceiling = statistics.median(a.stats.generation_calls / b.stats.generation_calls
                                        for a, b in zip(seq.results, ahead.results))
            print(f"  {name}: lookahead 8 is {speed:.2f}x faster than 1 (median per question; {mean_speed:.2f}x "
                  f"on mean wall time; target >= 3), generated/billed {ratio:.2f} (target <= 1.5), "
                  f"same answers {same}/{len(seq.results)}; ceiling from sequential decoding "
                  f"(generation calls at 1 / at 8, median) {ceiling:.2f}x, reached {100 * speed / ceiling:.0f}%")
    for lookahead in (1, 8):
        sc, cmc = by.get(("sc", lookahead)), by.get(("cmc", lookahead))
        if sc and cmc:
            share = 100.0 * cmc.mean("billed_tokens") / sc.mean("billed_tokens")
            print(f"  L={lookahead}: cmc bills {share:.0f}% of SC@8's tokens (target <= 50%) at {cmc.accuracy:.0f}% "
                  f"accuracy against SC@8's {sc.accuracy:.0f}%")
    sizes = getattr(backend, "batch_sizes", None)
    if sizes:
        steps = sum(sizes.values())
        mean = sum(k * v for k, v in sizes.items()) / steps
        print(f"  engine: {steps} steps, mean {mean:.1f} requests in flight, largest batch {max(sizes)}")
    print(f"  one interval ({widths[1]:.2f} s for 1 branch, {widths[8]:.2f} s for 8 in one call): a call 8 wide costs "
          f"{widths[8] / widths[1]:.2f}x a call 1 wide (the ceilings above count every call alike)")
    print("  served path overhead: see benchmarks/live_served_overhead.py")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
