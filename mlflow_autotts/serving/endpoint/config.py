"""``ServeConfig``: the settings of ``autotts serve`` (one frozen dataclass, as every command).

Everything here is the operator's: a request may choose β within ``[min_beta, max_beta]``,
a cap on billed tokens up to ``max_token_cap`` and a deadline up to ``max_deadline_seconds``,
and nothing about where generation runs (that is the model's live settings and the
``AUTOTTS_LIVE_<FIELD>`` variables of the serving process, as for ``mlflow models serve``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.serving.endpoint.protocol import RequestLimits
from mlflow_autotts.serving.endpoint.tracing import TraceSettings
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
    request: RequestLimits = field(default_factory=RequestLimits)
    """What one request may ask for (β range, token cap, deadline, question length): a part,
    offered as flat options."""
    max_request_bytes: int = bounded(1_000_000, ge=1024)
    """Largest body of an OpenAI route's request; a larger one is a 400."""
    max_invocations_bytes: int = bounded(256_000_000, ge=1024)
    """Largest ``/invocations`` body (replay rows carry every branch, so it is larger); a larger
    one is a 400 (``mlflow models serve`` sets no limit)."""
    max_concurrent_requests: int = bounded(64, ge=1)
    """Requests whose episodes run at once (one worker thread each); the engine batches their
    branches."""
    max_queued_requests: int = bounded(256, ge=0)
    """Requests admitted beyond ``max_concurrent_requests`` to wait for a worker; one more is a 429."""
    log_level: str = bounded("info", choices=("critical", "error", "warning", "info", "debug"))
    """uvicorn's log level."""
    traces: TraceSettings = field(default_factory=TraceSettings)
    """One MLflow trace per request, written off the request path (experiment, queue, flush at
    shutdown): a part, offered as flat options."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if not self.model_uri.strip():
            raise AutoTTSError("serve config: model_uri is empty")


__all__ = ["ServeConfig"]
