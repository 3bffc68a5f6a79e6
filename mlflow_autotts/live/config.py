"""Live generation settings: one frozen dataclass, a docstring per field."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from mlflow_autotts.controllers.base import MAX_BRANCHES
from mlflow_autotts.errors import AutoTTSError

BACKENDS = ("vllm", "openai")

DYNASOR_SUFFIX = "\n\n... Oh, I suddenly got the answer to the whole problem, **Final Answer**\n\n\\[ \\boxed{"
"""The Dynasor / Parallel-Probe probe: it ends in ``\\boxed{`` so the model writes the
answer next (SmolLM2-135M returns a number 20 times out of 20 after it)."""

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

MAX_TOP_LOGPROBS = 20
"""vLLM's default ``--max-logprobs``."""


class LiveConfigError(AutoTTSError, ValueError):
    """A live setting with a bad value; ``field`` names it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"live config: {field} {message}")


@dataclass(frozen=True)
class LiveConfig:
    """How a live episode generates: backend, sampling, probing, batching and limits."""

    model: str
    """Hugging Face folder (in-process backend) or the served model name (server backend;
    vLLM serves a folder under its path unless started with ``--served-model-name``)."""
    backend: str = "vllm"
    """``vllm`` (an engine in this process) or ``openai`` (an OpenAI-compatible completions
    server, in practice ``python -m vllm.entrypoints.openai.api_server``)."""
    base_url: str | None = None
    """Server URL including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``; ``openai`` only."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the server's API key (a keyless vLLM server accepts
    any; ``EMPTY`` is sent when the variable is unset)."""
    tokenizer: str | None = None
    """Folder of the tokenizer and chat template; defaults to ``model`` (with the server
    backend, ``model`` must then be a local folder)."""
    instruction: str = MATH_INSTRUCTION
    """Appended to the question (after a blank line) in the user turn; empty for none."""
    interval_tokens: int = 500
    """Tokens a branch advances per probe step (the replay data's ``probe_freq``)."""
    max_tokens_per_branch: int = 4096
    """A branch is finished at EOS or at this many generated tokens."""
    max_branches: int = MAX_BRANCHES
    """Branches a question may open (``episode.max_branches``)."""
    temperature: float = 0.7
    """Sampling temperature of branches (probes are greedy)."""
    top_p: float = 0.95
    """Nucleus sampling of branches."""
    seed: int = 0
    """Base seed: interval ``k`` of branch ``j`` is sampled with a seed derived from
    (seed, j, k), so branches differ, and a branch is the same whatever the lookahead."""
    probe_suffix: str = DYNASOR_SUFFIX
    """Appended (as tokens) to a branch to probe it; must end in ``\\boxed{``."""
    probe_tokens: int = 16
    """Most tokens a probe may generate; it stops early at the ``}`` closing the box."""
    probe_reads: bool = False
    """Also probe every interval of branches read whole (collection needs them; a
    controller reading whole branches never sees them)."""
    top_logprobs: int = 0
    """Top-k logprobs per generated token (0 to 20); above 0 the episode offers
    ``signals(i)`` with the per-interval ``confidence`` and ``group_confidence``
    (``live/signals.py``)."""
    group_window: int = 128
    """Tokens per sliding window of the ``group_confidence`` signal."""
    lookahead: int = 1
    """Branch intervals generated per engine call: the one the controller asked for plus
    up to ``lookahead - 1`` of other open or next-to-open branches, billed only when
    consumed. 1 is plain sequential generation."""
    lookahead_depth: int = 2
    """Intervals an open branch may hold generated ahead of what the controller consumed.
    Above 1, a call that has room also extends open branches that still hold fewer than
    this many unconsumed intervals, so a controller that advances some branches several
    intervals per round (CMC's bursts) finds them generated; each extra level can waste
    one interval per open branch when the controller stops."""
    request_timeout: float = 300.0
    """Seconds one engine call (a batch) may take."""
    overall_timeout: float = 1800.0
    """Seconds one question may take in total."""
    max_retries: int = 2
    """Retries of the server client on connection errors and 5xx answers (its own backoff)."""
    dtype: str = "float32"
    """Compute dtype of the in-process engine (bfloat16 is ~3× slower on CPU)."""
    max_model_len: int = 4096
    """Context length of the in-process engine: prompt + branch + probe must fit."""

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise LiveConfigError(name, f"must be a positive integer, got {v!r}")

        if not isinstance(self.model, str) or not self.model.strip():
            raise LiveConfigError("model", f"must be a model folder or served name, got {self.model!r}")
        if self.backend not in BACKENDS:
            raise LiveConfigError("backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "openai" and not str(self.base_url or "").startswith(("http://", "https://")):
            raise LiveConfigError("base_url", f"must be an http(s) URL for the openai backend, got {self.base_url!r}")
        for name in ("interval_tokens", "max_tokens_per_branch", "max_branches", "probe_tokens", "lookahead",
                     "lookahead_depth", "max_model_len", "group_window"):
            positive_int(name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise LiveConfigError("seed", f"must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise LiveConfigError("max_retries", f"must be a non-negative integer, got {self.max_retries!r}")
        if not _finite(self.temperature) or self.temperature < 0:
            raise LiveConfigError("temperature", f"must be a number >= 0, got {self.temperature!r}")
        if not _finite(self.top_p) or not 0 < self.top_p <= 1:
            raise LiveConfigError("top_p", f"must be in (0, 1], got {self.top_p!r}")
        for name in ("request_timeout", "overall_timeout"):
            v = getattr(self, name)
            if not _finite(v) or v <= 0:
                raise LiveConfigError(name, f"must be a number of seconds > 0, got {v!r}")
        if (isinstance(self.top_logprobs, bool) or not isinstance(self.top_logprobs, int)
                or not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS):
            raise LiveConfigError("top_logprobs", f"must be an integer in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs!r}")
        if not isinstance(self.probe_suffix, str) or not self.probe_suffix.endswith("\\boxed{"):
            raise LiveConfigError("probe_suffix", f"must end in \\boxed{{ so the model writes an answer next, got {self.probe_suffix!r}")
        if self.dtype not in ("float32", "float16", "bfloat16", "auto"):
            raise LiveConfigError("dtype", f"must be float32, float16, bfloat16 or auto, got {self.dtype!r}")

    @property
    def tokenizer_path(self) -> str:
        """Where the tokenizer and chat template are loaded from."""
        return self.tokenizer or self.model

    def sampling(self) -> dict[str, Any]:
        """The settings a recording stores as its provenance's sampling."""
        out = asdict(self)
        for k in ("api_key_env", "request_timeout", "overall_timeout", "max_retries"):
            out.pop(k)
        return out


def _finite(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


__all__ = ["BACKENDS", "DYNASOR_SUFFIX", "MATH_INSTRUCTION", "LiveConfig", "LiveConfigError"]
