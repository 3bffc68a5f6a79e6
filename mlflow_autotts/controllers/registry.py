"""Named controllers: ``@register_controller`` rejects duplicates, a miss lists valid names.

The registry imports no implementation: the ``controllers`` package registers the built-ins
when it is imported, which any import of this module does first."""

from __future__ import annotations

from typing import TypeVar

from mlflow_autotts.errors import ControllerError

_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_controller(cls: T) -> T:
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__name__} has no 'name' to register under")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"controller name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
    _REGISTRY[name] = cls
    return cls


def get_controller_class(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ControllerError(
            f"unknown controller {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def controller_names() -> list[str]:
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    return name in _REGISTRY


__all__: list[str] = ["register_controller", "get_controller_class", "controller_names", "is_registered"]
