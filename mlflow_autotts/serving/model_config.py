"""What identifies a logged controller: the ``model_config`` layout and the spec it rebuilds.

A controller model differs from another only by data: its ``model_config`` (this layout)
and its source file, logged as the ``SOURCE_ARTIFACT`` artifact. The layout is written at
logging (``tracking.model``) and read at serve time (``serving.pyfunc``), so it lives here,
free of MLflow.

Layout (``MODEL_FORMAT`` 1): ``autotts`` (the format), ``controller`` (label),
``class_name``, ``registry_name`` (a built-in's registry key, else None), ``source_file``,
``source_sha256``, ``beta``, ``uses_beta``, ``params``.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlflow_autotts.controllers.base import check_beta
from mlflow_autotts.controllers.loading import ControllerSpec, split_source_ref
from mlflow_autotts.controllers.registry import is_registered
from mlflow_autotts.errors import ControllerError

MODEL_FORMAT = 1
"""Version of the layout above; ``model_config["autotts"]`` holds it and marks the model as
an autotts controller."""
SOURCE_ARTIFACT = "controller_source"
"""Name of the artifact holding the controller's source file."""


def source_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ControllerSource:
    """A controller class together with the source file that defines it."""

    cls: type
    """The controller class."""
    path: Path
    """The ``.py`` file defining it (a built-in's module file, or the user's file)."""
    registry_name: str | None
    """The registry key when the class is a registered built-in, else None."""

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def label(self) -> str:
        return getattr(self.cls, "name", "") or self.cls.__name__


def controller_source(spec: ControllerSpec) -> ControllerSource:
    """Find the class ``spec`` names and the file its source lives in."""
    cls = spec.controller_class()
    src = split_source_ref(spec.ref)
    if src is None:  # a registered name: ship the module that defines it
        path = inspect.getsourcefile(cls)
        if path is None:
            raise ControllerError(f"controller {spec.ref!r}: cannot find its source file")
        return ControllerSource(cls, Path(path), spec.ref)
    return ControllerSource(cls, Path(src[0]), None)


def model_config_for(spec: ControllerSpec) -> tuple[dict[str, Any], ControllerSource]:
    """The ``model_config`` of a logged controller, and where its source is.

    Imports and builds the controller (validating β and the parameters): trusted code only;
    see ``candidate_config`` for explorer-written sources."""
    source = controller_source(spec)
    controller = spec.build()  # validates β and the parameters before anything is logged
    cfg = controller.config()
    config = _config(label=source.label, class_name=source.cls.__name__, registry_name=source.registry_name,
                     source_file=source.path.name, text=source.text, beta=float(cfg.get("beta", controller.beta)),
                     uses_beta=bool(getattr(source.cls, "uses_beta", True)),
                     params={k: v for k, v in cfg.items() if k != "beta"})
    return config, source


def candidate_config(source: str, class_name: str, label: str, beta: float, params: Mapping[str, Any] | None = None,
                     uses_beta: bool = True) -> dict[str, Any]:
    """The ``model_config`` of an untrusted candidate, from facts, without executing it.

    ``label`` and ``uses_beta`` are what the sandbox reported; the source is only parsed
    (to check that it defines ``class_name``), never imported. The source file is named
    after the class, so a hostile label cannot choose a path."""
    if not isinstance(source, str):
        raise ControllerError(f"candidate source must be a string, got {type(source).__name__}")
    if not (isinstance(class_name, str) and class_name.isidentifier()):
        raise ControllerError(f"candidate class name must be a Python identifier, got {class_name!r}")
    if not (isinstance(label, str) and len(label) <= 200):
        raise ControllerError(f"candidate label must be a string of at most 200 characters, got {label!r:.250}")
    label = label.strip() or class_name
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ControllerError(f"candidate source does not parse (line {exc.lineno}): {exc.msg}") from None
    if not any(isinstance(node, ast.ClassDef) and node.name == class_name for node in tree.body):
        raise ControllerError(f"candidate source defines no top-level class {class_name!r}")
    params = dict(params or {})
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ControllerError(f"candidate params must be plain JSON values: {exc}") from None
    return _config(label=label, class_name=class_name, registry_name=None, source_file=f"{class_name}.py",
                   text=source, beta=check_beta(beta), uses_beta=bool(uses_beta), params=params)


def _config(*, label: str, class_name: str, registry_name: str | None, source_file: str, text: str, beta: float,
            uses_beta: bool, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "autotts": MODEL_FORMAT,
        "controller": label,
        "class_name": class_name,
        "registry_name": registry_name,
        "source_file": source_file,
        "source_sha256": source_sha256(text),
        "beta": beta,
        "uses_beta": uses_beta,
        "params": params,
    }


def is_controller_config(config: Any) -> bool:
    return isinstance(config, Mapping) and config.get("autotts") == MODEL_FORMAT and "class_name" in config


def is_builtin(config: Mapping[str, Any]) -> bool:
    """True for a built-in controller: ``registry_name`` is a name in the built-in controller
    registry (``controllers/registry.py``) and nothing else; False when it is None (code from
    a source file or a search), the line the trust boundary follows. Any other
    ``registry_name`` (a path, ``path.py:Class``, an unknown name) is a config claiming a
    trust it does not have: a ``ControllerError``, neither run in process nor quietly
    demoted to untrusted code."""
    name = config.get("registry_name")
    if name is None:
        return False
    if isinstance(name, str) and is_registered(name):
        return True
    raise ControllerError(f"controller model {str(config.get('controller'))!r:.100}: its config names {name!r:.200} "
                          "as a built-in controller, which is not a name in the built-in controller registry; "
                          "refusing it")


def spec_from_config(config: Mapping[str, Any], source_path: str | Path | None) -> ControllerSpec:
    """The spec that rebuilds the logged controller.

    A built-in is taken from the registry (its module cannot be executed a second time
    without registering its names twice), and only when the installed source is the one
    logged with the model: another source would give other numbers under the model's name,
    so a mismatch is refused. Any other controller is its logged source file, which the
    trusted side never imports (it runs in the sandbox).
    """
    params = dict(config.get("params") or {})
    beta = config.get("beta")
    if is_builtin(config):
        name = str(config["registry_name"])
        spec = ControllerSpec(name, beta, params)
        installed = inspect.getsourcefile(spec.controller_class())
        found = source_sha256(Path(installed).read_text(encoding="utf-8")) if installed else "none"
        if found != config.get("source_sha256"):
            raise ControllerError(f"built-in controller {name!r}: the installed source (sha256 {found[:12]}…) is not "
                                  f"the one logged with the model ({str(config.get('source_sha256'))[:12]}…); "
                                  "refusing it (register it again with the installed package)")
        return spec
    if source_path is None:
        raise ControllerError(f"controller {config.get('controller')!r}: the model has no {SOURCE_ARTIFACT} artifact")
    return ControllerSpec(f"{source_path}:{config['class_name']}", beta, params)
