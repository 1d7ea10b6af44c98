"""A drill in a real headless Chromium: a person opens /drill of `onduty serve --sim`, presses
the restart control of an instance and sees it take effect (the instance boots, its restart
count goes up, the fix is listed under their name), then ends the drill and sees the scorecard
with their response times. Screenshots go to artifacts/console/."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Browser, expect

from tests.console.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (the fixture)
from tests.integration.server import Server
from tests.sim.drill_files import PERSON, PERSON_TOKEN, write_drill


def test_a_person_fixes_the_fleet_from_the_drill_page(browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    scenario, config = write_drill(tmp_path)
    started = time.monotonic()
    serving = Server(
        tmp_path / "drill.db", "--sim", str(scenario), "--speed", "60",
        config=config, token=PERSON_TOKEN,
    )  # fmt: skip
    with serving as server:
        context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        context.add_cookies([{"name": "onduty_token", "value": PERSON_TOKEN, "url": server.url}])
        failures: list[str] = []
        page = context.new_page()
        page.on("pageerror", lambda error: failures.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())

        page.goto("/drill")
        expect(page.locator("[data-drill-status]")).to_have_text("running")
        expect(page.locator('nav a[href="/drill"]')).to_be_visible()
        row = page.locator('tr[data-instance="checkout-1"]')
        expect(row.locator("[data-restarts]")).to_have_text("0")

        page.click('button[data-fix="process.restart checkout-1"]')
        expect(page.locator("#toast")).to_have_text("Restart checkout-1: done")
        expect(row.locator("[data-restarts]")).to_have_text("1")
        expect(row.locator("[data-state]")).to_have_text("booting")
        fixed = page.locator('tr[data-fixed="process.restart checkout-1"]')
        expect(fixed).to_contain_text(PERSON)
        expect(fixed).to_contain_text("restarted checkout-1")
        shot(page, "drill-running")

        page.click("button[data-drill-end]")
        expect(page.locator("[data-drill-status]")).to_have_text("ended")
        expect(page.locator(f'#scorecard tr[data-person="{PERSON}"]')).to_be_visible()
        expect(page.locator("#scorecard")).to_contain_text("fix process.restart checkout-1")
        expect(page.locator('button[data-fix="process.restart checkout-1"]')).to_be_disabled()
        shot(page, "drill-scorecard")
        context.close()
    assert not failures, failures
    assert time.monotonic() - started < 20
