"""Resolving a controller reference: a registered name or a source file ``path.py[:Class]``.

Loading a source file executes it: only do this for trusted code. Explorer-written
candidates go through ``mlflow_autotts.sandbox.parent`` instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
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


def load_source_module(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ControllerError(f"controller source {str(path)!r} does not exist")
    source = path.read_bytes()
    mod_name = f"autotts_controller_{hashlib.sha256(source).hexdigest()[:16]}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the file is the user's: report, don't crash
        del sys.modules[mod_name]
        line = ""
        if isinstance(exc, SyntaxError):
            line = f" (line {exc.lineno})"
        raise ControllerError(f"controller source {str(path)!r} failed to import{line}: {type(exc).__name__}: {exc}") from None
    return module


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


def load_controller_class(ref: str) -> type:
    """The class a reference names: a registered name or ``path.py[:Class]``."""
    src = split_source_ref(ref)
    if src is None:
        return get_controller_class(ref)
    path, class_name = src
    return pick_controller_class(load_source_module(path), class_name, path)


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
        return load_controller_class(self.ref)

    def build(self) -> Controller:
        return build_controller(self.controller_class(), self.beta, self.params)

    @property
    def label(self) -> str:
        """A short name for tables: the registry name, or the source file's class."""
        src = split_source_ref(self.ref)
        if src is None:
            return self.ref
        cls = self.controller_class()
        return getattr(cls, "name", "") or cls.__name__
