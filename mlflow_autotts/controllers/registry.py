"""The built-in controllers by name (a ``plugins.Registry``): ``@register_controller``
registers a class under its ``name``, a miss lists the valid names.

The registry imports no implementation: the ``controllers`` package registers the built-ins
when it is imported, which any import of this module does first."""

from __future__ import annotations

from typing import TypeVar

from mlflow_autotts.errors import ControllerError
from mlflow_autotts.plugins import Registry

CONTROLLERS: Registry[type] = Registry("controller", error=ControllerError)
T = TypeVar("T", bound=type)


def register_controller(cls: T) -> T:
    """Class decorator: register ``cls`` under its ``name`` attribute."""
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__name__} has no 'name' to register under")
    return CONTROLLERS.add(name, cls)


def get_controller_class(name: str) -> type:
    return CONTROLLERS.get(name)


def controller_names() -> list[str]:
    return CONTROLLERS.names()


def is_registered(name: str) -> bool:
    return name in CONTROLLERS


__all__: list[str] = ["CONTROLLERS", "register_controller", "get_controller_class", "controller_names",
                      "is_registered"]
