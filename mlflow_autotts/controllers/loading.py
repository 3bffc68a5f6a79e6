"""Resolving a controller reference: a registered name or a source file ``path.py[:Class]``.

A built-in is a name in the controller registry and nothing else; only it is turned into a
class in this process. A source file (a user's file, a search candidate, a registered
model's source) is read as text and parsed, never executed: its code runs only in the
sandbox child (``sandbox.worker``), which uses ``pick_controller_class`` on the module it
built there.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_autotts.controllers.base import Controller, build_controller
from mlflow_autotts.controllers.registry import get_controller_class
from mlflow_autotts.errors import ControllerError

MODEL_URI_SCHEMES = ("models:", "runs:")
"""Schemes of the MLflow model URIs a controller reference may be."""


def is_model_uri(ref: str) -> bool:
    """True when ``ref`` is meant as an MLflow model URI (``models:…``, ``runs:…``), the one
    check every layer uses to route a controller reference (pure string: no MLflow here).

    The scheme decides, not the form: ``models:name`` (no slash) counts as a model URI, so
    that it reaches ``tracking.resolve``, which refuses it and names the forms MLflow takes
    (``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/<model id>``,
    ``runs:/<run id>/<path>``), instead of being looked up as a registry name or a file."""
    return ref.startswith(MODEL_URI_SCHEMES)


def split_source_ref(ref: str) -> tuple[str, str | None] | None:
    """``("path.py", "Class" | None)`` if ``ref`` names a source file, else None."""
    path, _, cls = ref.partition(":") if ref.count(":") == 1 and not is_model_uri(ref) else (ref, "", "")
    if path.endswith(".py"):
        return path, (cls or None)
    return None


def controllers_in_module(module: Any) -> list[type]:
    """Controller subclasses defined (not merely imported) in ``module``."""
    return [
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Controller) and obj is not Controller
        and obj.__module__ == module.__name__
    ]


def pick_controller_class(module: Any, class_name: str | None, where: str) -> type:
    if class_name:
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and callable(getattr(cls, "solve", None))):
            found = ", ".join(c.__name__ for c in controllers_in_module(module)) or "none"
            raise ControllerError(f"{where}: no controller class {class_name!r} (Controller classes found: {found})")
        return cls
    found = controllers_in_module(module)
    if not found:
        raise ControllerError(f"{where}: defines no Controller subclass")
    if len(found) > 1:
        names = ", ".join(c.__name__ for c in found)
        raise ControllerError(f"{where}: defines several controllers ({names}); name one as {where}:Class")
    return found[0]


def source_label(text: str, class_name: str | None, where: str) -> tuple[str, str]:
    """``(label, class name)`` of a controller source read from its AST, never by running it.

    The class is ``class_name``, or the one top-level class whose bases name a controller
    (``…Controller`` or a built-in's class); its label is a string literal ``name = "…"``
    in the class body, else the class name. What the sandbox reports after building it is
    the authority for scoring; this is for tables, messages and checks before any run."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise ControllerError(f"{where}: does not parse (line {exc.lineno}): {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise ControllerError(f"{where}: cannot be parsed: {type(exc).__name__}") from None
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    if class_name:
        picked = [c for c in classes if c.name == class_name]
        if not picked:
            found = ", ".join(c.name for c in classes) or "none"
            raise ControllerError(f"{where}: no top-level class {class_name!r} (classes found: {found})")
    else:
        picked = [c for c in classes if any(_names_controller(b) for b in c.bases)]
        if not picked:
            raise ControllerError(f"{where}: defines no Controller subclass")
        if len(picked) > 1:
            names = ", ".join(c.name for c in picked)
            raise ControllerError(f"{where}: defines several controllers ({names}); name one as {where}:Class")
    cls = picked[-1]  # a later definition of the same name wins, as at run time
    for node in cls.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        if any(isinstance(t, ast.Name) and t.id == "name" for t in targets) and isinstance(value, ast.Constant) \
                and isinstance(value.value, str) and value.value.strip():
            return value.value.strip()[:200], cls.name
    return cls.name, cls.name


def _names_controller(base: ast.expr) -> bool:
    name = base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else ""
    return name.endswith("Controller") or name in _BUILTIN_CLASS_NAMES


_BUILTIN_CLASS_NAMES = frozenset({"SC", "ASC", "ESC", "ParallelProbe", "CMC", "DeepConf"})
"""Classes of the reference controllers a source may subclass without ``Controller`` in the name."""


def load_controller_class(ref: str) -> type:
    """The class of a built-in (registered) controller. A source file is never turned into a
    class here: only the sandbox child does that (``docs/architecture.md``, "The trust
    boundary")."""
    if split_source_ref(ref) is not None:
        raise ControllerError(f"controller {ref!r} is not built in: its code runs only in the sandbox")
    return get_controller_class(ref)


@dataclass(frozen=True)
class ControllerSpec:
    """A picklable recipe for a controller, rebuilt in each worker process."""

    ref: str
    """Registered name or ``path.py[:Class]``."""
    beta: float | None = None
    """β, or None for the class default."""
    params: dict[str, Any] = field(default_factory=dict)
    """Extra keyword parameters of the controller."""

    @property
    def is_builtin(self) -> bool:
        """A registered (built-in) controller, trusted to run in process; anything else is a
        source file whose numbers the sandbox computes (``docs/architecture.md``, "The trust
        boundary")."""
        return split_source_ref(self.ref) is None

    def source(self) -> tuple[str, str | None]:
        """(source text, class name or None) of a source-file controller, read without
        executing it."""
        src = split_source_ref(self.ref)
        if src is None:
            raise ControllerError(f"controller {self.ref!r} is a registered name, not a source file")
        path, class_name = src
        try:
            return Path(path).read_text(encoding="utf-8"), class_name
        except OSError as exc:
            raise ControllerError(f"controller source {path!r} cannot be read: {exc.strerror or exc}") from None

    def controller_class(self) -> type:
        """The built-in's class; a source file is refused (it runs only in the sandbox)."""
        return load_controller_class(self.ref)

    def build(self) -> Controller:
        """The built-in controller, in this process; a source file is refused."""
        return build_controller(self.controller_class(), self.beta, self.params)

    @property
    def label(self) -> str:
        """A short name for tables: the registry name, or the source's ``name`` read from its
        AST (``source_label``), so naming a candidate never runs it."""
        src = split_source_ref(self.ref)
        if src is None:
            return self.ref
        text, class_name = self.source()
        return source_label(text, class_name, src[0])[0]
