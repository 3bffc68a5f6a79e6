"""Click options generated from a settings dataclass (vLLM's ``EngineArgs.add_cli_args`` pattern).

``@settings_options(SearchConfig)`` under ``@click.command`` gives the command one option per
field (see docs/architecture.md, "Settings"):

- the option is ``--field-name`` (``flags`` renames a few, e.g. ``params`` -> ``--param``);
  ``arguments`` makes fields positional (evaluate's ``DATA``);
- its type follows the annotation: ``int``, ``float``, ``str`` (converted by
  ``settings.coerce``, so a bad value is a one-line error); ``bool`` -> ``--x/--no-x``;
  ``tuple[...]`` -> repeatable and comma-separated; a mapping -> repeatable ``key=value``;
- its help is the field docstring, with the dataclass default;
- ``--config FILE.yaml`` gives any subset of the fields, ``--print-config`` prints the
  effective settings and exits, and the hidden ``--set NAME=VALUE`` (repeatable; an empty
  VALUE means "not given") is how the MLproject entry points pass their ``-P`` values.

Precedence: defaults < ``--config`` file < ``--set`` < options actually given on the command
line (click's parameter source decides; an option given with its default value counts). The
command function receives the built dataclass as its first argument, ``config``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import click
import yaml
from click.core import ParameterSource

from mlflow_autotts import settings
from mlflow_autotts.errors import AutoTTSError

CONFIG_OPTION = "--config"
SET_OPTION = "--set"
_METAVARS = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT"}


def option_decls(s: settings.Setting, flags: Mapping[str, str | Sequence[str]]) -> list[str]:
    """The option strings of setting ``s`` (without the parameter name)."""
    custom = flags.get(s.name)
    decls = [custom] if isinstance(custom, str) else list(custom or [f"--{s.name.replace('_', '-')}"])
    if s.kind == "bool":
        decls[0] = f"{decls[0]}/--no-{decls[0][2:]}"
    return decls


def _default_text(s: settings.Setting, decls: list[str]) -> str:
    if s.required or s.default in (None, (), {}, ""):
        return ""
    if s.kind == "bool":
        on, off = decls[0].split("/")
        return f"  [default: {on if s.default else off}]"
    shown = ", ".join(map(str, s.default)) if s.kind == "tuple" else settings.flat(s.default)
    return f"  [default: {shown}]"


def _help(s: settings.Setting, decls: list[str]) -> str:
    extra = {"tuple": " Repeatable or comma-separated.", "mapping": " Repeatable."}.get(s.kind, "")
    required = "  [required]" if s.required else ""
    return s.help.replace("``", "") + extra + _default_text(s, decls) + required


def _option(s: settings.Setting, flags: Mapping[str, str | Sequence[str]]) -> Callable:
    decls = option_decls(s, flags)
    common: dict[str, Any] = {"default": None, "help": _help(s, decls)}
    if s.kind == "bool":
        return click.option(*decls, s.name, **common)
    if s.kind == "tuple":
        return click.option(*decls, s.name, multiple=True, metavar=f"{_METAVARS[s.item]}[,…]", **common)
    if s.kind == "mapping":
        return click.option(*decls, s.name, multiple=True, metavar="KEY=VALUE", **common)
    # values stay text here: settings.coerce converts them, so a bad one is the same one-line
    # error naming the field as in a --config file
    return click.option(*decls, s.name, metavar=_METAVARS[s.kind], **common)


def _argument(s: settings.Setting) -> Callable:
    many = s.kind == "tuple"
    return click.argument(s.name, nargs=-1 if many else 1, required=False,
                          metavar=s.name.upper() + ("..." if many else ""))


def _set_values(cls: type, items: Sequence[str]) -> dict[str, str]:
    """``--set NAME=VALUE`` items; empty values are dropped as "not given"."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise AutoTTSError(f"{SET_OPTION} expects NAME=VALUE, got {item!r}")
        settings.setting(cls, name.strip())  # an unknown name is an error listing the valid ones
        if value != "":
            out[name.strip()] = value
    return out


def settings_options(cls: type, *, flags: Mapping[str, str | Sequence[str]] | None = None,
                     arguments: Sequence[str] = ()) -> Callable[[Callable], Callable]:
    """Decorator: options for every field of ``cls`` (``arguments`` positional), ``--config``,
    ``--print-config`` and the hidden ``--set``; the wrapped function gets ``config``."""
    flags = dict(flags or {})
    fields = settings.describe(cls)
    unknown = (set(flags) | set(arguments)) - {s.name for s in fields}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")

    def shown(s: settings.Setting) -> str:
        return s.name.upper() if s.name in arguments else option_decls(s, flags)[0].split("/")[0]

    def decorator(f: Callable) -> Callable:
        @functools.wraps(f)
        def callback(**kwargs: Any) -> Any:
            ctx = click.get_current_context()
            file = kwargs.pop("config_file") or None
            given: dict[str, Any] = _set_values(cls, kwargs.pop("set_values"))
            for s in fields:
                value = kwargs.pop(s.name)
                if s.name in arguments:
                    if value not in (None, ()):
                        given[s.name] = value
                elif ctx.get_parameter_source(s.name) is ParameterSource.COMMANDLINE:
                    given[s.name] = value
            try:
                config = settings.build(cls, file, given)
            except settings.MissingSettings as exc:
                raise AutoTTSError(f"missing {', '.join(shown(settings.setting(cls, n)) for n in exc.names)} "
                                   f"(give it on the command line or in a {CONFIG_OPTION} file)") from None
            if kwargs.pop("print_config"):
                click.echo(yaml.safe_dump(settings.to_dict(config), sort_keys=False, allow_unicode=True), nl=False)
                return None
            return f(config, **kwargs)

        decorators = [click.option(CONFIG_OPTION, "config_file", type=click.Path(dir_okay=False), default=None,
                                   metavar="FILE.yaml",
                                   help="YAML file giving any subset of the settings below (keys: the option "
                                        "names with underscores); options given on the command line override it.")]
        decorators += [_argument(s) if s.name in arguments else _option(s, flags) for s in fields]
        decorators += [
            click.option("--print-config", is_flag=True, default=False,
                         help="Print the effective settings as YAML (valid --config input) and exit."),
            click.option(SET_OPTION, "set_values", multiple=True, hidden=True, metavar="NAME=VALUE",
                         help="Set a field by name; an empty VALUE means not given (used by MLproject)."),
        ]
        for decorate in reversed(decorators):  # click lists options in reverse order of decoration
            callback = decorate(callback)
        return callback

    return decorator


__all__ = ["settings_options", "option_decls", "CONFIG_OPTION", "SET_OPTION"]
