"""Fixtures for live generation: model folders, a real vLLM engine and server, and a
scripted backend for exact unit tests of the episode's bookkeeping.

Registered from ``conftest.py`` (``pytest_plugins``). Under ``CI=true`` a test whose vLLM
or model is missing fails instead of skipping, so a CI without vLLM cannot pass green.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from mlflow_autotts.live.backends.base import GenerationBackend, Generation, GenerationRequest
from mlflow_autotts.live.episode import interval_seed
from mlflow_autotts.live.models import CPU_VLLM_ENV
from mlflow_autotts.live.prompts import ChatPrompts


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "vllm: runs a real vLLM engine or server (CPU build here)")


def missing(reason: str) -> None:
    """Skip, or fail under ``CI=true``: a CI must run the live tests, not skip them."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (CI=true: live tests must run)")
    pytest.skip(reason)


def _require_vllm() -> None:
    for key, value in CPU_VLLM_ENV.items():  # before vLLM reads its environment
        os.environ.setdefault(key, value)
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # noqa: BLE001  (any import failure means no vLLM here)
        missing(f"vLLM is not importable: {type(exc).__name__}: {exc}")


@pytest.fixture(scope="session")
def demo_model() -> str:
    """The SmolLM2-135M-Instruct folder (built once into the model cache)."""
    from mlflow_autotts.live.models import demo_model_dir

    try:
        return str(demo_model_dir())
    except Exception as exc:
        missing(f"demo model unavailable: {exc}")
        raise


@pytest.fixture(scope="session")
def tiny_model(demo_model) -> str:
    """The tiny seeded Llama with SmolLM2's tokenizer (built once into the model cache)."""
    from mlflow_autotts.live.models import tiny_model_dir

    return str(tiny_model_dir())


TINY_LEN = 1024
"""Context length of the tiny engine and server (tests use short branches)."""


@pytest.fixture(scope="session")
def vllm_engine(tiny_model):
    """One in-process vLLM engine on the tiny model for the whole session."""
    _require_vllm()
    from mlflow_autotts.live.backends.vllm_engine import VLLMEngineBackend

    backend = VLLMEngineBackend(tiny_model, max_model_len=TINY_LEN)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def vllm_server(tiny_model, tmp_path_factory):
    """vLLM's OpenAI-compatible server on the tiny model, on a free loopback port."""
    _require_vllm()
    from mlflow_autotts.live.server import VLLMServer

    server = VLLMServer(tiny_model, tmp_path_factory.mktemp("vllm-server") / "server.log", max_model_len=TINY_LEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_prompts(tiny_model) -> ChatPrompts:
    from mlflow_autotts.live.config import DYNASOR_SUFFIX, MATH_INSTRUCTION

    return ChatPrompts.from_pretrained(tiny_model, MATH_INSTRUCTION, DYNASOR_SUFFIX)


# ------------------------------------------------------------- scripted backend
EOS = 0


class CharTokenizer:
    """One token per character (id = code point), EOS = 0: enough for ``ChatPrompts``."""

    chat_template = "<user>{content}<assistant>"
    eos_token_id = EOS
    name_or_path = "chars"

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True, return_dict=True):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt else "")
        return {"input_ids": [ord(c) for c in text]} if tokenize else text

    def __call__(self, text, add_special_tokens=False, split_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == EOS))


def char_prompts(suffix: str = " \\boxed{") -> ChatPrompts:
    return ChatPrompts(CharTokenizer(), "", suffix)


@dataclass
class ScriptedBackend(GenerationBackend):
    """A deterministic, batch-invariant stand-in for a model, with known branch lengths.

    Branch ``j`` (recognised from its per-interval seed) has ``lengths[j]`` tokens and ends
    with EOS; its tokens are letters. A greedy probe answers ``answers(prompt)`` followed by
    ``}``, or the scripted ``probe_texts`` in turn when given (to test nested braces).
    Every call is recorded in ``calls`` (batch sizes).
    """

    lengths: Sequence[int]
    base_seed: int = 0
    interval: int = 4
    probe_texts: Sequence[str] = ()
    fail_with: Exception | None = None

    def __post_init__(self) -> None:
        self.calls: list[int] = []
        self._by_seed = {interval_seed(self.base_seed, j, k): (j, k)
                         for j in range(len(self.lengths)) for k in range(200)}
        self._probe_iter = iter(self.probe_texts)

    def generate(self, requests: Sequence[GenerationRequest], timeout: float | None = None, cancel=None) -> list[Generation]:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append(len(requests))
        return [self._one(r) for r in requests]

    def _one(self, req: GenerationRequest) -> Generation:
        if req.temperature == 0:
            text = next(self._probe_iter, None)
            if text is None:
                text = f"{sum(req.prompt) % 3 + 1}}}"
            cut = text.find("}")
            text = text if cut < 0 else text[: cut + 1]
            text = text[: req.max_tokens]
            stopped = text.endswith("}")
            return Generation(tuple(ord(c) for c in text), text, "stop" if stopped else "length",
                              stopped_by_string=stopped, prompt_tokens=len(req.prompt))
        j, k = self._by_seed[req.seed]
        start = k * self.interval
        left = self.lengths[j] - start
        n = min(req.max_tokens, left)
        rng = random.Random(req.seed)
        ids = [ord(rng.choice("abcdefgh")) for _ in range(n)]
        ended = n == left
        if ended:
            ids[-1] = EOS
        logprobs = tuple(tuple(sorted((-rng.random() * 5 for _ in range(req.top_logprobs)), reverse=True))
                         for _ in ids) if req.top_logprobs else ()
        return Generation(tuple(ids), "".join(chr(i) for i in ids if i != EOS), "stop" if ended else "length",
                          top_logprobs=logprobs, prompt_tokens=len(req.prompt), cached_tokens=len(req.prompt) // 2)
