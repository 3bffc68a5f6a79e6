"""Generation backends: one small interface, an in-process vLLM engine and a server client."""

from __future__ import annotations

import os

from mlflow_autotts.live.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationRequest,
)
from mlflow_autotts.live.backends.openai_server import OpenAIServerBackend
from mlflow_autotts.live.backends.vllm_engine import VLLMEngineBackend
from mlflow_autotts.live.config import LiveConfig


def make_backend(config: LiveConfig) -> Backend:
    """The backend ``config`` describes (an engine start takes seconds to minutes)."""
    if config.backend == "openai":
        return OpenAIServerBackend(config.base_url or "", config.model, os.environ.get(config.api_key_env),
                                   timeout=config.request_timeout, max_retries=config.max_retries)
    return VLLMEngineBackend(config.model, dtype=config.dtype, max_model_len=config.max_model_len, seed=config.seed)


__all__ = ["Backend", "BackendError", "BackendUnavailable", "Generation", "GenerationRequest", "OpenAIServerBackend",
           "VLLMEngineBackend", "make_backend"]
