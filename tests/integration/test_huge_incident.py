"""One incident of 40,000 signals, end to end: a running `onduty serve` answers about it with
bounded JSON and a bounded console page, and pages through every one of its signals."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.server import Server

SIGNALS = 40_000
BATCH = 2_000
BOUND = 200_000  # bytes: any one answer about the incident, however many signals it has
EVIL = '<script>alert("fp")</script>'
CONFIG = "services:\n  - {name: web, autonomy: observe, instances: [web-1]}\n"


def batch(start: int) -> list[dict[str, Any]]:
    return [
        {
            "source": "load",
            "fingerprint": f"fp-{n}" if n < SIGNALS - 1 else EVIL,
            "status": "firing",
            "labels": {"alertname": "Flood", "service": "web", "instance": f"i-{n}"},
        }
        for n in range(start, min(start + BATCH, SIGNALS))
    ]


@pytest.fixture(scope="module")
def flooded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, float]]:
    """A server whose one incident has 40,000 signals; its id; how long the flood took."""
    folder = tmp_path_factory.mktemp("huge")
    (folder / "onduty.yaml").write_text(CONFIG)
    with Server(folder / "huge.db", config=folder / "onduty.yaml") as server:
        started = time.monotonic()
        with server.client() as client:
            for start in range(0, SIGNALS, BATCH):
                answer = client.post("/api/v1/signals", json=batch(start), timeout=60)
                assert answer.status_code == 202, answer.text
            deadline = time.monotonic() + 30
            while True:
                listed = client.get("/api/v1/incidents").json()
                if listed and listed[0]["signals"] == SIGNALS:
                    break
                assert time.monotonic() < deadline, listed
                time.sleep(0.1)
        assert len(listed) == 1, [item["title"] for item in listed]
        yield server, listed[0]["id"], time.monotonic() - started


def fingerprint(event: dict[str, Any]) -> str:
    return str(event["data"]["fingerprint"])


def expected_fingerprints() -> list[str]:
    """The signal events' order: every signal but the first (which opened the incident)."""
    return [f"fp-{n}" for n in range(1, SIGNALS - 1)] + [EVIL]


def test_the_incident_answer_is_bounded(flooded: tuple[Server, str, float]) -> None:
    server, incident_id, took = flooded
    assert took < 60, f"40,000 signals took {took:.1f} s"
    with server.client() as client:
        answer = client.get(f"/api/v1/incidents/{incident_id}")
        listed = client.get("/api/v1/incidents")
    assert answer.status_code == 200
    assert len(answer.content) < BOUND, len(answer.content)
    assert len(listed.content) < BOUND, len(listed.content)
    incident = answer.json()
    assert incident["signals"] == SIGNALS
    page = incident["signal_events"]
    assert page["total"] == SIGNALS - 1
    shown = [e for e in incident["timeline"] if e["data"].get("change") == "signal_added"]
    assert [fingerprint(e) for e in shown] == [f"fp-{n}" for n in range(1, 101)]
    assert incident["timeline"][0]["type"] == "IncidentOpened"
    assert incident["timeline_omitted"]["signals"] == SIGNALS - 1 - 100
    assert page["previous"] is None
    assert page["next"] == (
        f"/api/v1/incidents/{incident_id}/signals?after={shown[-1]['seq']}&limit=100"
    )


def test_paging_visits_every_signal_once_in_order(flooded: tuple[Server, str, float]) -> None:
    server, incident_id, _ = flooded
    seen: list[dict[str, Any]] = []
    with server.client() as client:
        url: str | None = f"/api/v1/incidents/{incident_id}/signals?limit=1000"
        while url is not None:
            answer = client.get(url)
            assert answer.status_code == 200, answer.text
            assert len(answer.content) < 1000 * 1000  # a page of 1,000 stays well under 1 MB
            body = answer.json()
            assert body["total"] == SIGNALS - 1
            seen.extend(body["events"])
            url = body["next"]
        assert [fingerprint(e) for e in seen] == expected_fingerprints()
        seqs = [e["seq"] for e in seen]
        assert seqs == sorted(set(seqs))

        # and backwards from the latest page, the same signals
        backwards: list[dict[str, Any]] = []
        url = client.get(f"/api/v1/incidents/{incident_id}").json()["signal_events"]["latest"]
        url = url.replace("limit=100", "limit=1000")
        while url is not None:
            body = client.get(url).json()
            backwards[:0] = body["events"]
            url = body["previous"]
        assert [e["seq"] for e in backwards] == seqs

        too_many = client.get(f"/api/v1/incidents/{incident_id}/signals?limit=1001")
        assert too_many.status_code == 422 and "limit" in too_many.text
        assert client.get("/api/v1/incidents/no-such/signals").status_code == 404


def signal_seqs(html: str) -> list[int]:
    """The signal events a console page shows, by seq."""
    listed = html.split('class="timeline signal-list"', 1)[1]
    return [int(seq) for seq in re.findall(r'data-type="IncidentUpdated" data-seq="(\d+)"', listed)]


def pager(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_the_console_pages_through_the_signals(flooded: tuple[Server, str, float]) -> None:
    server, incident_id, _ = flooded
    with server.client() as client:

        def get(path: str) -> str:
            page = client.get(path)
            assert page.status_code == 200, page.text[:500]
            assert len(page.content) < BOUND, (path, len(page.content))
            return page.text

        latest = get(f"/incidents/{incident_id}")
        newest = signal_seqs(latest)
        assert len(newest) == 100 and newest == sorted(newest)
        # the alert's text is data: escaped, never markup
        assert "&lt;script&gt;alert(&#34;fp&#34;)&lt;/script&gt;" in latest
        assert "<script>alert" not in latest
        assert pager(latest, "next") is None
        assert f'data-fragment="/fragments/incidents/{incident_id}"' in latest

        earlier_link = pager(latest, "prev")
        assert earlier_link == f"/incidents/{incident_id}?signals_before={newest[0]}"
        earlier = get(earlier_link)
        older = signal_seqs(earlier)
        assert len(older) == 100 and older[-1] < newest[0]
        # the live refresh of that page keeps showing that page
        query = earlier_link.split("?", 1)[1]
        assert f'data-fragment="/fragments/incidents/{incident_id}?{query}"' in earlier
        assert signal_seqs(get(f"/fragments/incidents/{incident_id}?{query}")) == older

        later_link = pager(earlier, "next")
        assert later_link is not None
        assert signal_seqs(get(later_link)) == newest

        first_link = pager(earlier, "first")
        assert first_link == f"/incidents/{incident_id}?signals_after=0"
        first = get(first_link)
        assert pager(first, "prev") is None
        assert ">fp-1<" in first and ">fp-100<" in first and ">fp-101<" not in first

        bad = client.get(f"/incidents/{incident_id}?signals_after=soon")
        assert bad.status_code == 400 and "signals_after" in bad.text


def test_the_whole_walk_is_quick(flooded: tuple[Server, str, float]) -> None:
    """Reading a page far into the incident costs about what the first page does."""
    server, incident_id, _ = flooded
    first = f"/api/v1/incidents/{incident_id}/signals?limit=1000"
    with httpx.Client(base_url=server.url, timeout=10) as client:
        far: str = first
        for _ in range(20):  # twenty pages in: the middle of the incident's signals
            far = client.get(far).json()["next"]

        def read_twenty(url: str) -> tuple[float, list[int]]:
            started = time.monotonic()
            for _ in range(20):
                body = client.get(url).json()
            assert len(body["events"]) == 1000
            return time.monotonic() - started, [e["seq"] for e in body["events"]]

        first_took, first_seqs = read_twenty(first)
        far_took, far_seqs = read_twenty(far)
    assert far_seqs[0] > first_seqs[-1]  # a page from the middle, not the first again
    assert far_took < 5
    assert far_took < 5 * first_took + 1.0, (first_took, far_took)
