"""A large incident in a real browser: the page shows one page of its signals, the latest page
stays live, and `[` / `]` page through the rest (server-side pages, plain links)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.console.server import INGEST_TOKEN, VIEWER_TOKEN, Console, running_console
from tests.console.test_browser import Pages, browser, shot  # noqa: F401 (the fixture)

SIGNALS = 250


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with running_console(Path(tmp_path_factory.mktemp("console-signal-pages"))) as it:
        yield it


@pytest.fixture
def pages(browser: Browser, console: Console) -> Iterator[Pages]:  # noqa: F811
    opened = Pages(browser, console)
    yield opened
    problems = opened.close()
    assert not problems, problems


def flood(console: Console, numbers: range) -> None:
    """Signals with fingerprints `fp-N`, all grouped into one incident on web-2."""
    body = [
        {
            "source": "load",
            "fingerprint": f"fp-{n}",
            "status": "firing",
            "labels": {"alertname": "Flood", "service": "web", "instance": "web-2"},
        }
        for n in numbers
    ]
    with console.client(INGEST_TOKEN) as client:
        assert client.post("/api/v1/signals", json=body).status_code == 202


def test_a_large_incident_pages_its_signals_by_keyboard(pages: Pages, console: Console) -> None:
    flood(console, range(SIGNALS))
    opened = console.wait_for("IncidentOpened", fingerprint="fp-0")
    incident_id = opened["data"]["incident_id"]
    console.wait_for("IncidentUpdated", incident_id=incident_id, fingerprint=f"fp-{SIGNALS - 1}")

    page = pages.open(VIEWER_TOKEN)
    page.goto(f"/incidents/{incident_id}")
    signals = page.locator("ol.signal-list > li")
    expect(signals).to_have_count(100)
    expect(signals.last).to_contain_text(f"fp-{SIGNALS - 1}")
    expect(page.locator("#signals-title .count")).to_have_text(str(SIGNALS - 1))
    expect(page.locator("ol.timeline").first.locator("[data-type=Escalated]")).to_be_visible()
    shot(page, "incident-signals")

    # the latest page is live: a new signal shows up without a reload
    page.evaluate("window.notReloaded = true")
    flood(console, range(SIGNALS, SIGNALS + 1))
    expect(signals.last).to_contain_text(f"fp-{SIGNALS}")
    expect(signals).to_have_count(100)
    assert page.evaluate("window.notReloaded") is True

    # `[`: the page before; again: the first page, which has nothing before it
    page.keyboard.press("[")
    expect(page).to_have_url(re.compile(rf"/incidents/{incident_id}\?signals_before=\d+$"))
    expect(signals.last).to_contain_text(f"fp-{SIGNALS - 100}")
    page.keyboard.press("[")
    expect(signals.first).to_contain_text("fp-1")
    expect(page.locator("a[data-pager=prev]")).to_have_count(0)
    # `]` back to the later pages, up to the latest one, which has no later page
    page.keyboard.press("]")
    expect(signals.first).to_contain_text("fp-51")
    page.keyboard.press("]")
    expect(signals.last).to_contain_text(f"fp-{SIGNALS}")
    expect(page.locator("a[data-pager=next]")).to_have_count(0)
