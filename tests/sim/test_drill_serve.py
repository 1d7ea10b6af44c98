"""A drill end to end: `onduty serve --sim` as a real process, a person with a real token who
approves, acknowledges a page and rolls a bad deploy back over HTTP, then ends the drill and
reads its scorecard, which names them with their response times and counts their fix as a
person's. Without --sim the drill's routes do not exist."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.server import Server
from tests.sim.drill_files import (
    COLLEAGUE,
    PERSON,
    PERSON_TOKEN,
    VIEWER_TOKEN,
    write_drill,
)

SPEED = "120"  # a simulated minute is half a second


def wait_for(client: httpx.Client, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get("/api/v1/events", params={"type": kind, "limit": 10}).json()
        if found:
            return dict(found[0])
        time.sleep(0.05)
    raise AssertionError(f"no {kind} within {timeout}s")


def test_a_person_takes_part_in_a_drill_and_is_scored(tmp_path: Path) -> None:
    scenario, config = write_drill(tmp_path)
    started = time.monotonic()
    serving = Server(
        tmp_path / "drill.db", "--sim", str(scenario), "--speed", SPEED,
        config=config, token=PERSON_TOKEN,
    )  # fmt: skip
    with serving as server, server.client() as client:
        drill = client.get("/api/v1/drill").json()
        assert drill["status"] == "running" and drill["scenario"] == "short-drill"
        assert {s["name"] for s in drill["fleet"]} == {"checkout", "payments"}
        assert drill["colleagues"] == [COLLEAGUE]

        # the same doors as every write: a token, and the operator's role
        fix = {"action": "deploy.rollback", "target": "payments"}
        assert httpx.post(f"{server.url}/api/v1/drill/fix", json=fix).status_code == 401
        with server.client(VIEWER_TOKEN) as viewer:
            assert viewer.get("/api/v1/drill").status_code == 200
            refused = viewer.post("/api/v1/drill/fix", json=fix)
            assert refused.status_code == 403, refused.text
            assert viewer.post("/api/v1/drill/end", json={}).status_code == 403

        requested = wait_for(client, "ApprovalRequested")
        approve = client.post(
            f"/api/v1/approvals/{requested['data']['approval_id']}/approve", json={}
        )
        assert approve.status_code == 202, approve.text
        page = wait_for(client, "Escalated")
        incident = page["data"]["incident_id"]
        acknowledged = client.post(f"/api/v1/incidents/{incident}/acknowledge", json={})
        assert acknowledged.status_code == 202, acknowledged.text

        unknown = client.post("/api/v1/drill/fix", json={**fix, "target": "nowhere"})
        assert unknown.status_code == 422 and unknown.json()["field"] == "target", unknown.text
        assert "nowhere" in unknown.json()["error"]
        wrong = client.post("/api/v1/drill/fix", json={**fix, "action": "teleport"})
        assert wrong.status_code == 422 and wrong.json()["field"] == "action", wrong.text
        made = client.post("/api/v1/drill/fix", json=fix)
        assert made.status_code == 200, made.text
        assert made.json()["person"] == PERSON and made.json()["ok"] is True

        ended = client.post("/api/v1/drill/end", json={})
        assert ended.status_code == 200, ended.text
        assert client.post("/api/v1/drill/fix", json=fix).status_code == 409
        drill = client.get("/api/v1/drill").json()
    assert time.monotonic() - started < 20

    assert drill["status"] == "ended" and drill["ended_by"] == PERSON
    card = drill["scorecard"]
    assert card == ended.json()["scorecard"]
    assert card["metrics"]["human_fixed"] == 1, card["metrics"]
    truth = {fault["kind"]: fault for fault in card["truth"]}
    assert truth["bad_deploy"]["cleared_by"] == PERSON
    people = {person["person"]: person for person in card["people"]}
    dana = people[PERSON]
    assert dana["simulated"] is False
    times = {response["kind"]: response for response in dana["responses"]}
    assert set(times) == {"approve", "acknowledge", "fix"}, times
    assert times["approve"]["subject"] == requested["data"]["approval_id"]
    assert times["approve"]["asked_at"] == requested["ts"].replace("Z", "+00:00")
    assert times["acknowledge"]["subject"] == incident
    assert times["fix"]["subject"] == "deploy.rollback payments"
    assert times["fix"]["asked_at"] == page["ts"].replace("Z", "+00:00")  # from the page
    for response in times.values():
        assert response["seconds"] is not None and 0 <= response["seconds"] < 30 * 60
    assert dana["counts"]["fix"] == 1 and dana["median_s"] is not None
    # onduty's fix of the crash needed two approvers: the person, then the colleague
    if COLLEAGUE in people:
        assert people[COLLEAGUE]["simulated"] is True


def test_without_a_simulation_there_is_no_drill(tmp_path: Path) -> None:
    with Server(tmp_path / "plain.db") as server, server.client() as client:
        assert client.get("/api/v1/drill").status_code == 404
        fix = {"action": "process.restart", "target": "web-1"}
        assert client.post("/api/v1/drill/fix", json=fix).status_code == 404
        assert client.post("/api/v1/drill/end", json={}).status_code == 404
        assert client.get("/drill").status_code == 404
        assert 'href="/drill"' not in client.get("/").text
