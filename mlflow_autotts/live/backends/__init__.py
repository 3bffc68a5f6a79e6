"""Generation backends: one small interface, an in-process vLLM engine and a server client."""

from __future__ import annotations

import os
from typing import Callable

from mlflow_autotts.live.backends.base import (
    GenerationBackend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationRequest,
)
from mlflow_autotts.live.backends.openai_server import OpenAIServerBackend
from mlflow_autotts.live.backends.replicas import ReplicaBackend
from mlflow_autotts.live.backends.vllm_engine import VLLMEngineBackend
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.plugins import Registry


GENERATION_BACKENDS: Registry[Callable[[LiveConfig], GenerationBackend]] = Registry("generation backend")
"""Factories by ``LiveConfig.backend`` (whose check lists the same names: ``live.config.BACKENDS``)."""


@GENERATION_BACKENDS.register("openai")
def _openai_server(config: LiveConfig) -> GenerationBackend:
    servers = [OpenAIServerBackend(url, config.model, os.environ.get(config.api_key_env), timeout=config.request_timeout,
                                   max_retries=config.max_retries, health_interval=config.health_interval,
                                   health_timeout=config.health_timeout)
               for url in (config.base_url or "", *config.replica_urls)]
    return servers[0] if len(servers) == 1 else ReplicaBackend(servers, config.replica_cooldown)


@GENERATION_BACKENDS.register("vllm")
def _vllm_engine(config: LiveConfig) -> GenerationBackend:
    return VLLMEngineBackend(config.model, dtype=config.dtype, max_model_len=config.max_model_len, seed=config.seed)


def make_backend(config: LiveConfig) -> GenerationBackend:
    """The backend ``config`` describes (an engine start takes seconds to minutes)."""
    return GENERATION_BACKENDS.get(config.backend, "live config: backend")(config)


__all__ = ["GENERATION_BACKENDS", "GenerationBackend", "BackendError", "BackendUnavailable", "Generation", "GenerationRequest", "OpenAIServerBackend", "ReplicaBackend",
           "VLLMEngineBackend", "make_backend"]
