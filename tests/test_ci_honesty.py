"""Under ``CI=true`` a test whose data or component is missing fails; elsewhere it skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run_reproduction_without_data(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUTOTTS_DATA_DIR": str(tmp_path / "no-data-here"), "CI": ci}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           str(ROOT / "tests" / "test_reproduction.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci, outcomes", [("true", ("failed", "error")), ("", ("skipped",))])
def test_missing_published_data_fails_under_ci_and_skips_elsewhere(tmp_path, ci, outcomes):
    proc = _run_reproduction_without_data(tmp_path, ci)
    summary = proc.stdout.strip().splitlines()[-1]
    assert any(o in summary for o in outcomes), proc.stdout[-2000:]
    assert "passed" not in summary and ("skipped" not in summary or not ci)
    if ci:
        assert proc.returncode == 1
        assert "published replay data not found" in proc.stdout
        assert "CI=true" in proc.stdout
    else:
        assert proc.returncode == 0
