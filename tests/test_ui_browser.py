"""Promote in the registry UI, in a real browser: headless Chromium (the system package) on
MLflow's own UI, with a real ``mlflow server`` and ``autotts gatekeeper serve`` behind it.

A user opens the registered model, sees ``@champion`` on version 1, opens version 2, sets
``@candidate`` with the UI's alias editor and saves; the webhook fires, the gate runs, and the
verdict must appear on the version page as the user sees it (the ``autotts.gatekeeper.*``
tags, the report as description, ``@champion`` moved): the assertions read the page's DOM,
reloading as a user would, since the UI does not poll. Screenshots are kept as artifacts in
``ui-browser/`` under ``$AUTOTTS_TEST_ARTIFACTS`` (else ``<repo>/test-artifacts/``, gitignored),
also when the test fails; the path is printed.

Playwright rather than Selenium: its locators wait for MLflow's React UI to render (no
sleeps or explicit waits around each click) and it drives the system Chromium over CDP with
no separate chromedriver to match the browser's version.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.tracking.gatekeeper import GATEKEEPER_TAG
from tests.browser import CHROMIUM_ARGS, artifacts_dir, chromium  # noqa: F401  (chromium is a fixture)
from tests.gatekeeper_fixtures import DATA, NAME, Served, gatekeeper_served

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

VERDICT_TIMEOUT = 120.0
"""Seconds for the webhook, the gate (~5 s here) and the tags to reach the page."""


@pytest.fixture
def world(tmp_path: Path, data_dir: Path) -> Iterator[Served]:
    """The server and the gatekeeper with v1 (CMC β=0.5) gated to ``@champion`` through the REST
    API, and v2 (CMC β=0.75: as accurate within 1.5x the tokens, so it passes) not yet gated."""
    specs = (ControllerSpec("cmc", 0.5), ControllerSpec("cmc", 0.75))
    with gatekeeper_served(tmp_path, str(data_dir / DATA[0] / f"{DATA[1]}.json"), specs) as served:
        seq = served.last_seq()
        served.set_alias("candidate", "1")
        assert served.decided("candidate", "1", seq).decision == "promoted", served.keeper.log()[-3000:]
        assert served.champion() == "1"
        yield served


@pytest.mark.slow
def test_candidate_set_in_the_ui_alias_editor_is_gated_and_the_verdict_shows_on_the_version(
        chromium: str, world: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = artifacts_dir("ui-browser")
    for old in shots.glob("*.png"):
        old.unlink()
    model_url = f"{world.server}/#/models/{NAME}"
    profile = tmp_path / "chromium-profile"  # empty: no first-run state, nothing to sync
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        page = browser.pages[0] if browser.pages else browser.new_page()
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        try:
            # the registered model: version 1 holds @champion
            page.goto(model_url)
            v1_row = page.get_by_role("row").filter(has=page.get_by_role("link", name="Version 1", exact=True))
            expect(alias_tag(v1_row, "champion")).to_be_visible()
            close_assistant(page)
            page.screenshot(path=shots / "1-model.png")

            # version 2, its alias editor: @candidate, saved (the UI's own request must succeed)
            page.get_by_role("link", name="Version 2", exact=True).click()
            expect(page).to_have_url(f"{model_url}/versions/2")
            aliases = page.get_by_test_id("descriptions-item").filter(
                has=page.get_by_text("Aliases", exact=True))
            aliases.get_by_title("Add aliases", exact=True).click()
            editor = page.get_by_role("dialog", name="Add/Edit alias for model version 2")
            editor.get_by_role("combobox").fill("candidate")
            editor.get_by_role("combobox").press("Enter")
            expect(editor.get_by_title("candidate", exact=True)).to_be_visible()
            page.screenshot(path=shots / "2-alias-editor.png")
            with page.expect_response(lambda r: r.url.endswith("/registered-models/alias")
                                      and r.request.method == "POST") as saved:
                editor.get_by_role("button", name="Save aliases").click()
            assert saved.value.ok, saved.value.text()
            expect(editor).to_be_hidden()
            expect(alias_tag(aliases, "candidate")).to_be_visible()

            # the verdict, as the page shows it once the gate has decided
            decision = page.locator(f"tr[data-row-key='{GATEKEEPER_TAG}.decision'] td").nth(1)
            deadline = time.monotonic() + VERDICT_TIMEOUT
            while not decision.is_visible():
                assert time.monotonic() < deadline, (
                    f"no verdict on the version page within {VERDICT_TIMEOUT:.0f} s; gatekeeper log:\n"
                    + world.keeper.log()[-3000:])
                time.sleep(1)
                page.reload()
                aliases.wait_for()
            expect(decision).to_have_text("promoted")
            reason = page.locator(f"tr[data-row-key='{GATEKEEPER_TAG}.reason'] td").nth(1)
            expect(reason).to_contain_text("@champion")
            expect(alias_tag(aliases, "champion")).to_be_visible()
            # the report: its heading, the table, the gate's run linked and its plot shown
            heading = page.get_by_role("heading", name="Gate: v2 promoted to @champion, replacing v1")
            expect(heading).to_be_visible()
            expect(heading.get_by_role("link")).to_have_count(0)  # an @alias is not a link to a GitHub user
            expect(page.get_by_role("cell", name="mean", exact=True)).to_be_visible()
            run_link = page.get_by_role("link", name=f"gate-{NAME}-v2", exact=True)
            expect(run_link).to_have_attribute("href", re.compile(
                rf"^{re.escape(world.server)}/#/experiments/\d+/runs/\w+\?workflowType=machine_learning$"))
            plot = page.locator("img[src*='get-artifact?path=gate.png']")  # the UI drops an image's alt text
            expect(plot).to_be_visible()
            assert plot.evaluate("img => img.complete && img.naturalWidth > 0"), "the gate's plot did not load"
            page.screenshot(path=shots / "3-verdict.png")
            decision.scroll_into_view_if_needed()
            page.screenshot(path=shots / "4-verdict-tags.png")

            # the model page agrees: @champion moved from version 1 to version 2; it says what the model is
            page.goto(model_url)
            expect(page.get_by_text("An autotts test-time-scaling controller.", exact=True)).to_be_visible()
            v2_row = page.get_by_role("row").filter(has=page.get_by_role("link", name="Version 2", exact=True))
            expect(alias_tag(v2_row, "champion")).to_be_visible()
            expect(v1_row).to_be_visible()
            expect(alias_tag(v1_row, "champion")).to_have_count(0)
            page.screenshot(path=shots / "5-model-after.png")
        except BaseException:
            with contextlib.suppress(Exception):  # the failure is the test's, not the screenshot's
                page.screenshot(path=shots / "failure.png")
            raise
        finally:
            browser.close()
            with capsys.disabled():
                print(f"\nbrowser screenshots: {shots}")
    assert world.champion() == "2"  # and the registry agrees with the page


def alias_tag(scope: Page | Locator, alias: str) -> Locator:
    """An alias as the UI shows it (``@ alias``, a status element titled with its name)."""
    return scope.get_by_role("status", name=alias, exact=True)


def close_assistant(page: Page) -> None:
    """Close the MLflow Assistant side panel if it opened (it narrows the page in screenshots)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    panel = page.get_by_role("button", name="Close", exact=True)
    try:
        panel.first.click(timeout=3000)
    except PlaywrightTimeout:
        pass
