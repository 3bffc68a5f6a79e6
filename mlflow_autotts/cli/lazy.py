"""Subcommands imported when they are used, not when ``autotts`` starts.

Each command module pulls in its own stack (evaluate: the replay core and numpy; collect:
the live backends and asyncio; search: the explorer), ~0.2 s of imports that ``autotts
--help`` and every other command would otherwise pay. The root group knows each command
by module and attribute, plus the first paragraph of its help for the command list, so
``autotts --help`` imports none of them (a test checks those texts match the commands).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass

import click
from click.utils import make_default_short_help

from mlflow_autotts.cli.common import AutoTTSGroup


@dataclass(frozen=True)
class LazyCommand:
    """Where a subcommand lives, and what the root help lists for it."""

    module: str
    """Module that defines the command."""
    attr: str
    """The ``click.Command`` (or group) in that module."""
    help: str
    """The first paragraph of the command's help, as ``autotts --help`` shows it."""


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's ``commands`` mapping that imports a command's module on first access."""

    def __init__(self, specs: Mapping[str, LazyCommand]):
        self.specs = dict(specs)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        cmd = self._loaded.get(name)
        if cmd is None:
            spec = self.specs[name]  # KeyError for an unknown name, as a dict would
            cmd = self._loaded[name] = getattr(importlib.import_module(spec.module), spec.attr)
        return cmd

    def __setitem__(self, name: str, cmd: click.Command) -> None:
        self._loaded[name] = cmd

    def __delitem__(self, name: str) -> None:
        found = self.specs.pop(name, None) is not None
        found = self._loaded.pop(name, None) is not None or found
        if not found:
            raise KeyError(name)

    def __contains__(self, name: object) -> bool:  # without importing (Mapping's would)
        return name in self.specs or name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self.specs, *self._loaded]))

    def __len__(self) -> int:
        return len(set(self.specs) | set(self._loaded))

    def short_help(self, name: str, limit: int) -> str:
        """The command's line in the group's help, without importing it if not loaded yet."""
        if name in self._loaded or name not in self.specs:
            return self[name].get_short_help_str(limit)
        return make_default_short_help(self.specs[name].help, limit)


class LazyGroup(AutoTTSGroup):
    """The root group: lists its ``LazyCommands`` without importing them."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if not isinstance(self.commands, LazyCommands):
            super().format_commands(ctx, formatter)
            return
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        with formatter.section("Commands"):
            formatter.write_dl([(name, self.commands.short_help(name, limit)) for name in names])


__all__ = ["LazyCommand", "LazyCommands", "LazyGroup"]
