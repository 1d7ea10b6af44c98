"""Two people complete one two-person approval in the console, each in a browser context of
their own signed in with their own token, against a started `onduty serve` (Debian's chromium,
driven by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.console.test_browser import SHOTS, TIMEOUT_MS, browser  # noqa: F401 (the fixture)
from tests.integration.server import Server
from tests.integration.test_two_person import TOKENS, config_text, signal, verdicts


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("two-person-browser")
    (folder / "onduty.yaml").write_text(config_text())
    with Server(folder / "two.db", config=folder / "onduty.yaml") as running:
        yield running


def signed_in(browser: Browser, server: Server, name: str, problems: list[str]) -> Page:  # noqa: F811
    """A browser context of its own for `name`, signed in with their token, at the inbox."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"{name}: {error}"))
    page.on("dialog", dialog_accept)
    page.goto("/approvals")
    page.fill("#token", TOKENS[name])
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{server.url}/approvals")
    expect(page.locator("#live")).to_have_text("live")
    return page


def dialog_accept(dialog: Dialog) -> None:
    dialog.accept()


def test_alice_and_bob_complete_one_approval_in_two_browsers(
    browser: Browser,  # noqa: F811
    server: Server,
) -> None:
    problems: list[str] = []
    alice = signed_in(browser, server, "alice", problems)
    bob = signed_in(browser, server, "bob", problems)
    request = signal(server, "checkout-3")
    cards = {
        page: page.locator(f"article[data-approval='{request['id']}']") for page in (alice, bob)
    }
    for card in cards.values():  # it arrives live on both pages
        expect(card.locator("[data-approval-status]")).to_have_text(
            "0 of 2: waiting for 2 approvers"
        )
    cards[alice].locator("[data-approve]").click()
    expect(alice.locator(".toast")).to_contain_text("1 of 2: approved by alice")
    halfway = "1 of 2: approved by alice, waiting for another approver"
    for card in cards.values():  # still pending, for both, saying where it stands
        expect(card.locator("[data-approval-status]")).to_have_text(halfway)
    expect(cards[alice].locator("[data-approve]")).to_have_count(0)  # alice has answered
    expect(cards[alice].locator("[data-deny]")).to_have_count(0)
    expect(cards[alice].locator("[data-answered]")).to_be_visible()
    expect(cards[bob].locator("[data-approve]")).to_be_visible()
    bob.screenshot(path=str(SHOTS / "two-person-halfway.png"), full_page=True)
    cards[bob].locator("[data-approve]").click()
    for page, card in cards.items():  # granted in full: gone from both inboxes
        expect(card).to_have_count(0)
        expect(page.locator("#inbox")).to_have_text("Nothing waits for an answer.")
    assert verdicts(server, request["incident_id"])[-1] == (
        "allow",
        "autonomy: approved by alice and bob",
    )
    alice.context.close()
    bob.context.close()
    assert not problems, problems
