"""The console's views for a whole shift in a real headless Chromium (Debian's, driven by
Playwright): an incident's signal with its labels, annotations and links; the history of
resolved incidents, paged and searched; the silences, one expired from the page; the shift
overview's pictures; and every page on a 390 px-wide phone without sideways scrolling.

One server and one browser for the module; screenshots go to artifacts/console/, named by view
(`-390` for the phone)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.console.server import (
    APPROVER_TOKEN,
    INGEST_TOKEN,
    VIEWER_TOKEN,
    Console,
    running_console,
)
from tests.console.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (the fixture)

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
HISTORY = 30
"""Incidents opened and resolved for the history: more than one page of 25."""
SCRIPT = "<script>window.pwned = 1</script>"


@dataclass
class Seeded:
    console: Console
    latency: str
    """An open incident whose signal has labels, annotations and links."""
    remediated: str
    """Resolved after onduty restarted db-1 and verified it."""
    history: list[str]
    """`hist-00` … `hist-29`, in the order they resolved."""
    silence: str
    """An active silence the test expires from the console."""


def post(console: Console, path: str, body: Any, token: str = INGEST_TOKEN) -> dict[str, Any]:
    with console.client(token) as client:
        response = client.post(path, json=body)
    assert response.status_code == 202, response.text
    return dict(response.json()) if response.content else {}


def native(fingerprint: str, status: str = "firing", **fields: Any) -> dict[str, Any]:
    return {"source": "test", "fingerprint": fingerprint, "status": status, **fields}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    with running_console(Path(tmp_path_factory.mktemp("console-shift"))) as console:
        latency = native(
            "lat-web-7",
            labels={"alertname": "HighLatency", "service": "web", "instance": "web-7",
                    "team": f"edge{SCRIPT}"},
            annotations={
                "summary": f"p99 above 2 s {SCRIPT}",
                "dashboardURL": "https://grafana.example/d/web?var-instance=web-7&from=now-1h",
                "panelURL": "https://grafana.example/d/web?viewPanel=4",
                "silenceURL": "https://alertmanager.example/#/silences/new",
                "runbook": "javascript:alert(1)",
            },
            generator_url="http://prometheus.example/graph?g0.expr=latency%3E2",
        )  # fmt: skip
        post(console, "/api/v1/signals", latency)
        opened = console.wait_for("IncidentOpened", fingerprint="lat-web-7")

        def blip(n: int, status: str) -> dict[str, Any]:
            labels = {"alertname": "Blip", "service": "web", "instance": f"hist-{n:02d}"}
            return native(f"blip-{n:02d}", status, labels=labels)

        post(console, "/api/v1/signals", [blip(n, "firing") for n in range(HISTORY)])
        history = [
            console.wait_for("IncidentOpened", fingerprint=f"blip-{n:02d}")["data"]["incident_id"]
            for n in range(HISTORY)
        ]
        post(console, "/api/v1/signals", [blip(n, "resolved") for n in range(HISTORY)])
        console.wait_for("IncidentResolved", incident_id=history[-1])  # they resolve in order

        down = native("down-db-1", labels={"alertname": "InstanceDown", "service": "db",
                                            "instance": "db-1"})  # fmt: skip
        post(console, "/api/v1/signals", down)
        remediated = console.wait_for("IncidentOpened", fingerprint="down-db-1")["data"]
        console.wait_for("ActionSucceeded")
        post(console, "/api/v1/signals", {**down, "status": "resolved"})
        console.wait_for("IncidentResolved", incident_id=remediated["incident_id"])

        now = datetime.now(UTC)
        active = post(console, "/api/v1/silences", {
            "matchers": ['instance="web-8"'], "duration": "1h",
            "comment": f"web-8 rebuild {SCRIPT}"}, APPROVER_TOKEN)  # fmt: skip
        post(console, "/api/v1/silences", {
            "matchers": ['service="db"', 'alertname=~"Disk.*"'],
            "starts_at": (now + timedelta(hours=2)).isoformat(),
            "ends_at": (now + timedelta(hours=3)).isoformat(),
            "comment": "db maintenance", "kind": "maintenance"}, APPROVER_TOKEN)  # fmt: skip
        console.wait_for("SilenceCreated", silence_id=active["id"])
        yield Seeded(
            console, opened["data"]["incident_id"], remediated["incident_id"], history,
            active["id"],
        )  # fmt: skip


class Views:
    """Browser contexts signed in (the cookie set as sign-in sets it) at a viewport size; any
    script error fails the test."""

    def __init__(self, chromium: Browser, console: Console) -> None:
        self.browser, self.console = chromium, console
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []

    def open(self, path: str, token: str = APPROVER_TOKEN, size: dict[str, int] = DESKTOP) -> Page:
        context = self.browser.new_context(
            base_url=self.console.url, viewport=size, color_scheme="dark"
        )  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT_MS)
        context.add_cookies([{"name": "onduty_token", "value": token, "url": self.console.url,
                              "httpOnly": True, "sameSite": "Strict"}])  # fmt: skip
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: self.problems.append(str(error)))
        page.goto(path)
        expect(page.locator("#live")).to_have_text("live")
        return page

    def close(self) -> list[str]:
        for context in self.contexts:
            context.close()
        return self.problems


@pytest.fixture
def views(browser: Browser, seeded: Seeded) -> Iterator[Views]:  # noqa: F811
    opened = Views(browser, seeded.console)
    yield opened
    problems = opened.close()
    assert not problems, problems


def fits(page: Page) -> None:
    """Nothing on the page pushes it sideways on a 390 px screen."""
    width = page.evaluate("document.documentElement.scrollWidth")
    wide = page.evaluate(
        """(limit) => Array.from(document.querySelectorAll("body *"))
            .filter((el) => el.getBoundingClientRect().right > limit)
            .slice(0, 5).map((el) => el.tagName + "." + el.className)""",
        PHONE["width"],
    )
    assert width <= PHONE["width"], f"{page.url} is {width} px wide: {wide}"


def never_ran_a_script(page: Page) -> None:
    assert page.evaluate("window.pwned") is None


def test_an_incident_shows_its_signals_labels_annotations_and_links(
    views: Views, seeded: Seeded
) -> None:
    for size, name in ((DESKTOP, "incident-signal"), (PHONE, "incident-signal-390")):
        page = views.open(f"/incidents/{seeded.latency}", VIEWER_TOKEN, size)
        card = page.locator("ol.timeline [data-type=IncidentOpened] .signal")
        chips = card.locator(".chip")
        expect(chips).to_have_text([
            "alertname=HighLatency", "instance=web-7", "service=web", f"team=edge{SCRIPT}",
        ])  # fmt: skip
        notes = card.locator("details.annotations")
        expect(notes).to_have_attribute("open", "")
        expect(notes.locator("dt")).to_have_text(
            ["dashboardURL", "panelURL", "runbook", "silenceURL", "summary"]
        )
        expect(notes.locator("dd").nth(4)).to_have_text(f"p99 above 2 s {SCRIPT}")
        expect(notes.locator("dd").nth(2)).to_have_text("javascript:alert(1)")
        expect(notes.locator("dd").nth(2).locator("a")).to_have_count(0)  # not a link
        links = card.locator(".links a")
        expect(links).to_have_text(["source ↗", "dashboard ↗", "panel ↗", "silence ↗"])
        hrefs = [links.nth(i).get_attribute("href") for i in range(4)]
        assert hrefs == [
            "http://prometheus.example/graph?g0.expr=latency%3E2",
            "https://grafana.example/d/web?var-instance=web-7&from=now-1h",
            "https://grafana.example/d/web?viewPanel=4",
            "https://alertmanager.example/#/silences/new",
        ]
        for i in range(4):
            assert links.nth(i).get_attribute("rel") == "noopener noreferrer"
        every = page.locator("main a[href]")
        for i in range(every.count()):  # no javascript: (or any other) link on the page
            assert re.match(r"^(/|https?://)", every.nth(i).get_attribute("href") or ""), i
        signals = page.locator("ol.signal-list > li")  # the paging section is still there
        expect(page.locator("#signals-title")).to_be_visible()
        expect(signals).to_have_count(0)
        never_ran_a_script(page)
        if size is PHONE:
            fits(page)
        shot(page, name)


def test_the_history_pages_newest_first_and_searches(views: Views, seeded: Seeded) -> None:
    page = views.open("/history")
    rows = page.locator("#history-list > li")
    expect(rows).to_have_count(25)
    expect(page.locator("[data-history-total]")).to_have_text(str(HISTORY + 1))
    expect(rows.first).to_have_attribute("data-key", seeded.remediated)
    expect(rows.first).to_have_attribute("data-outcome", "auto-remediated")
    expect(rows.first.locator(".pill")).to_have_text("auto-remediated")
    expect(rows.first.locator(".recovered")).to_contain_text("recovered in ")
    newest_first = [seeded.remediated, *seeded.history[::-1]][:25]
    assert [rows.nth(i).get_attribute("data-key") for i in range(25)] == newest_first
    expect(rows.nth(1)).to_have_attribute("data-outcome", "escalated")
    shot(page, "history")

    page.keyboard.press("]")  # older
    expect(rows).to_have_count(HISTORY + 1 - 25)
    assert [rows.nth(i).get_attribute("data-key") for i in range(6)] == seeded.history[5::-1]
    expect(page.locator("a[data-pager=next]")).to_have_count(0)
    page.keyboard.press("[")  # newer again
    expect(rows).to_have_count(25)
    expect(rows.first).to_have_attribute("data-key", seeded.remediated)

    page.fill("#history-q", "instance=hist-17")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/history\?q=instance%3Dhist-17$"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-key", seeded.history[17])
    page.goto("/history?q=hist-1")
    expect(rows).to_have_count(10)
    assert [rows.nth(i).get_attribute("data-key") for i in range(10)] == seeded.history[19:9:-1]
    page.goto("/history?q=" + SCRIPT)
    expect(page.locator("#history-list")).to_have_text(f"No resolved incident matches “{SCRIPT}”.")
    never_ran_a_script(page)

    phone = views.open("/history?q=hist", size=PHONE)
    expect(phone.locator("#history-list > li")).to_have_count(25)
    fits(phone)
    shot(phone, "history-390")


def test_silences_are_listed_and_one_is_expired_from_the_console(
    views: Views, seeded: Seeded
) -> None:
    page = views.open("/silences")
    active = page.locator(f"#silences-active [data-silence='{seeded.silence}']")
    expect(active.locator(".chip")).to_have_text(['instance="web-8"'])
    expect(active).to_contain_text(f"web-8 rebuild {SCRIPT}")
    expect(active.locator("[data-countdown]")).to_have_text(re.compile(r"^(59m|1h 00m)"))
    pending = page.locator("#silences-pending [data-silence]")
    expect(pending).to_have_count(1)
    expect(pending.locator(".kind")).to_have_text("maintenance")
    expect(pending.locator(".chip")).to_have_text(['service="db"', 'alertname=~"Disk.*"'])
    expect(page.locator("#silences-expired")).to_have_text("None yet.")
    never_ran_a_script(page)
    shot(page, "silences")

    page.once("dialog", lambda dialog: dialog.accept())
    active.locator("[data-expire]").click()
    expect(page.locator("#toast")).to_have_text("Silence expired")
    expect(page.locator("#silences-active")).to_have_text("No silence is active.")
    expired = page.locator(f"#silences-expired [data-silence='{seeded.silence}']")
    expect(expired.locator(".pill")).to_have_text("expired")
    expect(expired.locator("[data-expire]")).to_have_count(0)
    seeded.console.wait_for("SilenceExpired", silence_id=seeded.silence)

    viewer = views.open("/silences", VIEWER_TOKEN, PHONE)
    expect(viewer.locator("#silences-pending [data-silence]")).to_have_count(1)
    expect(viewer.locator("[data-expire]")).to_have_count(0)  # a viewer cannot expire one
    fits(viewer)
    shot(viewer, "silences-390")


def test_the_shift_overview_draws_its_pictures_as_svg(views: Views, seeded: Seeded) -> None:
    page = views.open("/shift?window=1h")
    tiles = page.locator(".tile")
    expect(page.locator("[data-tile='resolved'] .tile-value")).to_have_text(str(HISTORY + 1))
    expect(page.locator("[data-tile='auto-remediated'] .tile-value")).to_have_text("1 (3%)")
    expect(page.locator("[data-tile='escalated'] .tile-value")).to_have_text(f"{HISTORY} (97%)")
    expect(page.locator("[data-tile='open now'] .tile-value")).to_have_text("1")
    expect(tiles).to_have_count(5)
    charts = page.locator("svg.chart-svg[role=img]")
    expect(charts).to_have_count(3)
    expect(charts.locator("> title")).to_have_text([
        "Incidents opened in the last hour",
        "Auto-remediated against escalated",
        "Time to recover, incidents resolved in the last hour",
    ])  # fmt: skip
    over_time = page.locator("#chart-over-time svg")
    expect(over_time.locator("desc")).to_have_text(
        f"{HISTORY + 2} incidents opened in the last hour: 1 auto-remediated, "
        f"{HISTORY} escalated, 1 open."
    )
    services = page.locator("#chart-by-service svg")
    expect(services.locator("rect > title").first).to_have_text(
        "all services: 1 of 32 auto-remediated (3%)"
    )
    expect(services.locator("text.label-name")).to_have_text(["all services", "web", "db"])
    recovery = page.locator("#chart-recovery svg rect > title")
    expect(recovery.first).to_contain_text("recovered in < 1m")
    assert page.locator("svg script, svg foreignObject").count() == 0
    for chart in ("over-time", "by-service", "recovery"):  # drawn with a size, not empty
        box = page.locator(f"#chart-{chart} svg").bounding_box()
        assert box is not None and box["width"] > 600 and box["height"] > 60, (chart, box)
    shot(page, "shift")
    page.click(".windows a:has-text('24h')")
    expect(page.locator("#chart-over-time svg > title")).to_have_text(
        "Incidents opened in the last 24 hours"
    )

    phone = views.open("/shift?window=1h", VIEWER_TOKEN, PHONE)
    expect(phone.locator("svg.chart-svg")).to_have_count(3)
    fits(phone)
    shot(phone, "shift-390")


def test_every_page_fits_a_390px_screen(views: Views, seeded: Seeded) -> None:
    seeded.console.signal("web-4")  # an approval waiting, for the inbox and the incident
    requested = seeded.console.wait_for("ApprovalRequested")
    page = views.open("/", size=PHONE)
    for path, name in (
        ("/", "incidents-390"),
        ("/approvals", "approvals-390"),
        ("/services", "services-390"),
        ("/audit", "audit-390"),
        (f"/incidents/{requested['data']['incident_id']}", "incident-390"),
        (f"/incidents/{seeded.remediated}", "incident-resolved-390"),
        ("/history", None),
        ("/silences", None),
        ("/shift", None),
        ("/signin", None),
    ):
        page.goto(path)
        expect(page.locator("main h1").first).to_be_visible()
        fits(page)
        if name:
            shot(page, name)


def test_bad_queries_are_refused_naming_the_parameter_and_svg_text_is_escaped(
    seeded: Seeded,
) -> None:
    console = seeded.console
    evil = "<b onmouseover=alert(1)>pay</b>"
    post(console, "/api/v1/signals", native("evil-1", labels={"alertname": "Odd", "service": evil}))
    console.wait_for("IncidentOpened", fingerprint="evil-1")
    with console.client(VIEWER_TOKEN) as client:
        too_long = client.get("/history", params={"q": "x" * 201})
        assert too_long.status_code == 400
        assert "q: the search is longer than 200 characters." in too_long.text
        assert client.get("/history?before=-1").status_code == 400
        assert "Give before or after, not both." in client.get("/history?before=1&after=2").text
        window = client.get("/fragments/shift?window=2y")
        assert (window.status_code, window.text) == (
            400, "window must be one of 1h, 6h, 12h, 24h, 7d."
        )  # fmt: skip
        drawn = client.get("/fragments/shift?window=1h").text
    assert "&lt;b onmouseover=alert(1)&gt;pay&lt;/b&gt;" in drawn
    assert "<b onmouseover" not in drawn
