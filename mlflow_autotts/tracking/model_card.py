"""What the registry page says about a controller model as a whole: its description and tags.

A version's page says what that version is and how it did (``tracking/model_registry.py``,
``promotion/gate.py``); the registered model's page says what every version is, what the
aliases mean and how to serve one. ``register`` writes both when a model is first registered
and refreshes them on every registration, so they follow the installed autotts; a
description someone wrote by hand in the UI (one that does not start with
:data:`TITLE`) is kept.
"""

from __future__ import annotations

from mlflow_autotts.serving.columns import ACTIONS_COLUMN, LIVE_COLUMNS, ROW_COLUMNS
from mlflow_autotts.serving.payload import INTERVAL, QUESTION, TRAJECTORY

TITLE = "**An autotts test-time-scaling controller.**"
"""The description's first words: a description that starts with them is autotts's to refresh."""
KIND_TAG = "autotts.kind"
SERVE_TAG = "autotts.serve"


def model_tags(name: str, champion: str = "champion") -> dict[str, str]:
    """Two short tags: what the model is and the command that serves it."""
    return {KIND_TAG: "test-time-scaling controller (pyfunc)", SERVE_TAG: f"autotts serve models:/{name}@{champion}"}


def model_description(name: str, champion: str = "champion") -> str:
    """The registered model's description (markdown): what a version holds, the aliases, how to
    serve one and what it answers, how a version becomes champion."""
    uri = f"models:/{name}@{champion}"
    rows = ", ".join(f"`{c}`" for c in ROW_COLUMNS)
    live = ", ".join(f"`{c}`" for c in LIVE_COLUMNS)
    return f"""{TITLE} For each question it decides how many reasoning branches of a language model to \
open, how far to read each (probing their intermediate answers) and when to stop and vote, so that the \
answer costs fewer tokens than plain self-consistency at the same accuracy.

Each version is an MLflow pyfunc model (models from code): the controller's Python source is its \
`source/` artifact, its budget β and parameters are the model's `model_config`; its own page says \
where it comes from and, once gated, the gate's report with a link to the gate's run.

**Aliases.** `@challenger`: the validated winner of the latest `autotts search`. `@candidate`: set \
it here to have `autotts gatekeeper` gate the version. `@{champion}`: the version that passed the replay \
gate last (`autotts promote` or the gatekeeper move it; nothing else should).

**Serve it.**

```bash
autotts serve {uri}        # an OpenAI-compatible endpoint (chat completions, responses)
mlflow models serve -m {uri} --env-manager local -p 5001   # /invocations
```

`/invocations` takes one row per question: `{QUESTION}`, and `{TRAJECTORY}` (the question's \
pre-collected branches, `[probe_answers, branch_tokens, final_answer]` triples; `{INTERVAL}` their \
probe step) to replay them, or no `{TRAJECTORY}` to generate live on the backend the version was \
registered with (`--live-model`, `--live-base-url`; `AUTOTTS_LIVE_*` variables where it is served \
override them). Params: `beta`, `mode` (`auto`, `replay`, `live`), `shuffle_seed`, `return_actions`. \
Each row answers {rows}; `{ACTIONS_COLUMN}` when asked for; a live row adds {live}.

**Promote a version.** `autotts promote --name {name} --from challenger --to {champion} --gate DATA` \
replays both versions on the gate data and moves `@{champion}` only if the candidate keeps accuracy \
within the rule's limit at no more tokens than it allows.
"""


def is_autotts_description(text: str | None) -> bool:
    """Whether ``text`` is empty or one autotts wrote (so refreshing it loses nobody's words)."""
    return not (text or "").strip() or (text or "").lstrip().startswith(TITLE)


__all__ = ["KIND_TAG", "SERVE_TAG", "TITLE", "is_autotts_description", "model_description", "model_tags"]
