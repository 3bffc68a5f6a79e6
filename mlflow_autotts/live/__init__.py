"""Live generation: the controller API over real generation on vLLM.

``docs/architecture.md`` (live generation) describes the design. The pieces:
``config.LiveConfig`` (settings), ``answers`` (the one answer extractor), ``prompts``
(chat-template token ids), ``backends`` (in-process vLLM engine, OpenAI-compatible server),
``episode`` (``LiveEpisode`` with the replay cost rules and lookahead; ``LiveRunner``),
``recording`` (live episodes as replay trajectories), ``signals`` (DeepConf's token and
group confidence, shared with collection), ``models`` (local demo and test model
folders), ``server`` (a vLLM server child process). Nothing here imports MLflow; vLLM,
torch and transformers are imported only when an engine, a tokenizer or a model is built.
"""

from mlflow_autotts.live.answers import (
    NO_ANSWER,
    extract_answer,
    normalize_answer,
    probe_answer,
)
from mlflow_autotts.live.backends import (
    GenerationBackend,
    BackendError,
    BackendUnavailable,
    make_backend,
)
from mlflow_autotts.live.config import LiveConfig, LiveConfigError
from mlflow_autotts.live.episode import (
    LiveEpisode,
    LiveResult,
    LiveRunner,
    LiveStats,
    LiveTimeout,
)
from mlflow_autotts.live.prompts import ChatPrompts
from mlflow_autotts.live.recording import record_episode, record_set

__all__ = [
    "NO_ANSWER",
    "GenerationBackend",
    "BackendError",
    "BackendUnavailable",
    "ChatPrompts",
    "LiveConfig",
    "LiveConfigError",
    "LiveEpisode",
    "LiveResult",
    "LiveRunner",
    "LiveStats",
    "LiveTimeout",
    "extract_answer",
    "make_backend",
    "normalize_answer",
    "probe_answer",
    "record_episode",
    "record_set",
]
