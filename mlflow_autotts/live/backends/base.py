"""The generation backend interface: batched continuations of token-id prompts.

A backend knows nothing about branches, probes or billing (that is the episode's job,
``docs/architecture.md``, live generation): it turns a batch of "continue these token ids
by at most n tokens, with these sampling settings" into one engine call and returns the
generated ids. Every request of a batch is in flight at once, so the engine batches them;
several threads may call one backend at the same time (several questions at once).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlflow_autotts.errors import BackendError


class BackendUnavailable(BackendError):
    """The backend is down, unreachable or did not answer in time (serving maps it to 503)."""


class GenerationCancelled(BackendError):
    """The caller's ``cancel`` event was set while its batch ran: the batch's requests were
    aborted in the engine (the caller stops; it is nobody's failure)."""


@dataclass(frozen=True)
class GenerationRequest:
    """Continue ``prompt`` by at most ``max_tokens`` tokens."""

    prompt: tuple[int, ...]
    """Token ids: the question's chat prompt, the branch so far, maybe a probe suffix."""
    max_tokens: int
    temperature: float = 0.0
    """0 is greedy."""
    top_p: float = 1.0
    seed: int | None = None
    """Per-request seed: identical prompts with one seed would give identical samples."""
    top_logprobs: int = 0
    """Top-k logprobs per generated token (0: none)."""
    stop: tuple[str, ...] = ()
    """Stop strings (kept in the output); generation stops at EOS too unless ``ignore_eos``."""
    ignore_eos: bool = False
    """Generate exactly ``max_tokens`` tokens (benchmarks: the same lengths as a recording)."""


@dataclass(frozen=True)
class Generation:
    """What one request produced."""

    token_ids: tuple[int, ...]
    """Generated ids (EOS included when the model ended)."""
    text: str
    """Their text, special tokens skipped."""
    finish_reason: str
    """``stop`` (EOS or a stop string) or ``length`` (``max_tokens`` reached)."""
    stopped_by_string: bool = False
    """True when a stop string, not EOS, ended it."""
    top_logprobs: tuple[tuple[float, ...], ...] = field(default=(), repr=False)
    """Per generated token, the top-k logprobs (empty without logprobs)."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens served from the prefix cache (``num_cached_tokens`` /
    ``usage.prompt_tokens_details.cached_tokens``)."""

    @property
    def ended(self) -> bool:
        """True when the model emitted EOS (not a length or stop-string cut)."""
        return self.finish_reason == "stop" and not self.stopped_by_string


class GenerationBackend(ABC):
    """Batched generation on one model; thread-safe."""

    max_model_len: int | None = None
    """Longest prompt + generation the engine accepts, when known."""

    def context_length(self) -> int | None:
        """Longest prompt + generation the engine accepts, as the engine itself says (None
        when it cannot tell): episodes refuse a question too long for it before generating."""
        return self.max_model_len

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], timeout: float | None = None,
                 cancel: threading.Event | None = None) -> list[Generation]:
        """Run ``requests`` as one concurrent batch; results in request order.

        Raises ``BackendUnavailable`` when the engine is down or the batch takes longer
        than ``timeout`` seconds (its requests are then cancelled), ``GenerationCancelled``
        soon after ``cancel`` is set (its requests are aborted in the engine, so a caller
        that went away stops costing), ``BackendError`` when it refuses a request.
        """

    def probe(self, prompts: Sequence[Sequence[int]], max_tokens: int, stop: tuple[str, ...] = ("}",),
              timeout: float | None = None) -> list[Generation]:
        """Greedy continuations of ``prompts`` (probes), stopping at ``stop`` strings."""
        return self.generate([GenerationRequest(tuple(p), max_tokens, stop=stop) for p in prompts], timeout)

    def session(self) -> GenerationBackend:
        """The backend one episode calls: itself, or (several servers) a view that keeps an
        episode on one server while it is up, so its branches reuse that server's prefix cache."""
        return self

    def check_model(self) -> None:
        """Raise ``BackendError`` naming the model when the backend does not serve it
        (``BackendUnavailable`` when it cannot be asked): a collection checks before it starts."""

    def describe(self) -> dict[str, str]:
        """What generated: backend kind and engine version, for a recording's provenance."""
        return {}

    def close(self) -> None:
        """Release the engine or connection pool."""

    def __enter__(self) -> GenerationBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["GenerationBackend", "BackendError", "BackendUnavailable", "Generation", "GenerationCancelled",
           "GenerationRequest"]
