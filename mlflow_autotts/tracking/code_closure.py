"""Which ``mlflow_autotts`` files a logged model ships: the import closure of its roots.

A logged controller model carries the package as code (it is not on PyPI), but only the
modules ``predict`` can reach: starting from the roots (``serving.shipping.CODE_ROOTS``,
plus the package modules the controller's own source imports), every ``import`` and
``from … import`` naming a package module is followed, at any depth, inside functions
too, and every package on the way brings its ``__init__``. Imports under
``if TYPE_CHECKING:`` are skipped (they never run). The walk reads files (``ast``), it
imports nothing, so it is safe on untrusted sources.

What the walk cannot see is a module started by name (``python -m …``) or imported from a
computed string: such modules must be declared as roots.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path
from typing import Iterable

import mlflow_autotts

PACKAGE = "mlflow_autotts"
PACKAGE_DIR = Path(mlflow_autotts.__file__).resolve().parent


def module_file(name: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The file of package module ``name`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``),
    or None when it is not a module of the package."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:`` blocks (their ``else`` stays)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Dotted names ``source`` may import: each ``import a.b`` gives ``a.b``; each
    ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a submodule). Relative
    imports are resolved against ``module``."""
    names: set[str] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in _nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - (node.level - 1)]
                target = ".".join(parent + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: k + 1]) for k in range(len(parts))]


def module_closure(roots: Iterable[str], sources: Iterable[str] = (), package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The package modules reachable from ``roots`` (module names) and from the imports of
    ``sources`` (extra source texts, e.g. the controller's file), sorted."""
    todo: list[str] = []
    for text in sources:
        todo.extend(imported_names(text, "__controller__"))
    for root in roots:
        if module_file(root, package_dir) is None:
            raise ValueError(f"code root {root!r} is not a module of {PACKAGE} ({package_dir})")
        todo.append(root)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        for mod in _with_parents(name):
            if mod in seen:
                continue
            path = module_file(mod, package_dir)
            if path is None:
                continue  # not a package module (a class, a function, another package)
            seen.add(mod)
            is_pkg = path.name == "__init__.py"
            todo.extend(imported_names(path.read_text(encoding="utf-8"), mod, is_pkg))
    return sorted(seen)


def copy_modules(modules: Iterable[str], dst: Path, package_dir: Path = PACKAGE_DIR) -> Path:
    """Copy the files of ``modules`` under ``dst``, keeping the package layout; returns
    ``dst / "mlflow_autotts"`` (what ``code_paths`` takes)."""
    for mod in modules:
        src = module_file(mod, package_dir)
        if src is None:
            raise ValueError(f"{mod!r} is not a module of {PACKAGE}")
        out = dst / src.relative_to(package_dir.parent)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
    return dst / PACKAGE
