"""Getting a controller out of an LLM reply, and a lint of its source.

The lint (``check_source``) rejects what is plainly not allowed (imports outside the
sandbox's allowlist, I/O and reflection builtins, dunder, frame and private attributes,
hops to modules through attributes, attribute names built at run time) so the explorer
LLM gets a precise message to fix on its next proposal instead of a sandbox failure. It
gives early feedback only and is **not** a security boundary: a static check of Python can
be evaded (aliasing a package and reaching one of its submodules passes it, for one), and
what stops hostile code is the sandbox (``mlflow_autotts.sandbox.process``: the audit hook,
the import gate and the process isolation). The allowlist itself is the sandbox's
(``sandbox.policy.ALLOWED_IMPORTS``), so the lint never accepts an import the sandbox
refuses or the reverse.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from types import ModuleType

from mlflow_autotts.sandbox.policy import ALLOWED_IMPORTS, allowed_imports_text

FORBIDDEN_CALLS: frozenset[str] = frozenset({
    "open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "dir",
    "breakpoint", "input", "print", "exit", "quit", "help", "memoryview", "setattr", "delattr",
})
"""Builtins a controller has no use for: I/O, dynamic code, namespace access."""

STRING_ATTRIBUTE_CALLS: frozenset[str] = frozenset({"getattr", "hasattr", "attrgetter", "methodcaller"})
"""Functions that reach attributes by a string: allowed only when called directly with
literal names (an alias such as ``g = getattr`` would take any name)."""

ALLOWED_DUNDER_ATTRS: frozenset[str] = frozenset({
    "__init__", "__post_init__", "__name__", "__qualname__", "__doc__", "__getitem__", "__setitem__",
    "__contains__", "__len__", "__iter__", "__next__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__",
    "__ne__", "__hash__", "__bool__", "__add__", "__sub__", "__mul__", "__truediv__", "__neg__",
    "__abs__", "__repr__", "__str__",
})
"""Data-model methods (e.g. ``counts.__getitem__`` as a sort key); every other dunder attribute
(``__class__``, ``__globals__``, ``__dict__``, ``__subclasses__`` …) is an introspection route."""


def _module_attribute_names() -> frozenset[str]:
    """Names under which the allowlisted standard modules hold modules outside the
    allowlist (``enum.bltns``, ``typing.sys``, ``dataclasses.inspect`` …)."""
    allowed_leaves = {m.rsplit(".", 1)[-1] for m in ALLOWED_IMPORTS}
    names = set()
    for name in ALLOWED_IMPORTS:
        if name.startswith("mlflow_autotts") or name == "__future__":
            continue
        for attr, value in vars(importlib.import_module(name)).items():
            if isinstance(value, ModuleType) and not attr.startswith("_") and attr not in allowed_leaves:
                names.add(attr)
    return frozenset(names)


FORBIDDEN_ATTRS: frozenset[str] = frozenset({
    # modules reachable as attributes of allowlisted modules or objects
    "sys", "_sys", "os", "_os", "builtins", "inspect", "types", "_thread", "subprocess", "socket",
    "importlib", "gc", "ctypes",
    # frames, code objects and tracebacks lead to every namespace in the process
    "f_globals", "f_locals", "f_back", "f_builtins", "f_code", "tb_frame", "tb_next", "gi_frame",
    "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code", "co_consts",
}) | _module_attribute_names()

_FORMAT_FIELD_PRIVATE = re.compile(r"\{[^{}]*?(?:\.|\[)\s*_")
"""A ``str.format`` field that reads a private or dunder attribute (``"{0._os}"``)."""

MAX_SOURCE_CHARS = 40_000
"""Longer sources are rejected: a controller is a page of code, not a novel."""

CONTROLLER_BASE = "Controller"


class ProposalError(ValueError):
    """A reply without usable controller code; the message is written for the LLM to act on."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        """``extract`` (no code found), ``syntax`` (does not parse) or ``check`` (the lint rejects it)."""
        self.message = message
        super().__init__(f"{kind}: {message}")


@dataclass(frozen=True)
class CheckedSource:
    """Source that passed the lint (which proves nothing about its safety)."""

    source: str
    class_name: str
    """The one Controller subclass it defines."""


# --------------------------------------------------------------------------- extraction

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
_FENCE_LINE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*$", re.MULTILINE)
_PY_TAGS = {"python", "py", "python3", ""}


def _defines_controller(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return bool(_controller_classes(tree))


def extract_code(reply: str | None, truncated: bool = False) -> str:
    """The controller code in ``reply``.

    Among the ```python (or untagged) fenced blocks, the last one that parses and defines
    a Controller subclass wins, else the last one that parses, else the last one (whose
    syntax error the check then reports); a last fence left open (a reply cut off at the
    token limit, ``truncated``) counts as a block. Without any fence, the whole reply is
    used if it parses. ``<think>`` sections of reasoning models are ignored.
    """
    if not reply or not reply.strip():
        raise ProposalError("extract", "the reply was empty; answer with one complete controller in a ```python block")
    text = _THINK.sub("", reply)
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in _PY_TAGS]
    fences = list(_FENCE_LINE.finditer(text))
    if len(fences) % 2 == 1 and fences[-1].group(1).lower() in _PY_TAGS:
        # An unclosed last fence: the reply was cut off (token limit) or never closed.
        blocks.append(text[fences[-1].end():].lstrip("\n"))
    if blocks:
        for pick in (_defines_controller, _parses):
            good = [b for b in blocks if pick(b)]
            if good:
                return good[-1]
        return blocks[-1]
    if _parses(text) and _defines_controller(text):
        return text
    cut = " (the reply was cut off at the token limit: write shorter code)" if truncated else ""
    raise ProposalError("extract", "the reply has no ```python code block with a controller class" + cut)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


# ----------------------------------------------------------------------------- checks

def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _controller_classes(tree: ast.Module) -> list[ast.ClassDef]:
    """Top-level classes deriving from Controller, directly or through another class here."""
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    derived: set[str] = set()
    changed = True
    while changed:
        changed = False
        for c in classes:
            if c.name in derived:
                continue
            bases = {_base_name(b) for b in c.bases}
            if CONTROLLER_BASE in bases or bases & derived:
                derived.add(c.name)
                changed = True
    return [c for c in classes if c.name in derived]


def _where(node: ast.AST) -> str:
    return f"line {getattr(node, 'lineno', '?')}"


class _Checker(ast.NodeVisitor):
    """Collects every violation (not just the first), so one round fixes them all."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.modules: dict[str, ModuleType] = {}
        """Names bound to allowlisted modules by imports, for attribute checks."""
        self.called: set[int] = set()
        """``id`` of the function nodes of calls to ``STRING_ATTRIBUTE_CALLS``."""

    def fail(self, node: ast.AST, message: str) -> None:
        self.errors.append(f"{_where(node)}: {message}")

    @staticmethod
    def _module(name: str) -> ModuleType | None:
        try:
            return importlib.import_module(name)
        except ImportError:
            return None

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            name = alias.name
            if name not in ALLOWED_IMPORTS:
                self.fail(node, f"import of {name!r} is not allowed (allowed: {allowed_imports_text(ALLOWED_IMPORTS)})")
                continue
            top = name.split(".")[0]
            if alias.asname is None and "." in name and top not in ALLOWED_IMPORTS:
                self.fail(node, f"write 'from {name.rsplit('.', 1)[0]} import {name.rsplit('.', 1)[1]}' "
                                f"instead of 'import {name}' (the name {top!r} itself is not allowed)")
                continue
            bound = alias.asname or top
            mod = self._module(name if alias.asname else top)
            if mod is not None:
                self.modules[bound] = mod

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            self.fail(node, "relative imports are not allowed")
            return
        for alias in node.names:
            if alias.name == "*":
                self.fail(node, f"'from {base} import *' is not allowed: import the names you use")
                continue
            full = f"{base}.{alias.name}"
            if base not in ALLOWED_IMPORTS:  # the sandbox's import gate sees ``base``
                self.fail(node, f"import from {base!r} is not allowed (allowed: {allowed_imports_text(ALLOWED_IMPORTS)})")
                continue
            if alias.name.startswith("_"):
                self.fail(node, f"importing the private name {alias.name!r} from {base!r} is not allowed")
                continue
            mod = self._module(base)
            obj = getattr(mod, alias.name, None) if mod is not None else None
            if full in ALLOWED_IMPORTS:
                sub = self._module(full)
                if sub is not None:
                    self.modules[alias.asname or alias.name] = sub
            elif isinstance(obj, ModuleType):
                self.fail(node, f"{alias.name!r} from {base!r} is a module, and only the allowlisted modules may be used")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_CALLS:
            self.fail(node, f"{node.id!r} is not allowed in a controller (no I/O, no dynamic code)")
        elif node.id.startswith("__") and node.id.endswith("__"):
            self.fail(node, f"the name {node.id!r} is not allowed")
        elif node.id in STRING_ATTRIBUTE_CALLS and id(node) not in self.called:
            self.fail(node, f"{node.id}() may only be called directly, with literal attribute names")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        if attr.startswith("__") and attr.endswith("__"):
            if attr not in ALLOWED_DUNDER_ATTRS:
                self.fail(node, f"access to the dunder attribute {attr!r} is not allowed")
        elif attr in FORBIDDEN_ATTRS:
            self.fail(node, f"access to the attribute {attr!r} is not allowed")
        elif attr.startswith("_") and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            self.fail(node, f"the private attribute {attr!r} may only be used on self "
                            "(the episode's internals are off limits: use its public calls)")
        elif attr in STRING_ATTRIBUTE_CALLS and id(node) not in self.called:
            self.fail(node, f"{attr}() may only be called directly, with literal attribute names")
        else:
            mod = self._module_of(node.value)
            if mod is not None:
                obj = getattr(mod, attr, None)
                full = f"{mod.__name__}.{attr}"
                if isinstance(obj, ModuleType) and full not in ALLOWED_IMPORTS:
                    self.fail(node, f"{full!r} is a module outside the allowlist")
        self.generic_visit(node)

    def _module_of(self, node: ast.expr) -> ModuleType | None:
        if isinstance(node, ast.Name):
            return self.modules.get(node.id)
        if isinstance(node, ast.Attribute):
            parent = self._module_of(node.value)
            if parent is not None:
                obj = getattr(parent, node.attr, None)
                return obj if isinstance(obj, ModuleType) else None
        return None

    def visit_Call(self, node: ast.Call) -> None:
        fn = node.func
        name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else None
        if name in STRING_ATTRIBUTE_CALLS:
            self.called.add(id(fn))
            if name in ("getattr", "hasattr"):
                names = node.args[1:2] if len(node.args) > 1 else [None]
            elif name == "methodcaller":
                names = node.args[:1] or [None]
            else:
                names = list(node.args) or [None]
            for arg in names:
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    self.fail(node, f"{name}() needs a literal attribute name")
                    continue
                for part in arg.value.split("."):
                    if part.startswith("_") or part in FORBIDDEN_ATTRS:
                        self.fail(node, f"{name}() of {arg.value!r} is not allowed")
                        break
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and "{" in node.value and _FORMAT_FIELD_PRIVATE.search(node.value):
            self.fail(node, "a format field may not read private or dunder attributes")

    def visit_Global(self, node: ast.Global) -> None:
        self.fail(node, "'global' is not allowed: a controller keeps no state between episodes")


def _check_class(cls: ast.ClassDef) -> list[str]:
    errors: list[str] = []
    methods = {n.name: n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    solve = methods.get("solve")
    if solve is None:
        errors.append(f"{_where(cls)}: class {cls.name} has no 'solve(self, episode)' method")
    elif isinstance(solve, ast.AsyncFunctionDef):
        errors.append(f"{_where(solve)}: solve must be a plain method, not async")
    elif len(solve.args.args) != 2:
        errors.append(f"{_where(solve)}: solve must take exactly (self, episode)")
    init = methods.get("__init__")
    if init is not None:
        a = init.args
        positional = a.posonlyargs + a.args
        n_defaults = len(a.defaults)
        names = [p.arg for p in positional]
        if len(names) < 2 or names[1] != "beta":
            errors.append(f"{_where(init)}: __init__ must be __init__(self, beta=0.5, ...)")
        elif len(positional) - n_defaults > 1:
            errors.append(f"{_where(init)}: every __init__ parameter after self needs a default (beta=0.5, ...)")
        elif any(d is None for d in a.kw_defaults):
            errors.append(f"{_where(init)}: every keyword-only __init__ parameter needs a default")
    has_name = any(
        isinstance(n, (ast.Assign, ast.AnnAssign))
        and any(isinstance(t, ast.Name) and t.id == "name" for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))
        and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str) and n.value.value
        for n in cls.body
    )
    if not has_name:
        errors.append(f"{_where(cls)}: class {cls.name} needs a class attribute name = \"<short_snake_case_name>\"")
    return errors


def check_source(source: str, class_name: str | None = None) -> CheckedSource:
    """``source`` if it passes the lint, else ``ProposalError`` listing every problem.

    Early feedback for explorers, not a guard (see the module docstring).

    Requires exactly one top-level Controller subclass (or the one named ``class_name``)
    with a string ``name``, ``solve(self, episode)`` and, if it defines ``__init__``,
    ``__init__(self, beta=0.5, ...)`` with defaults for every parameter.
    """
    if len(source) > MAX_SOURCE_CHARS:
        raise ProposalError("check", f"the code is {len(source)} characters long; the limit is {MAX_SOURCE_CHARS}")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        line = (exc.text or "").rstrip("\n")
        at = f"line {exc.lineno}: " if exc.lineno else ""
        shown = f" in `{line.strip()}`" if line.strip() else ""
        raise ProposalError("syntax", f"{at}SyntaxError: {exc.msg}{shown}") from None
    checker = _Checker()
    checker.visit(tree)
    errors = list(checker.errors)
    found = _controller_classes(tree)
    if class_name is not None:
        picked = [c for c in found if c.name == class_name]
        if not picked:
            errors.append(f"no Controller subclass named {class_name!r} "
                          f"(found: {', '.join(c.name for c in found) or 'none'})")
    elif not found:
        errors.append("the code defines no class deriving from Controller "
                      "(from mlflow_autotts.controllers.base import Controller)")
        picked = []
    elif len(found) > 1:
        errors.append(f"the code defines several Controller subclasses ({', '.join(c.name for c in found)}); "
                      "define exactly one")
        picked = []
    else:
        picked = found
    if picked:
        errors.extend(_check_class(picked[0]))
    if errors:
        raise ProposalError("check", "; ".join(errors))
    return CheckedSource(source=source, class_name=picked[0].name)
