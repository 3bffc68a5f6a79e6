"""Command settings as frozen dataclasses: one declaration, from which everything else derives.

A command declares its settings as ONE frozen dataclass whose every field carries a
docstring (the string literal right after it), as ``SearchConfig`` does. This module reads
that declaration and gives the parts every front end shares (see docs/architecture.md):

- ``describe(cls)``: each field's name, kind (bool, int, float, str, a tuple of str/int/float,
  a mapping), whether it may be None, its default and its help text (the field docstring,
  parsed from the class source with ``ast``, cached);
- ``coerce``: one conversion for every way a value arrives (YAML, command line, MLproject's
  strings), with an error naming the field;
- ``read_file``: a YAML file giving any subset of the fields; an unknown key is an error
  naming the file, the key and the valid keys;
- ``build``: defaults < file < values actually given (None or "" means "not given");
- parts: a field whose type is itself a settings dataclass (``CollectConfig.live``) is a
  *part*; its fields are offered flat beside the parent's (the same option, YAML key and
  MLproject parameter as if declared in the parent; a name may appear once in the whole
  tree), and ``build`` assembles the part once, so a function takes just the part it needs;
- bounds: ``bounded(default, ge=…, le=…, choices=…)`` declares a field's valid range once
  (as vLLM's config fields do); ``check_bounds(self)`` in ``__post_init__`` enforces every
  declared bound with one message shape: ``<config>: <field> must be >= 1, got 0``.

It imports no CLI library: ``cli/options.py`` turns the same description into click options
and ``cli/mlproject.py`` into the MLproject entry points.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from mlflow_autotts.errors import AutoTTSError

KINDS = ("bool", "int", "float", "str", "tuple", "mapping")
_ITEM_TYPES = {str: "str", int: "int", float: "float"}


@dataclass(frozen=True)
class Setting:
    """One field of a settings dataclass, as the front ends need it."""

    name: str
    """The field name: the YAML key and MLproject parameter; the option is ``--name-with-dashes``."""
    kind: str
    """One of ``KINDS``."""
    item: str | None
    """Item kind of a ``tuple`` field (``str``, ``int`` or ``float``); None otherwise."""
    optional: bool
    """True when the annotation admits None."""
    required: bool
    """True when the field has no default."""
    default: Any
    """The default value (``dataclasses.MISSING`` when required)."""
    help: str
    """The field docstring, as one paragraph."""
    path: tuple[str, ...] = ()
    """The part fields above this setting (``("live",)`` for ``CollectConfig.live.model``)."""


@dataclass(frozen=True)
class Bounds:
    """A field's declared valid values (``bounded``); None means no such bound."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None

    def why(self, value: Any) -> str | None:
        """Why ``value`` breaks these bounds, or None when it keeps them."""
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if value != value:
            return "must be a number"
        for bound, ok, text in ((self.ge, lambda b: value >= b, ">="), (self.gt, lambda b: value > b, ">"),
                                (self.le, lambda b: value <= b, "<="), (self.lt, lambda b: value < b, "<")):
            if bound is not None and not ok(bound):
                return f"must be {text} {bound:g}"
        return None


def bounded(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field with a default and declared bounds (each item of a tuple field is checked)."""
    return dataclasses.field(default=default, metadata={"bounds": Bounds(ge, gt, le, lt, choices)})


def check_bounds(instance: Any, bad: Any = None) -> None:
    """Raise for the first field of ``instance`` outside its declared bounds: ``bad(name, why)``
    when given (a config's own error type), else ``AutoTTSError("<config>: <name> <why>, got <value>")``."""
    for f in dataclasses.fields(instance):
        bounds = f.metadata.get("bounds")
        if bounds is None:
            continue
        value = getattr(instance, f.name)
        if value is None:
            continue
        for item in (value if isinstance(value, tuple) else (value,)):
            why = bounds.why(item)
            if why is not None:
                if bad is not None:
                    raise bad(f.name, f"{why}, got {value!r}")
                raise AutoTTSError(f"{label(type(instance))}: {f.name} {why}, got {value!r}")


class MissingSettings(AutoTTSError):
    """Required settings that neither the file nor the command line gave."""

    def __init__(self, cls: type, names: list[str]):
        self.names = names
        super().__init__(f"{label(cls)}: missing {', '.join(names)}")


def label(cls: type) -> str:
    """``SearchConfig`` -> ``search config``: how error messages name a settings class."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring, read from the source of ``cls`` and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _kind(name: str, annotation: Any) -> tuple[str, str | None, bool]:
    """(kind, item kind, optional) of a field annotation; anything else is a declaration bug."""
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if len(rest) != 1:
            raise TypeError(f"setting {name}: unsupported union {annotation!r}")
        annotation = rest[0]
        args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if annotation in (bool, int, float, str):
        return annotation.__name__, None, optional
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _ITEM_TYPES:
        return "tuple", _ITEM_TYPES[args[0]], optional
    if origin in (dict, Mapping, typing.Mapping) or annotation in (dict, Mapping):
        return "mapping", None, optional
    raise TypeError(f"setting {name}: unsupported type {annotation!r}")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def part_type(annotation: Any) -> type | None:
    """The settings dataclass a field's annotation names (a part), else None."""
    return annotation if isinstance(annotation, type) and dataclasses.is_dataclass(annotation) else None


@functools.cache
def describe(cls: type) -> tuple[Setting, ...]:
    """The settings of dataclass ``cls`` in declaration order, parts flattened in place; a
    field without a docstring, of a type no front end can take, or a name taken twice in
    the tree is a ``TypeError`` (a bug in the declaration)."""
    return _describe(cls, (), None)


def _describe(cls: type, path: tuple[str, ...], base: Any) -> tuple[Setting, ...]:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[Setting] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = _field_default(f) if base is None else getattr(base, f.name)
        part = part_type(hints[f.name])
        if part is not None:
            out.extend(_describe(part, path + (f.name,), None if default is dataclasses.MISSING else default))
            continue
        kind, item, optional = _kind(f.name, hints[f.name])
        if not docs.get(f.name, "").strip():
            raise TypeError(f"setting {cls.__name__}.{f.name} has no docstring: its help text comes from it")
        out.append(Setting(f.name, kind, item, optional, default is dataclasses.MISSING, default,
                           " ".join(docs[f.name].split()), path))
    seen: set[str] = set()
    for st in out:
        if st.name in seen:
            raise TypeError(f"setting {cls.__name__}: {st.name!r} is declared twice (a part's field names "
                            "share one namespace with the parent's)")
        seen.add(st.name)
    return tuple(out)


def setting(cls: type, name: str) -> Setting:
    for s in describe(cls):
        if s.name == name:
            return s
    raise AutoTTSError(f"{label(cls)}: unknown setting {name!r}; valid: {', '.join(sorted(names(cls)))}")


def names(cls: type) -> list[str]:
    return [s.name for s in describe(cls)]


# ------------------------------------------------------------------------- conversion
_WHAT = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
         "mapping": "a mapping of name: value (or name=value pairs)"}
_PLURAL = {"str": "strings", "int": "integers", "float": "numbers"}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def split_list(value: str) -> list[str]:
    """``"a,b c"`` -> ``["a", "b", "c"]``: lists given as one string (an option, ``-P``)."""
    return [x for x in value.replace(" ", ",").split(",") if x]


def _scalar(kind: str, value: Any) -> Any:
    """``value`` as ``kind``; ValueError when it is not one."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
    elif kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # YAML reads `run_name: 2024` as a number
    raise ValueError(value)


def _pairs(items: list[Any]) -> dict[str, Any]:
    """``k=v`` items; values are read as JSON where they parse (numbers, true/false), else strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(item)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def coerce(cls: type, name: str, value: Any, where: str | None = None) -> Any:
    """``value`` converted to setting ``name``'s type, from YAML, click or MLproject strings.

    Errors are one ``AutoTTSError`` line naming ``where`` (a file, or the settings class)
    and the field."""
    s = setting(cls, name)
    where = where or label(cls)

    def bad(what: str, got: Any) -> AutoTTSError:
        return AutoTTSError(f"{where}: invalid {name} {got!r}: expected {what}")

    if value is None:
        if s.optional:
            return None
        raise bad(_WHAT.get(s.kind) or f"a list of {_PLURAL[s.item]}", value)
    if s.kind == "tuple":
        items = split_list(value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise bad(f"a list of {_PLURAL[s.item]}", value)
        flat: list[Any] = []
        for v in items:  # click gives each repetition of an option as one string: "a,b"
            flat.extend(split_list(v) if isinstance(v, str) else [v])
        out = []
        for v in flat:
            try:
                out.append(_scalar(s.item, v))
            except ValueError:
                raise bad(_WHAT[s.item], v) from None
        return tuple(out)
    if s.kind == "mapping":
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        items = split_list(value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise bad(_WHAT["mapping"], value)
        try:
            return _pairs(list(items))
        except ValueError as exc:
            raise AutoTTSError(f"{where}: invalid {name} {exc.args[0]!r}: expected key=value") from None
    try:
        return _scalar(s.kind, value)
    except ValueError:
        raise bad(_WHAT[s.kind], value) from None


def is_given(value: Any) -> bool:
    """False for None and "": how callers and the MLproject entries say "not given"."""
    return value is not None and not (isinstance(value, str) and value == "")


# ------------------------------------------------------------------------- files, build
def read_file(cls: type, file: str | Path) -> dict[str, Any]:
    """The settings a YAML file gives, converted; errors name the file (and the key)."""
    path = Path(file)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AutoTTSError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise AutoTTSError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise AutoTTSError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    known = names(cls)
    unknown = sorted(str(k) for k in loaded if k not in known)
    if unknown:
        raise AutoTTSError(f"{path}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    return {k: coerce(cls, k, v, str(path)) for k, v in loaded.items()}


def build(cls: type, file: str | Path | None = None, given: Mapping[str, Any] | None = None) -> Any:
    """An instance of ``cls``: its defaults, then the YAML ``file``, then ``given`` (values
    actually given on a command line; None and "" are skipped as "not given")."""
    values = read_file(cls, file) if file else {}
    for k, v in (given or {}).items():
        if is_given(v):
            values[k] = coerce(cls, k, v)
    missing = [s.name for s in describe(cls) if s.required and s.name not in values]
    if missing:
        raise MissingSettings(cls, missing)
    try:
        return assemble(cls, values)
    except (TypeError, ValueError) as exc:
        raise AutoTTSError(f"{label(cls)}: {exc}") from None


def assemble(cls: type, values: Mapping[str, Any], base: Any = None) -> Any:
    """An instance of ``cls`` from flat, already converted ``values``: each part built once
    from the values under it (over ``base``'s part, or the field's default part)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        part = part_type(hints[f.name])
        if part is None:
            if f.name in values:
                kwargs[f.name] = values[f.name]
            continue
        default = getattr(base, f.name) if base is not None else _field_default(f)
        under = {st.name for st in describe(part)}
        if default is dataclasses.MISSING or any(n in values for n in under):
            kwargs[f.name] = assemble(part, values, None if default is dataclasses.MISSING else default)
        elif base is not None:
            kwargs[f.name] = default
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


def value(instance: Any, name: str) -> Any:
    """The value of flat setting ``name`` of ``instance`` (through its parts)."""
    for st in describe(type(instance)):
        if st.name == name:
            for part in st.path:
                instance = getattr(instance, part)
            return getattr(instance, name)
    raise AutoTTSError(f"{label(type(instance))}: unknown setting {name!r}")


def to_dict(instance: Any) -> dict[str, Any]:
    """Flat setting name -> value, in a form ``read_file``/``build`` take back (tuples as lists)."""
    return {s.name: list(v) if isinstance(v := value(instance, s.name), tuple) else v
            for s in describe(type(instance))}


def flat(value: Any) -> Any:
    """A value as one MLflow param / one command-line string: lists comma-joined."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, Mapping):
        return ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in value.items())
    return value


__all__ = ["Setting", "Bounds", "bounded", "check_bounds", "part_type", "assemble", "value", "MissingSettings", "KINDS", "describe", "field_docs", "setting", "names", "label",
           "coerce", "is_given", "split_list", "read_file", "build", "to_dict", "flat"]
