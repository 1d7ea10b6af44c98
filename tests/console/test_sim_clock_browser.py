"""A simulation watched live: every relative time in the console is the service's simulated
clock (a `ScaledClock`, `SPEED` times faster than real time, starting on a January morning),
never the browser's wall clock, both as the server renders it and as the page's script advances
it; the header shows the simulated time and the speed. And `onduty serve --sim demo --speed
100` wires its simulated clock to the console."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from onduty.runtime import ScaledClock
from tests.console.server import APPROVER_TOKEN, Console, running_console
from tests.console.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (the fixture)
from tests.integration.server import Server

SPEED = 20
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
APPROVAL_TIMEOUT_S = 600  # the test configuration's approvals.timeout
COUNTDOWN = re.compile(r"^(?:(\d+)m )?(\d+)s$|^(\d+)m$")


def seconds(text: str) -> int:
    """'9m 41s' → 581; '12m' → 720; '42s' → 42."""
    found = COUNTDOWN.match(text.strip())
    assert found, f"not a short duration: {text!r}"
    minutes, secs, whole = found.groups()
    return int(whole) * 60 if whole else int(minutes or 0) * 60 + int(secs)


def simulated(page: Page) -> datetime:
    text = page.locator(".simclock time").inner_text()
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    clock = ScaledClock(START, SPEED)
    with running_console(Path(tmp_path_factory.mktemp("console-sim")), clock=clock) as it:
        yield it


def test_relative_times_follow_the_simulated_clock(browser: Browser, console: Console) -> None:  # noqa: F811
    console.signal("web-1")
    requested = console.wait_for("ApprovalRequested")
    asked_at = datetime.fromisoformat(requested["ts"])
    assert asked_at.date() == START.date()  # the event is stamped with simulated time

    # as the server renders it
    with console.client(APPROVER_TOKEN) as client:
        inbox = client.get("/fragments/approvals").text
        listing = client.get("/fragments/incidents").text
        header = client.get("/fragments/header").text
    rendered = re.search(r"data-countdown[^>]*>([^<]+)<", inbox)
    assert rendered and 8 * 60 < seconds(rendered.group(1)) <= APPROVAL_TIMEOUT_S, inbox
    age = re.search(r'class="age"[^>]*>([^<]+)<', listing)
    assert age and seconds(age.group(1)) < 120, listing
    assert "\u00d720" in header and 'data-clock-speed="20"' in header

    # as the page's script advances it
    failures: list[str] = []
    for size, name in (({"width": 1280, "height": 860}, "sim-clock"),
                       ({"width": 390, "height": 844}, "sim-clock-390")):  # fmt: skip
        context = browser.new_context(base_url=console.url, viewport=size)  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT_MS)
        context.add_cookies([{"name": "onduty_token", "value": APPROVER_TOKEN,
                              "url": console.url}])  # fmt: skip
        page = context.new_page()
        page.on("pageerror", lambda error: failures.append(str(error)))
        page.goto("/approvals")
        expect(page.locator("#live")).to_have_text("live")
        clock = page.locator(".simclock")
        expect(clock).to_contain_text("sim 2026-01-05 ")
        expect(clock).to_contain_text("\u00d720")
        countdown = page.locator("article.approval [data-countdown]")
        first, at = seconds(countdown.inner_text()), simulated(page)
        assert 60 < first <= APPROVAL_TIMEOUT_S, first  # never "0s": same clock as the request
        page.wait_for_timeout(1500)
        later, then = seconds(countdown.inner_text()), simulated(page)
        ran = (then - at).total_seconds()
        assert 1.5 * SPEED * 0.5 <= ran <= 1.5 * SPEED * 2, ran  # the clock runs at SPEED
        assert 1.5 * SPEED * 0.5 <= first - later <= 1.5 * SPEED * 2, (first, later)
        page.goto("/")
        ages = page.locator("#open-incidents time[data-age]")
        expect(ages.first).to_have_text(re.compile(r"^\d+(m|m \d+s|s)$"))
        assert seconds(ages.first.inner_text()) < 600
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
        shot(page, name)
        context.close()
    assert not failures, failures


def test_serve_with_a_simulation_shows_the_simulated_clock(tmp_path: Path) -> None:
    with Server(tmp_path / "sim.db", "--sim", "demo", "--speed", "100") as server:
        header = httpx.get(f"{server.url}/fragments/header", timeout=10).text
    assert 'class="simclock"' in header, header
    assert "\u00d7100" in header  # x100
    now = re.search(r'data-clock-now="([^"]+)"', header)
    assert now and now.group(1).startswith("2026-01-05T09:"), header  # the demo's morning
