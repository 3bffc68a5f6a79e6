"""Collection against plain vLLM generation of the same branches, on the demo model.

    python benchmarks/collect_throughput.py                       # 8 questions × 8 branches
    python benchmarks/collect_throughput.py --questions 16 --interval 128

Collection (``collect()``: every branch generated interval by interval, probed at every
interval boundary, top-k logprobs for the confidence signals, shards, validation) runs on
the in-process vLLM engine. Plain generation then generates the same branches: the same
chat prompts, each branch one request with the seed of its first interval, exactly as many
tokens as the collected branch (``ignore_eos``), no probes, no logprobs. It runs twice:
with the collection's concurrency (``--concurrency`` questions at once, each question's
branches in one call), and all branches of all questions in one batch (the best vLLM does).
Both use the engine's top-p without a vocabulary sort (``live/backends/cpu_top_p.py``) as
collection does; a third run at the same concurrency uses vLLM's stock top-p, i.e. plain
vLLM as shipped, and checks that it samples the same tokens. ``--warmup N`` runs an
untimed collection of N other questions first. Prints wall times, their ratios (target: collection ≤ 1.25× plain), probe tokens and the
prefix-cache hit rate.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from pathlib import Path

from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.collect.run import collect
from mlflow_autotts.data.arithmetic import arithmetic_questions
from mlflow_autotts.live.backends import GenerationRequest, VLLMEngineBackend
from mlflow_autotts.live.backends.cpu_top_p import stock_sampler
from mlflow_autotts.live.episode import interval_seed
from mlflow_autotts.live.models import demo_model_dir
from mlflow_autotts.live.prompts import ChatPrompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--branches", type=int, default=8)
    ap.add_argument("--interval", type=int, default=64, help="tokens per interval")
    ap.add_argument("--max-tokens", type=int, default=320, help="tokens per branch at most")
    ap.add_argument("--top-logprobs", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=CollectConfig.concurrency, help="questions in flight")
    ap.add_argument("--warmup", type=int, default=0, help="questions of an untimed first collection")
    ap.add_argument("--block-size", type=int, default=32, help="the engine's KV-cache block size (tokens)")
    args = ap.parse_args()

    model = str(demo_model_dir())
    work = Path(tempfile.mkdtemp())
    qfile = work / "questions.jsonl"
    rows = arithmetic_questions(args.questions, seed=0)
    qfile.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = CollectConfig(str(qfile), str(work / "collected.parquet"), model, branches=args.branches,
                        interval_tokens=args.interval, max_tokens_per_branch=args.max_tokens,
                        top_logprobs=args.top_logprobs, concurrency=args.concurrency, mlflow=False, progress=False,
                        live={"max_model_len": 2048, "request_timeout": 1800.0, "overall_timeout": 7200.0})
    live = cfg.generation
    t0 = time.monotonic()
    backend = VLLMEngineBackend(model, max_model_len=2048, block_size=args.block_size)
    prompts = ChatPrompts.from_pretrained(model, live.instruction, live.probe_suffix)
    print(f"demo model {model}: engine ready in {time.monotonic() - t0:.0f} s; {args.questions} questions × "
          f"{args.branches} branches, interval {args.interval}, ≤ {args.max_tokens} tokens, "
          f"top-{args.top_logprobs} logprobs, {args.concurrency} questions at once", flush=True)
    try:
        if args.warmup:
            # optional: on an idle machine a first collection ran as fast as later ones (70 s
            # for 8 other questions against 75 s timed), so it is off by default
            t0 = time.monotonic()
            wq = work / "warmup.jsonl"
            wq.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_questions(args.warmup, seed=1)),
                          encoding="utf-8")
            collect(replace(cfg, questions=str(wq), output=str(work / "warmup" / "c.parquet")), backend=backend,
                    prompts=prompts)
            print(f"warm-up collection of {args.warmup} other questions: {time.monotonic() - t0:.1f} s", flush=True)
        backend.batch_sizes.clear()
        report = collect(cfg, backend=backend, prompts=prompts)
        steps = {"collection": Counter(backend.batch_sizes)}
        ts = report.dataset
        t = report.totals
        branch_tokens = sum(sum(p.branches.branch_tokens) for p in ts.problems)
        print(f"collection: {report.wall_seconds:.1f} s in all, {report.generation_seconds:.1f} s generating "
              f"(the rest: merge, validation with its great-expectations import, publication), {branch_tokens} branch tokens, {t.probe_tokens} probe "
              f"tokens ({100 * t.probe_tokens / branch_tokens:.1f}% of branch tokens), {t.engine_calls} engine calls, "
              f"prefix cache {100 * t.cache_hit_rate:.1f}% of {t.prompt_tokens} prompt tokens", flush=True)

        def requests_of(p: int) -> list[GenerationRequest]:
            ids = tuple(prompts.question_ids(rows[p]["question"]))
            br = ts.problems[p].branches
            return [GenerationRequest(ids, br.branch_tokens[j], temperature=live.temperature, top_p=live.top_p,
                                      seed=interval_seed(live.seed, j, 0), ignore_eos=True)
                    for j in range(br.n_branches)]

        def plain_same_concurrency() -> tuple[float, list]:
            backend.batch_sizes.clear()
            t1 = time.monotonic()
            with ThreadPoolExecutor(args.concurrency) as pool:
                outs = [o for batch in pool.map(lambda p: backend.generate(requests_of(p), 1800), range(len(ts)))
                        for o in batch]
            assert sum(len(o.token_ids) for o in outs) == branch_tokens
            return time.monotonic() - t1, outs

        same_conc, outs = plain_same_concurrency()
        steps["plain, same concurrency"] = Counter(backend.batch_sizes)
        stock_conc = None
        if backend.fast_top_p:
            with stock_sampler():
                stock_conc, stock_outs = plain_same_concurrency()
            same_tokens = sum(a.token_ids == b.token_ids for a, b in zip(outs, stock_outs))
            print(f"plain generation with vLLM's stock top-p (sorts the vocabulary): {stock_conc:.1f} s, "
                  f"{same_tokens}/{len(outs)} branches token for token as with autotts's top-p", flush=True)
        t2 = time.monotonic()
        backend.generate([r for p in range(len(ts)) for r in requests_of(p)], 3600)
        one_batch = time.monotonic() - t2
    finally:
        backend.close()
    print(f"plain generation, {args.concurrency} questions at once: {same_conc:.1f} s")
    print(f"plain generation, every branch in one batch: {one_batch:.1f} s")
    for label, secs in (("whole collection", report.wall_seconds), ("generation phase", report.generation_seconds)):
        print(f"\n{label} / plain (same concurrency): {secs / same_conc:.2f}x   "
              f"{label} / plain (one batch): {secs / one_batch:.2f}x   (target <= 1.25x)", end="")
        if stock_conc:
            print(f"   {label} / plain vLLM as shipped (stock top-p, same concurrency): {secs / stock_conc:.2f}x", end="")
    print()
    print(f"probe tokens {t.probe_tokens}, prefix-cache hit rate {100 * t.cache_hit_rate:.1f}%")
    # what the model computes: every prompt token not served from the prefix cache, and
    # every generated one; on a compute-bound CPU wall time follows it
    work_c = t.prompt_tokens - t.cached_prompt_tokens + branch_tokens + t.probe_tokens
    work_p = sum(o.prompt_tokens - o.cached_tokens + len(o.token_ids) for o in outs)
    print(f"tokens through the model (computed prompt + generated): collection {work_c} "
          f"({t.prompt_tokens - t.cached_prompt_tokens} prompt), plain {work_p} "
          f"({work_p - branch_tokens} prompt): {work_c / work_p:.2f}x")
    for label, sizes in steps.items():
        n = sum(sizes.values())
        print(f"engine steps, {label}: {n}, mean {sum(k * v for k, v in sizes.items()) / max(1, n):.1f} requests "
              f"in flight, {sum(v for k, v in sizes.items() if k < 32)} steps with fewer than 32")


if __name__ == "__main__":
    main()
