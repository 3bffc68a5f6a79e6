"""What the real-browser tests share: the system Chromium (a fixture), its arguments, where
screenshots go, and opening a page on MLflow's UI with Playwright."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import require

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
"""Without the last five Chromium keeps trying to reach Google's services and can hang offline."""


def artifacts_dir(name: str) -> Path:
    """Where a test's screenshots go: ``$AUTOTTS_TEST_ARTIFACTS/<name>``, else the gitignored
    ``test-artifacts/<name>``."""
    d = Path(os.environ.get("AUTOTTS_TEST_ARTIFACTS") or ROOT / "test-artifacts") / name
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def chromium() -> str:
    """The system Chromium, checked before any server starts; missing (or Playwright missing),
    the test skips, and fails under ``CI=true``."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    require(found is not None, "Chromium not found on PATH: the README's test command installs it "
                               "(Debian: apt-get install -y chromium, as root)")
    require(importlib.util.find_spec("playwright") is not None,
            "the playwright package is not installed: pip install -e '.[test]'")
    return str(found)


@contextmanager
def browser(chromium: str, profile: Path) -> Iterator["BrowserContext"]:
    """Headless Chromium with a fresh profile (no first-run state, nothing stored: MLflow's UI
    opens in its own defaults), long timeouts for a loaded machine."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        try:
            yield context
        finally:
            context.close()
