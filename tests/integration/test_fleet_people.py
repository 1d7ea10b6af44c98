"""People answer a fleet through any node: an approval asked for by the manager of one
partition is answered on another node's API and the action runs once; an acknowledgement sent
to any node reaches the incident's partition. Through the front door (HTTP), as people do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.fleet import fleet, held, signal_body, wait_for

pytestmark = pytest.mark.slow


def pending(url: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/approvals", timeout=10)
    answer.raise_for_status()
    return list(answer.json())


def test_an_approval_is_answered_through_any_node(tmp_path: Path) -> None:
    with fleet(tmp_path, partitions=4, instances=6, autonomy="approve") as f:
        first, second = f.server("first").start(), f.server("second").start()
        wait_for(lambda: held(first) == 2 and held(second) == 2, 20, "partitions shared")
        for i in range(4):  # incidents over several partitions: some on each manager
            body = signal_body(f"web-{i}")
            assert (
                httpx.post(f"{first.url}/api/v1/signals", json=body, timeout=10).status_code == 202
            )
        wait_for(
            lambda: len(pending(first.url)) == len(pending(second.url)) == 4,
            20,
            "every approval seen on both nodes",
        )
        for request in pending(second.url):  # all answered on one node, whoever asked
            answered = httpx.post(
                f"{second.url}/api/v1/approvals/{request['id']}/approve", json={}, timeout=10
            )
            assert answered.status_code == 202, answered.text
        wait_for(lambda: sum(f.runs().values()) == 4, 20, "every approved action ran")
        assert f.runs() == {f"web-{i}": 1 for i in range(4)}
        wait_for(lambda: pending(first.url) == [], 10, "no approval left pending anywhere")


def test_an_acknowledgement_reaches_the_incident_through_any_node(tmp_path: Path) -> None:
    with fleet(tmp_path, partitions=4, instances=6, autonomy="suggest") as f:
        first, second = f.server("first").start(), f.server("second").start()
        wait_for(lambda: held(first) == 2 and held(second) == 2, 20, "partitions shared")
        for i in range(3):
            body = signal_body(f"web-{i}")
            assert (
                httpx.post(f"{second.url}/api/v1/signals", json=body, timeout=10).status_code == 202
            )

        def incidents() -> list[dict[str, Any]]:
            return list(httpx.get(f"{first.url}/api/v1/incidents", timeout=10).json())

        wait_for(lambda: len(incidents()) == 3, 20, "the incidents seen")
        for incident in incidents():
            acked = httpx.post(
                f"{first.url}/api/v1/incidents/{incident['id']}/acknowledge", json={}, timeout=10
            )
            assert acked.status_code == 202, acked.text

        def acknowledged() -> int:
            found = httpx.get(
                f"{second.url}/api/v1/events", params={"type": "Acknowledged"}, timeout=10
            )
            return len(found.json())

        wait_for(lambda: acknowledged() == 3, 20, "every acknowledgement recorded")
        unknown = httpx.post(
            f"{first.url}/api/v1/incidents/inc-nope/acknowledge", json={}, timeout=10
        )
        assert unknown.status_code == 404
