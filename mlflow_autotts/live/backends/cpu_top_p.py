"""Top-p for vLLM's CPU sampler without sorting the vocabulary.

vLLM's CPU sampler sorts every row of the logits over the whole vocabulary to apply top-p:
130 ms for 64 rows of SmolLM2's 49k tokens, more than the demo model's forward pass. A
nucleus is nearly always a few dozen tokens, so ``top_p`` applies vLLM's rule (mask a token
when the probability mass at or below it is <= 1 - p, never the largest) to the largest
logits from ``torch.topk``: the mass at or below a token is the row's mass minus the mass
above it. Sums in float64, comparisons in float32, as vLLM's. Rows it cannot settle there
(a nucleus beyond the candidates, or one ending between equal logits, which vLLM's unstable
sort orders by chance) take vLLM's path, as do top-k and non-CPU tensors.

``install`` swaps vLLM's module-level ``apply_top_k_top_p`` (what its CPU sampler calls) in
this process, only for the function it was checked against. Both ways in read one switch,
``AUTOTTS_CPU_TOP_P=1``: the in-process engine (whose CPU defaults set it) and a vLLM
server, through ``vllm_plugin`` (entry point ``vllm.general_plugins``), which leaves every
other vLLM process alone.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

CANDIDATES = (64, 1024)
"""Nucleus sizes tried before the full sort: 64 holds nearly every row of a sampled
reasoning branch; 1024 catches flat rows at ~15 ms, still far below a sort."""

PLUGIN_ENV = "AUTOTTS_CPU_TOP_P"
"""``1`` in a process's environment: the in-process engine and ``vllm_plugin`` install
``top_p`` there (``CPU_VLLM_ENV`` sets it unless the environment has it; ``0`` keeps vLLM's)."""

_SAMPLER_MODULE = "vllm.v1.sample.ops.topk_topp_sampler"
_lock = threading.Lock()
_stock: Callable[..., torch.Tensor] | None = None


def top_p(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None,
          stock: Callable[..., torch.Tensor]) -> torch.Tensor:
    """vLLM's ``apply_top_k_top_p`` for top-p alone, found among the top candidates.

    Updates ``logits`` in place (as vLLM's does) and returns it; ``stock`` is vLLM's
    function, used for top-k and for rows whose nucleus outgrows the candidates.
    """
    if p is None or k is not None or logits.device.type != "cpu" or logits.dim() != 2:
        return stock(logits, k, p)
    probs = logits.softmax(dim=-1)
    floor = 1 - p  # float32, as vLLM compares
    greedy = p >= 1
    if bool(greedy.any()):
        # vLLM's rule at p = 1 masks exactly the tokens of zero probability
        rows = greedy.nonzero().squeeze(1)
        logits[rows] = logits[rows].masked_fill(probs[rows] == 0, float("-inf"))
    todo = (~greedy).nonzero().squeeze(1)
    if todo.numel() == 0:
        return logits
    total = probs.sum(dim=-1, dtype=torch.float64)[todo]
    least = torch.zeros_like(total)  # a lower bound on each row's nucleus size
    for size in CANDIDATES:
        size = min(size, logits.shape[1])
        here = least <= size
        if not bool(here.any()):
            continue
        rows_here = todo[here]
        top, idx = logits[rows_here].topk(size, dim=-1)  # by logit, as vLLM sorts
        mass = probs[rows_here.unsqueeze(1), idx].double()  # no copy of whole rows
        at_or_below = (total[here].unsqueeze(1) - (mass.cumsum(dim=-1) - mass)).float()
        keep = at_or_below > floor[rows_here].unsqueeze(1)
        keep[:, 0] = True  # the largest is never masked
        kept = keep.sum(dim=-1, keepdim=True)  # a prefix: the mass at or below only falls
        edge = top.gather(1, kept - 1)  # the smallest kept logit
        outside = top.gather(1, kept.clamp(max=size - 1))  # the largest masked one
        # resolved: the nucleus ends inside the candidates, and not between equal logits
        # (whose order vLLM's sort leaves to chance: those rows take the stock path)
        tied = ((kept < size) & (outside == edge)).squeeze(1)
        done = ((kept < size) & (outside < edge)).squeeze(1) | ((size == logits.shape[1]) & ~tied)
        if bool(done.any()):
            rows = rows_here[done]
            logits[rows] = logits[rows].masked_fill(logits[rows] < edge[done], float("-inf"))
        if bool(tied.any()):
            rows = rows_here[tied]
            logits[rows] = stock(logits[rows], None, p[rows])
        settled = torch.zeros_like(here)
        settled[here] = done | tied
        # an unsettled row needs more mass than its candidates hold, and no further token
        # has more than the smallest candidate's: a flat row (a random model's) whose
        # nucleus cannot fit the next candidates goes straight to the sort
        need = total[here] - floor[rows_here].double() - mass.sum(dim=-1)
        least[here] = size + need / mass[:, -1]
        todo, total, least = todo[~settled], total[~settled], least[~settled]
        if todo.numel() == 0:
            return logits
    logits[todo] = stock(logits[todo], None, p[todo])
    return logits


def install() -> bool:
    """Put ``top_p`` in vLLM's CPU sampler (idempotent); False if this vLLM is not the
    one it was checked against (the stock sampler then stays)."""
    global _stock
    with _lock:
        try:
            module = importlib.import_module(_SAMPLER_MODULE)
        except ImportError:  # a vLLM laid out differently keeps its own sampler
            return False
        current = getattr(module, "apply_top_k_top_p", None)
        if _stock is not None and current is not None and getattr(current, "_autotts", False):
            return True
        if current is None or list(inspect.signature(current).parameters) != ["logits", "k", "p"]:
            return False
        platform = getattr(module, "current_platform", None)
        if platform is None or not platform.is_cpu():
            return False
        stock = current

        def apply_top_k_top_p(logits: torch.Tensor, k: Any, p: Any) -> torch.Tensor:
            return top_p(logits, k, p, stock)

        apply_top_k_top_p._autotts = True  # type: ignore[attr-defined]
        _stock = stock
        module.apply_top_k_top_p = apply_top_k_top_p
        return True


def enabled() -> bool:
    """Whether this process asks for ``top_p`` (``PLUGIN_ENV`` is 1)."""
    return os.environ.get(PLUGIN_ENV, "").strip() == "1"


def vllm_plugin() -> None:
    """vLLM loads this in each of its processes: ``install`` when ``enabled``."""
    if enabled():
        installed = install()
        # vLLM's logger, so the line is in the server's log with vLLM's own
        logging.getLogger("vllm.plugins.autotts").info(
            "autotts: top-p without a vocabulary sort %s", "installed" if installed else
            "not installed (this vLLM's sampler is not the one it was checked against)")


@contextmanager
def stock_sampler() -> Iterator[None]:
    """vLLM's own top-p for the duration (benchmarks and the equality test compare them)."""
    module = importlib.import_module(_SAMPLER_MODULE)
    with _lock:
        patched = module.apply_top_k_top_p
        if _stock is not None:
            module.apply_top_k_top_p = _stock
    try:
        yield
    finally:
        with _lock:
            module.apply_top_k_top_p = patched


__all__ = ["CANDIDATES", "PLUGIN_ENV", "enabled", "install", "stock_sampler", "top_p", "vllm_plugin"]
