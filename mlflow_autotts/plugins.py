"""Named plug-ins of one kind: the one lookup every pluggable part uses.

Controllers, serving modes, controller runners, executors, generation backends and
explorers each keep a ``Registry``: an implementation registers under a name (twice is an
error), a command looks a user's choice up by that name, and a miss names the kind, where
it was asked for and every valid name. The registry holds objects (classes or factories),
never imports them: whoever defines a plug-in registers it where it is defined, so adding
one touches no lookup code.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from mlflow_autotts.errors import AutoTTSError

T = TypeVar("T")


class UnknownPlugin(AutoTTSError, ValueError):
    """A name that no plug-in of the kind was registered under."""


class Registry(Generic[T]):
    """Plug-ins of one ``kind`` by name (see the module docstring)."""

    def __init__(self, kind: str, error: type[Exception] = UnknownPlugin):
        self.kind = kind
        self._error = error
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name``; the same object again is a no-op, another is an error."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
        held = self._items.get(name)
        if held is not None and held is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered by {_label(held)}")
        self._items[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``."""
        return lambda obj: self.add(name, obj)

    def get(self, name: str, where: str = "") -> T:
        """The plug-in ``name``; a miss raises the registry's error naming ``where`` and the valid names."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            at = f"{where}: " if where else ""
            raise self._error(f"{at}unknown {self.kind} {name!r}; valid: {', '.join(self.names()) or 'none'}") \
                from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def snapshot(self) -> dict[str, T]:
        """A copy of the contents (tests restore it after registering their own)."""
        return dict(self._items)

    def restore(self, items: dict[str, T]) -> None:
        self._items = dict(items)


def _label(obj: object) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__


__all__ = ["Registry", "UnknownPlugin"]
