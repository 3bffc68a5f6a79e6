"""What controller code may import and do: the one allowlist every layer reads.

``ALLOWED_IMPORTS`` is enforced at run time by the sandbox child (its ``__import__`` and
audit hook), checked ahead of time by the explorer's lint (``search.extract``), and
advertised to the explorer LLM (``search.prompts``): the same object in all three, so they
cannot disagree (``docs/architecture.md``, "The trust boundary").
"""

from __future__ import annotations

from typing import Iterable

ALLOWED_IMPORTS: frozenset[str] = frozenset({
    "__future__", "abc", "bisect", "collections", "collections.abc", "copy", "dataclasses",
    "decimal", "enum", "fractions", "functools", "heapq", "itertools", "math", "numbers",
    "operator", "random", "re", "statistics", "typing",
    "mlflow_autotts.controllers", "mlflow_autotts.controllers.base",
    "mlflow_autotts.controllers.voting", "mlflow_autotts.controllers.registry",
    "mlflow_autotts.controllers.cmc", "mlflow_autotts.controllers.baselines",
    "mlflow_autotts.controllers.parallel_probe", "mlflow_autotts.controllers.deepconf", "mlflow_autotts.errors",
})
"""Modules controller code may import (exact names). The sandbox child loads all of them
before its lockdown, so an import later only reads ``sys.modules`` and never touches the
file system. The reference controllers' modules are here so a controller may subclass them
and so their own sources run in the sandbox. The top package ``mlflow_autotts`` is not:
through it, every loaded module would be an attribute away."""

ALLOWED_AUDIT_EVENTS: frozenset[str] = frozenset({
    "exec", "compile", "builtins.id", "time.sleep", "array.__new__", "sys.unraisablehook",
    "object.__getattr__", "object.__setattr__", "object.__delattr__",
})
"""PEP 578 audit events controller code may raise after the lockdown. Every other event is
denied and counted as a forbidden operation, except ``sys._getframe``, which is denied with
a ``ValueError`` (namedtuple, TypeVar and Enum fall back gracefully on it) and counts only
when that error escapes the controller. The three ``object.*`` events pass, but reading a
frame attribute (``FRAME_ATTRIBUTES``) or replacing ``__code__`` through them is denied."""

FRAME_ATTRIBUTES: frozenset[str] = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
"""Attributes that lead from a traceback, generator or coroutine to a frame, and from a
frame to every namespace of the process."""


def allowed_imports_text(modules: Iterable[str] = ALLOWED_IMPORTS) -> str:
    """The allowlist as one line (standard modules first), for messages and the explorer prompt."""
    plain = sorted(m for m in modules if not m.startswith("mlflow_autotts"))
    ours = sorted(m for m in modules if m.startswith("mlflow_autotts"))
    return ", ".join(plain + ours)
