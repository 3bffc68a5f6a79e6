"""The response's columns and their MLflow types, declared once.

``predict`` (``serving/pyfunc.py``) writes them, the live mode fills its own, and the logged
model's signature (``tracking/model.py``) lists exactly these, so what ``mlflow models serve``
returns and what the registry page says it returns cannot drift apart. Every column is
optional in the signature: ``actions`` comes only when asked for, the live columns only with
live rows. No MLflow here (the CLI imports this at start-up).
"""

from __future__ import annotations

ROW_COLUMNS: dict[str, str] = {
    "answer": "string",
    "tokens": "long",
    "branches_opened": "long",
    "intervals": "long",
    "error": "string",
}
"""Every row's columns, in order: the answer, billed tokens, branches opened, intervals
read, and why the row has no answer (None when it has one)."""

ACTIONS_COLUMN = "actions"
"""The actions taken, as JSON, when the request's ``return_actions`` param is true."""
ACTIONS_TYPE = "string"

LIVE_COLUMNS: dict[str, str] = {
    "generated_tokens": "long",
    "probe_tokens": "long",
    "engine_calls": "long",
    "cached_prompt_tokens": "long",
    "wall_seconds": "double",
}
"""What a live row adds beside the billed ``tokens``: tokens generated (billed or not),
probe tokens, calls to the generation backend, prompt tokens its prefix cache served, and
the row's wall-clock seconds."""

RESPONSE_COLUMNS: dict[str, str] = {**ROW_COLUMNS, ACTIONS_COLUMN: ACTIONS_TYPE, **LIVE_COLUMNS}
"""Every column a response can hold, in the order a live row with actions has them."""
