"""Live generation settings: one frozen dataclass, a docstring per field."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from mlflow_autotts import settings
from mlflow_autotts.controllers.base import MAX_BRANCHES
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.settings import bounded

BACKENDS = ("vllm", "openai")

DYNASOR_SUFFIX = "\n\n... Oh, I suddenly got the answer to the whole problem, **Final Answer**\n\n\\[ \\boxed{"
"""The Dynasor / Parallel-Probe probe: it ends in ``\\boxed{`` so the model writes the
answer next (SmolLM2-135M returns a number 20 times out of 20 after it)."""

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

MAX_TOP_LOGPROBS = 20
"""vLLM's default ``--max-logprobs``."""

DTYPES = ("float32", "float16", "bfloat16", "auto")

ENV_PREFIX = "AUTOTTS_LIVE_"
"""``AUTOTTS_LIVE_<FIELD>`` variables of a serving process override a model's live settings."""


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
    backend: str = bounded("vllm", choices=BACKENDS)
    """``vllm`` (an engine in this process) or ``openai`` (an OpenAI-compatible completions
    server, in practice ``python -m vllm.entrypoints.openai.api_server``)."""
    base_url: str | None = None
    """Server URL including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``; ``openai`` only."""
    replica_urls: tuple[str, ...] = ()
    """More servers of the same model (URLs including ``/v1``), beside ``base_url``; ``openai``
    only. Each episode starts on the least loaded server and stays there (its prefix cache)
    while it answers; a server that fails is out of rotation for ``replica_cooldown`` seconds
    and its episodes move on to the others."""
    replica_cooldown: float = bounded(30.0, gt=0)
    """Seconds a failed server stays out of rotation before it is tried again."""
    health_interval: float = bounded(5.0, gt=0)
    """Seconds between health checks (``GET /health``) of a server while engine calls wait
    for it; one unanswered within ``health_timeout``, or answered 5xx, fails them (HTTP 503
    when serving) instead of their waiting out ``request_timeout``."""
    health_timeout: float = bounded(10.0, gt=0)
    """Seconds a health check may take before its server counts as down: generous, since a
    CPU server busy with a large batch answers slowly and a false alarm fails every request
    waiting on it (a dead or stopped server is noticed within ``health_interval`` + this)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the server's API key (a keyless vLLM server accepts
    any; ``EMPTY`` is sent when the variable is unset)."""
    tokenizer: str | None = None
    """Folder of the tokenizer and chat template; defaults to ``model`` (with the server
    backend, ``model`` must then be a local folder)."""
    instruction: str = MATH_INSTRUCTION
    """Appended to the question (after a blank line) in the user turn; empty for none."""
    interval_tokens: int = bounded(500, ge=1)
    """Tokens a branch advances per probe step (the replay data's ``probe_freq``)."""
    max_tokens_per_branch: int = bounded(4096, ge=1)
    """A branch is finished at EOS or at this many generated tokens."""
    max_branches: int = bounded(MAX_BRANCHES, ge=1)
    """Branches a question may open (``episode.max_branches``)."""
    temperature: float = bounded(0.7, ge=0)
    """Sampling temperature of branches (probes are greedy)."""
    top_p: float = bounded(0.95, gt=0, le=1)
    """Nucleus sampling of branches."""
    seed: int = bounded(0, ge=0)
    """Base seed: interval ``k`` of branch ``j`` is sampled with a seed derived from
    (seed, j, k), so branches differ, and a branch is the same whatever the lookahead."""
    probe_suffix: str = DYNASOR_SUFFIX
    """Appended (as tokens) to a branch to probe it; must end in ``\\boxed{``."""
    probe_tokens: int = bounded(16, ge=1)
    """Most tokens a probe may generate; it stops early at the ``}`` closing the box."""
    probe_reads: bool = False
    """Also probe every interval of branches read whole (collection needs them; a
    controller reading whole branches never sees them)."""
    top_logprobs: int = bounded(0, ge=0, le=MAX_TOP_LOGPROBS)
    """Top-k logprobs per generated token (0 to 20); above 0 the episode offers
    ``signals(i)`` with the per-interval ``confidence`` and ``group_confidence``
    (``live/signals.py``)."""
    group_window: int = bounded(128, ge=1)
    """Tokens per sliding window of the ``group_confidence`` signal."""
    lookahead: int = bounded(1, ge=1)
    """Branch intervals generated per engine call: the one the controller asked for plus
    up to ``lookahead - 1`` of other open or next-to-open branches, billed only when
    consumed. 1 is plain sequential generation."""
    lookahead_depth: int = bounded(2, ge=1)
    """Intervals an open branch may hold generated ahead of what the controller consumed.
    Above 1, a call that has room also extends open branches that still hold fewer than
    this many unconsumed intervals, so a controller that advances some branches several
    intervals per round (CMC's bursts) finds them generated; each extra level can waste
    one interval per open branch when the controller stops."""
    request_timeout: float = bounded(300.0, gt=0)
    """Seconds one engine call (a batch) may take."""
    overall_timeout: float = bounded(1800.0, gt=0)
    """Seconds one question may take in total."""
    max_retries: int = bounded(2, ge=0)
    """Retries of the server client on connection errors and 5xx answers (its own backoff)."""
    dtype: str = bounded("float32", choices=DTYPES)
    """Compute dtype of the in-process engine (bfloat16 is ~3× slower on CPU)."""
    max_model_len: int = bounded(4096, ge=1)
    """Context length of the in-process engine: prompt + branch + probe must fit."""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise LiveConfigError("model", f"must be a model folder or served name, got {self.model!r}")
        _check_types(self)
        settings.check_bounds(self, bad=LiveConfigError)  # ranges and choices, declared on the fields
        if self.backend == "openai" and not str(self.base_url or "").startswith(("http://", "https://")):
            raise LiveConfigError("base_url", f"must be an http(s) URL for the openai backend, got {self.base_url!r}")
        for url in self.replica_urls:
            if self.backend != "openai":
                raise LiveConfigError("replica_urls", f"are servers for the openai backend, not the {self.backend} backend")
            if not url.startswith(("http://", "https://")):
                raise LiveConfigError("replica_urls", f"must be http(s) URLs, got {url!r}")
        if not isinstance(self.probe_suffix, str) or not self.probe_suffix.endswith("\\boxed{"):
            raise LiveConfigError("probe_suffix", f"must end in \\boxed{{ so the model writes an answer next, got {self.probe_suffix!r}")

    @property
    def tokenizer_path(self) -> str:
        """Where the tokenizer and chat template are loaded from."""
        return self.tokenizer or self.model

    def sampling(self) -> dict[str, Any]:
        """The settings a recording stores as its provenance's sampling."""
        out = asdict(self)
        for k in ("api_key_env", "request_timeout", "overall_timeout", "max_retries", "replica_urls",
                  "replica_cooldown", "health_interval", "health_timeout"):
            out.pop(k)
        return out


def _check_types(config: LiveConfig) -> None:
    """Refuse a number of the wrong kind (``True`` or ``1.5`` for a count, ``inf`` for a
    timeout) before the declared bounds, which compare numbers only."""
    for s in settings.describe(type(config)):
        v = getattr(config, s.name)
        if s.kind == "tuple":
            if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
                raise LiveConfigError(s.name, f"must be a list of strings, got {v!r}")
            object.__setattr__(config, s.name, tuple(v))  # a stored model_config holds a list
        if s.kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
            raise LiveConfigError(s.name, f"must be an integer, got {v!r}")
        if s.kind == "float" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise LiveConfigError(s.name, f"must be a finite number, got {v!r}")


def stored_live_config(stored: Mapping[str, Any] | None,
                       environ: Mapping[str, str] = os.environ) -> LiveConfig | None:
    """A served model's live settings: the ``live`` section stored in its model_config at
    registration (field name -> value, as ``register --live-*`` wrote it), each field
    overridden by the operator's ``AUTOTTS_LIVE_<FIELD>`` variable (converted like a
    command-line value), built once into a ``LiveConfig``. None when neither names a model
    (a replay-only deployment). The operator wins so a model cannot point a server at a
    host, key or engine the operator did not choose; a request never changes them."""
    values = dict(stored or {})
    for s in settings.describe(LiveConfig):
        raw = environ.get(ENV_PREFIX + s.name.upper())
        if raw is not None and raw != "":
            values[s.name] = settings.coerce(LiveConfig, s.name, raw, where=f"${ENV_PREFIX}{s.name.upper()}")
    if not values.get("model"):
        return None
    unknown = sorted(set(values) - set(settings.names(LiveConfig)))
    if unknown:
        raise LiveConfigError(unknown[0], f"is not a live setting; valid: {', '.join(settings.names(LiveConfig))}")
    return LiveConfig(**values)


__all__ = ["BACKENDS", "DTYPES", "DYNASOR_SUFFIX", "ENV_PREFIX", "MATH_INSTRUCTION", "LiveConfig", "LiveConfigError",
           "stored_live_config"]
