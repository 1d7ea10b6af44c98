"""The console in a real headless Chromium (Debian's, driven by Playwright; never a
downloaded browser): sign in, watch an incident arrive without reloading, approve its action
from the inbox and watch it get verified and resolved, and a viewer who cannot approve.

Screenshots of every page go to artifacts/console/."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    expect,
    sync_playwright,
)

from tests.console.server import (
    APPROVER_TOKEN,
    VIEWER_TOKEN,
    Console,
    running_console,
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "console"
TIMEOUT_MS = 10_000


def ensure_chromium() -> None:
    """Install Debian's chromium when it is missing; fail loudly when that is impossible."""
    if os.access(CHROMIUM, os.X_OK):
        return
    script = ROOT / "scripts" / "ensure_chromium.sh"
    done = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0 or not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the console's browser tests need {CHROMIUM}, and {script} could not install it "
            f"(exit {done.returncode}):\n{done.stdout}\n{done.stderr}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with running_console(Path(tmp_path_factory.mktemp("console-browser"))) as it:
        yield it


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ensure_chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            timeout=30_000,
        )
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


class Pages:
    """`open(token)`: a fresh browser context signed in with `token` (or not signed in), at
    `/`. Any script error or failed request on a page fails the test, but those it expects
    (`tolerate("status of 403")`)."""

    def __init__(self, browser: Browser, console: Console) -> None:
        self.browser = browser
        self.console = console
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []
        self.tolerated: list[str] = []

    def tolerate(self, text: str) -> None:
        self.tolerated.append(text)

    def _watch(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(message.text)

    def open(self, token: str | None = None, scheme: str = "dark") -> Page:
        context = self.browser.new_context(
            base_url=self.console.url,
            viewport={"width": 1280, "height": 860},
            color_scheme=scheme,  # type: ignore[arg-type]
        )
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._watch)
        page.on("pageerror", lambda error: self.problems.append(str(error)))
        page.goto("/")
        if token is not None:
            expect(page).to_have_url(f"{self.console.url}/signin?next=/")
            page.fill("#token", token)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{self.console.url}/")
            expect(page.locator("#live")).to_have_text("live")
        return page

    def close(self) -> list[str]:
        for context in self.contexts:
            context.close()
        return [p for p in self.problems if not any(t in p for t in self.tolerated)]


@pytest.fixture
def pages(browser: Browser, console: Console) -> Iterator[Pages]:
    opened = Pages(browser, console)
    yield opened
    problems = opened.close()
    assert not problems, problems


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_sign_in_with_a_token_and_out_again(pages: Pages, console: Console) -> None:
    page = pages.open()
    pages.tolerate("status of 401")  # the refused token below
    expect(page).to_have_url(f"{console.url}/signin?next=/")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("That token is not recognised.")
    page.fill("#token", APPROVER_TOKEN)
    shot(page, "signin")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{console.url}/")
    expect(page.locator(".who")).to_have_text("abe")
    expect(page.locator("#open-incidents")).to_have_text("Nothing is open. All quiet.")
    (cookie,) = page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        "onduty_token",
        True,
        "Strict",
    )
    assert page.evaluate("document.cookie") == ""  # the page's script never sees the token
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    shot(page, "help")
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()
    page.goto("/signin")
    expect(page.locator(".signin")).to_contain_text("Signed in as abe")
    page.click("text=Sign out")
    expect(page).to_have_url(f"{console.url}/signin")
    page.goto("/approvals")
    expect(page).to_have_url(f"{console.url}/signin?next=/approvals")


def test_an_incident_arrives_live_is_approved_then_verified_and_resolved(
    pages: Pages, console: Console
) -> None:
    page = pages.open(APPROVER_TOKEN)
    page.evaluate("window.notReloaded = true")
    console.signal("web-1")
    row = page.locator("#open-incidents li", has_text="InstanceDown on web-1")
    expect(row).to_be_visible()
    expect(row.locator(".pill")).to_have_text("awaiting approval")
    expect(row.locator(".badge")).to_have_text("1 approval")
    expect(page.locator("nav .count-warn")).to_have_text("1")
    assert page.evaluate("window.notReloaded") is True  # it arrived live: no reload
    shot(page, "incidents")

    # the inbox, by keyboard: g a, select with j, approve with a (and confirm)
    page.keyboard.press("g")
    page.keyboard.press("a")
    expect(page).to_have_url(f"{console.url}/approvals")
    card = page.locator("article.approval", has_text="web-1")
    expect(card).to_be_visible()
    expect(card.locator(".rule.effect-require_approval")).to_contain_text("autonomy")
    shot(page, "approvals")
    page.keyboard.press("j")
    expect(card).to_have_class("approval selected")
    questions: list[str] = []

    def confirm(dialog: Dialog) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    page.keyboard.press("a")
    expect(page.locator("#toast")).to_have_text("Approved")
    assert questions == ["Approve process.restart on web-1?"]
    expect(page.locator("#inbox")).to_have_text("Nothing waits for an answer.")

    # the incident, by keyboard: g i, j, Enter
    page.keyboard.press("g")
    page.keyboard.press("i")
    expect(page).to_have_url(f"{console.url}/")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{console.url}/incidents/" + row_id(console, "web-1"))
    page.evaluate("window.notReloaded = true")
    timeline = page.locator("ol.timeline")
    expect(timeline.locator("[data-type=ActionSucceeded]")).to_be_visible()
    expect(timeline.locator("[data-type=ApprovalGranted]")).to_contain_text("Approved by abe")
    console.signal("web-1", status="resolved")
    expect(page.locator("#incident-phase")).to_have_text("resolved")
    expect(timeline.locator("[data-type=VerificationPassed]")).to_contain_text("Verified")
    expect(timeline.locator("[data-type=IncidentResolved]")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True
    verdicts = timeline.locator("[data-type=PolicyEvaluated]")
    expect(verdicts.first.locator(".rule.effect-require_approval")).to_contain_text("autonomy")
    expect(verdicts.first.locator(".what")).to_have_text("Guardrails: needs approval")
    shot(page, "incident")
    page.goto("/")
    expect(page.locator(".resolved li", has_text="InstanceDown on web-1")).to_be_visible()


def row_id(console: Console, instance: str) -> str:
    opened = console.wait_for("IncidentOpened", fingerprint=f"down-{instance}")
    return str(opened["data"]["incident_id"])


def test_a_viewer_sees_no_approve_button_and_cannot_approve(pages: Pages, console: Console) -> None:
    console.signal("web-2")
    requested = console.wait_for("ApprovalRequested", incident_id=row_id(console, "web-2"))
    approval_id = requested["data"]["approval_id"]
    page = pages.open(VIEWER_TOKEN)
    pages.tolerate("status of 403")  # the refused approval below
    page.goto("/approvals")
    card = page.locator("article.approval", has_text="web-2")
    expect(card).to_be_visible()
    expect(card.locator("button")).to_have_count(0)
    expect(card.locator(".note")).to_have_text("Only an approver can answer this.")
    page.keyboard.press("a")
    expect(page.locator("#toast")).to_have_text("Only an approver can answer approvals.")
    shot(page, "approvals-viewer")
    status = page.evaluate(
        """(id) => fetch(`/api/v1/approvals/${id}/approve`, {
            method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json", "X-Onduty-Console": "1"},
            body: "{}"}).then((response) => response.status)""",
        approval_id,
    )
    assert status == 403
    with httpx.Client(
        base_url=console.url, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}
    ) as client:
        refused = client.post(f"/api/v1/approvals/{approval_id}/approve", json={})
    assert refused.status_code == 403, refused.text
    page.goto(f"/incidents/{requested['data']['incident_id']}")
    expect(page.locator("#pending-title")).to_be_visible()
    expect(page.locator("[data-approve]")).to_have_count(0)
    page.goto("/services")
    expect(page.locator("select")).to_have_count(0)
    assert all(e["type"] != "ApprovalGranted" for e in console.events() if
               e["data"].get("approval_id") == approval_id)  # fmt: skip


def test_an_admin_changes_a_services_autonomy(pages: Pages, console: Console) -> None:
    page = pages.open(APPROVER_TOKEN, scheme="light")
    shot(page, "incidents-light")
    page.goto("/services")
    selector = page.locator("select[data-autonomy=db]")
    expect(selector).to_have_value("act")
    page.once("dialog", lambda dialog: dialog.accept())
    selector.select_option("observe")
    expect(page.locator("#toast")).to_have_text("db is now observe")
    expect(page.locator("tr", has_text="db")).to_contain_text("(configured: act)")
    expect(page.locator("select[data-autonomy=db]")).to_have_value("observe")
    console.wait_for("AutonomyChanged", service="db", level="observe")
    page.emulate_media(color_scheme="dark")
    shot(page, "services")
    page.goto("/audit")
    expect(page.locator(".verdict")).to_contain_text("The hash chain is intact")
    expect(page.locator(".audit")).to_contain_text("audit: intact")
    shot(page, "audit")


def test_an_operator_acknowledges_and_an_approver_denies_from_the_incident(
    pages: Pages, console: Console
) -> None:
    console.signal("web-3")
    incident_id = row_id(console, "web-3")
    console.wait_for("ApprovalRequested", incident_id=incident_id)
    page = pages.open(APPROVER_TOKEN)
    page.goto(f"/incidents/{incident_id}")
    timeline = page.locator("ol.timeline")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Acknowledge')")
    expect(page.locator("#toast")).to_have_text("Acknowledged")
    expect(timeline.locator("[data-type=Acknowledged]")).to_contain_text("Acknowledged by abe")
    expect(page.locator("button:has-text('Acknowledge')")).to_have_count(0)
    page.keyboard.press("j")  # the pending approval on this page
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("d")
    expect(page.locator("#toast")).to_have_text("Denied")
    expect(timeline.locator("[data-type=ApprovalDenied]")).to_contain_text("Denied by abe")
    expect(page.locator("#pending-title")).to_have_count(0)
    console.wait_for("ApprovalDenied")
