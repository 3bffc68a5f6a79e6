"""``ServeConfig``: the settings of ``autotts serve`` (one frozen dataclass, as every command).

Everything here is the operator's: a request may choose β within ``[min_beta, max_beta]``,
a cap on billed tokens up to ``max_token_cap`` and a deadline up to ``max_deadline_seconds``,
and nothing about where generation runs (that is the model's live settings and the
``AUTOTTS_LIVE_<FIELD>`` variables of the serving process, as for ``mlflow models serve``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.settings import bounded, check_bounds


@dataclass(frozen=True)
class ServeConfig:
    """The settings of ``autotts serve``."""

    model_uri: str
    """The registered controller to serve: ``models:/<name>@<alias>``, ``models:/<name>/<version>``
    or ``runs:/…``; downloaded and checked against its recorded digest before anything runs."""
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = bounded(5005, ge=0, le=65535)
    """Port to listen on (0: any free port, which uvicorn's start-up line names)."""
    served_model_name: str | None = None
    """The model id clients name in ``model`` and ``GET /v1/models`` lists; unset means the
    registered model's name (else the URI). The URI itself is always accepted too."""
    min_beta: float = bounded(0.0, ge=0.0, le=1.0)
    """The lowest β a request may ask for (``"beta"`` in the body, ``extra_body`` in the openai client)."""
    max_beta: float = bounded(1.0, ge=0.0, le=1.0)
    """The highest β a request may ask for."""
    max_token_cap: int = bounded(1_000_000, ge=1)
    """The largest cap on billed tokens a request may ask for (``max_completion_tokens`` /
    ``max_tokens``); a larger one is a 400."""
    max_deadline_seconds: float = bounded(3600.0, gt=0.0)
    """The longest deadline a request may ask for (``deadline_s``, seconds); a longer one is a 400.
    A request without one runs until its controller answers (or the live ``overall_timeout``)."""
    max_request_bytes: int = bounded(1_000_000, ge=1024)
    """Largest body of an OpenAI route's request; a larger one is a 400."""
    max_invocations_bytes: int = bounded(256_000_000, ge=1024)
    """Largest ``/invocations`` body (replay rows carry every branch, so it is larger); a larger
    one is a 400 (``mlflow models serve`` sets no limit)."""
    max_question_chars: int = bounded(100_000, ge=1)
    """Longest question (characters) accepted before tokenising it; the model's context is
    checked after (both are 400)."""
    max_concurrent_requests: int = bounded(64, ge=1)
    """Requests whose episodes run at once (one worker thread each); the engine batches their
    branches."""
    max_queued_requests: int = bounded(256, ge=0)
    """Requests admitted beyond ``max_concurrent_requests`` to wait for a worker; one more is a 429."""
    log_level: str = bounded("info", choices=("critical", "error", "warning", "info", "debug"))
    """uvicorn's log level."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.min_beta > self.max_beta:
            raise AutoTTSError(f"serve config: min_beta ({self.min_beta:g}) must be <= max_beta ({self.max_beta:g})")
        if not self.model_uri.strip():
            raise AutoTTSError("serve config: model_uri is empty")


__all__ = ["ServeConfig"]
