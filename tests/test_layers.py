"""The package's layers, as declared to import-linter in pyproject.toml, hold; and the
contracts do catch an upward import (checked on a copy of the package). The tests have a
rule of their own: no test module imports another; what they share is imported as
``tests.<module>``."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([LINT, "--no-cache", "--config", str(cwd / "pyproject.toml")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].endswith(" 0 broken."), proc.stdout[-2000:]


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    shutil.copytree(ROOT / "mlflow_autotts", tmp_path / "mlflow_autotts",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "mlflow_autotts" / "replay" / "results.py"
    base.write_text(base.read_text() + "\nfrom mlflow_autotts.tracking import naming  # upward\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "mlflow_autotts.replay is not allowed to import mlflow_autotts.tracking" in proc.stdout
    assert "mlflow_autotts.replay.results -> mlflow_autotts.tracking.naming" in proc.stdout


def test_no_test_module_imports_another_and_shared_test_modules_are_imported_one_way():
    tests = ROOT / "tests"
    shared = {p.stem for p in tests.glob("*.py") if not p.stem.startswith("test_")}
    wrong = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                first, _, rest = name.partition(".")
                module = rest.partition(".")[0] if first == "tests" else first
                if module.startswith("test_") or (first != "tests" and module in shared):
                    wrong.append(f"{path.name}:{node.lineno}: {name}")
    assert not wrong, "import tests.helpers (or another shared module), never a test module: " + ", ".join(wrong)
