"""What a served model's live settings may name, decided by the operator, not the model.

A model's ``live`` section (``serving.live_mode``) says which environment variable holds
the generation server's API key. The model comes from the artifact store, so on its own
word it could make the serving process send any variable (a cloud credential, a database
password) to its server. Only names the operator allowed where the model is served are
accepted: ``AUTOTTS_ALLOWED_API_KEY_ENVS`` (comma-separated; default ``OPENAI_API_KEY``),
or the variable the operator chose with ``AUTOTTS_LIVE_API_KEY_ENV``. Checked when the model
loads, before any serving mode is built (``serving.pyfunc``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from mlflow_autotts.errors import ControllerError
from mlflow_autotts.live.config import ENV_PREFIX

ALLOWED_API_KEY_ENVS_ENV = "AUTOTTS_ALLOWED_API_KEY_ENVS"
"""The operator's allowlist of API-key variable names, comma-separated."""
DEFAULT_ALLOWED_API_KEY_ENVS = ("OPENAI_API_KEY",)
API_KEY_OVERRIDE_ENV = f"{ENV_PREFIX}API_KEY_ENV"
"""The operator's own choice of variable (``serving.live_mode``'s override of the field)."""


def allowed_api_key_envs(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The API-key variable names this serving process allows (what the operator set)."""
    raw = environ.get(ALLOWED_API_KEY_ENVS_ENV)
    names = DEFAULT_ALLOWED_API_KEY_ENVS if raw is None else tuple(n.strip() for n in raw.split(","))
    return frozenset(n for n in names if n)


def check_api_key_env(config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> None:
    """Refuse a model whose live settings name an API-key variable the operator did not allow.

    A name set by the operator's ``AUTOTTS_LIVE_API_KEY_ENV`` wins over the model's and is
    allowed; a model without the field uses the package default (``OPENAI_API_KEY``)."""
    if environ.get(API_KEY_OVERRIDE_ENV):
        return
    live = config.get("live") or {}
    if not isinstance(live, Mapping):
        raise ControllerError(f"this model's live settings must be a mapping, got {type(live).__name__}")
    name = live.get("api_key_env")
    if name is None:
        return
    allowed = allowed_api_key_envs(environ)
    if not isinstance(name, str) or name not in allowed:
        shown = ", ".join(sorted(allowed)) or "none"
        raise ControllerError(f"this model's live settings read the API key from ${name!s:.100}, a variable the "
                              f"operator has not allowed (allowed: {shown}); refusing to load it: to allow it, set "
                              f"{ALLOWED_API_KEY_ENVS_ENV} (comma-separated names) where the model is served")


__all__ = ["ALLOWED_API_KEY_ENVS_ENV", "allowed_api_key_envs", "check_api_key_env"]
