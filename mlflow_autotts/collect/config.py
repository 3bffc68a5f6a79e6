"""Collection settings: one dataclass, the single source of ``autotts collect``'s options,
YAML keys and MLproject parameters (derived by ``mlflow_autotts.settings``).

The live settings a collection generates with are built from them once, when the config is
(``CollectConfig.generation``, and one per server in ``CollectConfig.endpoints``): every
function below takes that ``LiveConfig`` instead of rebuilding one from the flat fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow_autotts import settings
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live.collection import collection_config
from mlflow_autotts.live.config import BACKENDS, MATH_INSTRUCTION, MAX_TOP_LOGPROBS, LiveConfig, LiveConfigError
from mlflow_autotts.settings import bounded, split_list

_LIVE = LiveConfig("-")
_FLAT = ("model", "backend", "base_url", "tokenizer", "instruction", "interval_tokens", "max_tokens_per_branch",
         "temperature", "top_p", "seed", "top_logprobs", "group_window")
"""LiveConfig fields that collect offers as settings of its own (``base_url``: the first
server's; the others are in ``endpoints``); the rest go in ``live``."""
_FIXED = ("max_branches", "lookahead", "lookahead_depth", "probe_reads")
"""LiveConfig fields collection sets itself (``live/collection.py``)."""


COLLECT_EXPERIMENT = "autotts-collect"
"""The MLflow experiment of collections unless ``--experiment`` names another."""


class CollectConfigError(AutoTTSError):
    """A collect setting with a bad value."""


@dataclass(frozen=True)
class CollectConfig:
    """The settings of ``autotts collect``: its CLI options, ``--config`` YAML keys and
    MLproject parameters are derived from these fields."""

    questions: str
    """Question file: .jsonl, .csv or .parquet with a question column and a gold-answer column."""
    output: str
    """The Parquet replay file to publish (its folder is created); unfinished work waits in a
    hidden folder beside it, ``.<name>.collect``, until every question is done."""
    model: str
    """Model folder (in-process vLLM) or the name a server serves it under (openai backend);
    ``demo`` is SmolLM2-135M-Instruct, built into the model cache on first use."""
    backend: str = bounded("vllm", choices=BACKENDS)
    """``vllm`` (an engine in this process) or ``openai`` (an OpenAI-compatible server with
    logprobs and token ids, in practice vLLM's)."""
    base_url: tuple[str, ...] = ()
    """Server URL including /v1 (openai backend). Several URLs spread the questions over
    several servers: each keeps ``concurrency`` questions in flight, taken from one shared
    queue (a faster server does more); a server that fails is left out with a warning and
    its question goes back to the queue. Not part of ``--resume``'s settings check."""
    tokenizer: str | None = None
    """Folder of the tokenizer and chat template; defaults to the model."""
    question_column: str = "question"
    """Column of the question file holding the questions."""
    answer_column: str = "answer"
    """Column holding the gold answers; empty for questions without them."""
    limit: int | None = bounded(None, ge=1)
    """Collect only the first questions of the file."""
    benchmark: str | None = None
    """Benchmark name recorded in the provenance; defaults to the question file's stem."""
    branches: int = bounded(16, ge=1)
    """Branches sampled per question, each generated to its end (EOS or the token limit)."""
    interval_tokens: int = _LIVE.interval_tokens
    """Tokens between probes (the replay's probe step)."""
    max_tokens_per_branch: int = _LIVE.max_tokens_per_branch
    """A branch ends at EOS or at this many tokens."""
    temperature: float = _LIVE.temperature
    """Sampling temperature of branches (probes are greedy)."""
    top_p: float = _LIVE.top_p
    """Nucleus sampling of branches."""
    seed: int = 0
    """Base seed; interval k of branch j is sampled with a seed derived from (seed, j, k)."""
    top_logprobs: int = bounded(5, ge=0, le=MAX_TOP_LOGPROBS)
    """Top-k logprobs per token for the confidence signals (0 for none; at most 20)."""
    group_window: int = _LIVE.group_window
    """Tokens per sliding window of the lowest group confidence signal."""
    instruction: str = MATH_INSTRUCTION
    """Appended to each question in the user turn."""
    live: dict[str, Any] = field(default_factory=dict)
    """Other live settings as key=value (probe_suffix, probe_tokens, dtype, max_model_len,
    request_timeout, overall_timeout, api_key_env, max_retries)."""
    concurrency: int = bounded(8, ge=1)
    """Questions in flight at once (per server with several base URLs); their branches share the engine's batches
    (``benchmarks/collect_throughput.py`` compares collection with plain generation at this
    concurrency and in one batch)."""
    resume: bool = False
    """Continue an interrupted collection into the same output with the same settings."""
    experiment: str = COLLECT_EXPERIMENT
    """MLflow experiment of the run (each kind of work has its own)."""
    run_name: str | None = None
    """MLflow run name; unset means one that says what was collected, e.g.
    collect-SmolLM2-135M-Instruct-40 (the model and the number of questions)."""
    mlflow: bool = True
    """Log the collection to MLflow (MLFLOW_TRACKING_URI)."""
    progress: bool = True
    """Show a progress bar."""
    # Not settings (init=False: no option, key or parameter): built from the settings above
    # once, by __post_init__.
    generation: LiveConfig = field(init=False, repr=False, compare=False)
    """The live settings each question's episode runs with, collection's own fixed (every
    branch read whole and probed, ``live/collection.py``); its base_url is the first server's."""
    endpoints: tuple[LiveConfig, ...] = field(init=False, repr=False, compare=False)
    """``generation`` once per server URL (openai backend), else just ``generation``."""

    def __post_init__(self) -> None:
        for name in ("branches", "concurrency", "limit", "top_logprobs"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise CollectConfigError(f"collect config: {name} must be an integer, got {v!r}")
        settings.check_bounds(self, bad=lambda name, why: CollectConfigError(f"collect config: {name} {why}"))
        if not str(self.output).endswith(".parquet"):
            raise CollectConfigError(f"collect config: output must be a .parquet file, got {self.output!r}")
        if not self.question_column:
            raise CollectConfigError("collect config: question_column must not be empty")
        known = {f.name for f in fields(LiveConfig)}
        for key in self.live:
            if key in _FIXED:
                raise CollectConfigError(f"collect config: live.{key} is set by collection itself")
            if key in _FLAT:
                raise CollectConfigError(f"collect config: live.{key}: use the {key} setting instead")
            if key not in known:
                raise CollectConfigError(f"collect config: live.{key} is not a live setting; known: "
                                         f"{', '.join(sorted(known - set(_FIXED) - set(_FLAT)))}")
        urls = _urls(self.base_url, self.backend)
        live = self._live(urls[0] if urls else None)  # every live value checked now, before anything runs
        object.__setattr__(self, "base_url", urls)
        object.__setattr__(self, "generation", live)
        object.__setattr__(self, "endpoints", (live, *(replace(live, base_url=u) for u in urls[1:])))

    def _live(self, base_url: str | None) -> LiveConfig:
        """The one LiveConfig the flat settings and ``live`` describe; its errors as collect's."""
        values = {name: getattr(self, name) for name in _FLAT if name != "base_url"}
        try:
            return collection_config(LiveConfig(**values, **self.live, base_url=base_url), self.branches)
        except LiveConfigError as exc:
            raise CollectConfigError(str(exc).replace("live config: ", "collect config: ", 1)) from None
        except TypeError as exc:
            raise CollectConfigError(f"collect config: live: {exc}") from None

    @property
    def benchmark_name(self) -> str:
        return self.benchmark or Path(self.questions).stem

    def fingerprint(self) -> dict[str, Any]:
        """What the collected data depends on: a resumed collection must match it."""
        keep = ("question_column", "answer_column", "limit")
        out = {k: getattr(self, k) for k in keep}
        out.update(self.generation.sampling())
        out.pop("base_url")  # a resumed collection may run on other servers
        return out


def _urls(value: Any, backend: str) -> tuple[str, ...]:
    """The server URLs, each checked (one string may hold several, comma-separated)."""
    items = split_list(value) if isinstance(value, str) else list(value or ())
    urls: list[str] = []
    for n, url in enumerate(items, 1):
        where = f"base_url {url!r}" + (f" (URL {n} of {len(items)})" if len(items) > 1 else "")
        try:
            parts = urlsplit(str(url))
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
        except ValueError:  # a port that is not a number
            ok = False
        if not isinstance(url, str) or not ok:
            raise CollectConfigError(f"collect config: {where} is not an http(s) server URL "
                                     "(e.g. http://127.0.0.1:8000/v1)")
        url = url.rstrip("/")
        if url in urls:
            raise CollectConfigError(f"collect config: {where} is listed twice")
        urls.append(url)
    if backend == "openai" and not urls:
        raise CollectConfigError("collect config: base_url: the openai backend needs a server URL "
                                 "(e.g. http://127.0.0.1:8000/v1)")
    if backend != "openai" and urls:
        raise CollectConfigError(f"collect config: base_url is for the openai backend; the {backend} backend "
                                 "runs the model in this process")
    return tuple(urls)


__all__ = ["CollectConfig", "CollectConfigError"]
