"""The console over HTTP, without a browser: who may see what, escaping, the event stream,
the sign-in cookie."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from onduty.api.auth import COOKIE
from tests.console.server import (
    APPROVER_TOKEN,
    INGEST_TOKEN,
    VIEWER_TOKEN,
    Console,
    running_console,
)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with running_console(Path(tmp_path_factory.mktemp("console-pages")), stream_lifetime=5) as it:
        yield it


def test_a_stranger_is_sent_to_sign_in_and_fragments_answer_401(console: Console) -> None:
    with console.client() as client:
        page = client.get("/approvals?x=1")
        assert page.status_code == 303
        assert page.headers["location"] == "/signin?next=/approvals%3Fx%3D1"
        for path in ("/fragments/incidents", "/fragments/header", "/events/stream"):
            assert client.get(path).status_code == 401, path
        signin = client.get("/signin")
        assert signin.status_code == 200
        assert 'name="token"' in signin.text
        assert client.get("/static/console.css").status_code == 200
    with console.client("not-a-token") as client:
        assert client.get("/fragments/incidents").status_code == 401


def test_pages_are_served_with_a_strict_content_security_policy(console: Console) -> None:
    with console.client(VIEWER_TOKEN) as client:
        for path in ("/", "/approvals", "/services", "/audit"):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in response.headers["content-security-policy"]
            assert "<script>" not in response.text  # no inline script: the policy forbids it
        assert "audit: intact" in client.get("/fragments/header").text


def test_sign_in_sets_an_httponly_strict_cookie_and_sign_out_clears_it(console: Console) -> None:
    origin = {"Origin": console.url}
    with console.client() as client:
        refused = client.post("/signin", data={"token": "wrong"}, headers=origin)
        assert refused.status_code == 401
        assert "not recognised" in refused.text
        huge = client.post("/signin", content=b"token=" + b"x" * 20_000, headers={
            **origin, "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert huge.status_code == 413
        cross_site = client.post(
            "/signin", data={"token": VIEWER_TOKEN}, headers={"Origin": "http://evil.example"}
        )
        assert cross_site.status_code == 403
        response = client.post(
            "/signin", data={"token": VIEWER_TOKEN, "next": "/services"}, headers=origin
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/services"
        cookie = response.headers["set-cookie"].lower()
        assert cookie.startswith(f"{COOKIE}={VIEWER_TOKEN}".lower())
        for attribute in ("httponly", "samesite=strict", "path=/"):
            assert attribute in cookie, cookie
        assert client.get("/").status_code == 200  # the cookie signs every request in
        assert "vera" in client.get("/fragments/header").text
        elsewhere = client.post(
            "/signin", data={"token": VIEWER_TOKEN, "next": "//evil.example/"}, headers=origin
        )
        assert elsewhere.headers["location"] == "/"
        out = client.post("/signout", headers=origin)
        assert out.status_code == 303
        cleared = out.headers["set-cookie"].lower()
        assert cleared.startswith(f'{COOKIE}=""'.lower())  # emptied
        assert "max-age=0" in cleared  # and expired
        client.cookies.clear()
        assert client.get("/").status_code == 303


def test_alert_text_is_escaped_everywhere(console: Console) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    body = {
        "source": "test",
        "fingerprint": "evil-1",
        "status": "firing",
        "labels": {"alertname": "Weird", "service": "web", "instance": "web-4"},
        "annotations": {"summary": evil},
    }
    with console.client(INGEST_TOKEN) as client:
        assert client.post("/api/v1/signals", json=body).status_code == 202
    opened = console.wait_for("IncidentOpened", title=evil)
    incident_id = opened["data"]["incident_id"]
    console.wait_for("Escalated", incident_id=incident_id)  # no runbook for "Weird"
    with console.client(VIEWER_TOKEN) as client:
        for path in ("/", f"/incidents/{incident_id}", f"/fragments/incidents/{incident_id}"):
            text = client.get(path).text
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text, path
            assert "<script>alert" not in text and "<img src=x" not in text, path
        page = client.get(f"/incidents/{incident_id}").text
        assert "Escalated to people" in page
        assert client.get("/incidents/no-such-incident").status_code == 404


def test_the_event_stream_pushes_each_new_event(console: Console) -> None:
    with (
        httpx.Client(
            base_url=console.url,
            headers={"Authorization": f"Bearer {VIEWER_TOKEN}"},
            timeout=httpx.Timeout(10, read=15),
        ) as client,
        client.stream("GET", "/events/stream") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")  # the stream is open: now make something happen
        console.signal("web-3")
        seen: list[dict[str, object]] = []
        deadline = time.monotonic() + 10
        for line in lines:
            if line.startswith("data: "):
                seen.append(json.loads(line.removeprefix("data: ")))
                if any(item["type"] == "ApprovalRequested" for item in seen):
                    break
            assert time.monotonic() < deadline, seen
    kinds = [item["type"] for item in seen]
    assert kinds[0] == "SignalReceived"
    assert "IncidentOpened" in kinds and "PolicyEvaluated" in kinds
    opened = kinds.index("IncidentOpened")
    assert all(item["incident_id"] == seen[opened]["incident_id"] for item in seen[opened:])
    assert all(isinstance(item["seq"], int) for item in seen)


def test_the_event_stream_ends_after_its_lifetime(console: Console) -> None:
    started = time.monotonic()
    with console.client(VIEWER_TOKEN) as client:
        response = client.get("/events/stream", timeout=httpx.Timeout(10, read=15))
    assert response.status_code == 200
    assert 4 < time.monotonic() - started < 9  # the lifetime is 5 s here
    assert response.text.startswith("retry: 1000")


def test_the_services_page_shows_autonomy_with_a_selector_for_admins_only(
    console: Console,
) -> None:
    with console.client(VIEWER_TOKEN) as client:
        page = client.get("/services").text
        assert "<select" not in page
        assert 'class="level level-approve">approve<' in page
    with console.client(APPROVER_TOKEN) as client:
        page = client.get("/services").text
        assert 'data-autonomy="web"' in page and 'data-autonomy="db"' in page
