"""Drills without a server: people's fixes refused with the field named or applied as theirs,
the simulated colleague not repeating a fix a person made, the end and its scorecard with each
person's response times, the drill's routes and their roles, and the page escaping what it
shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from onduty.api import build_app
from onduty.api.auth import required_role
from onduty.api.routes.drill import DRILL_ROLES
from onduty.configfile import load_config
from onduty.events import Event
from onduty.service import Service
from onduty.sim.live import Fix, LiveSimulation, Refused, _Locked, response_times
from onduty.sim.scenario import load_scenario
from tests.sim.drill_files import COLLEAGUE, PERSON, write_drill

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def event(seq: int, kind: str, minutes: float, actor: str = "onduty", **data: Any) -> Event:
    return Event(seq=seq, id=f"ev-{seq}", type=kind, ts=at(minutes), stream="s", actor=actor,
                 data=data)  # fmt: skip


@pytest.fixture
def drill(tmp_path: Path) -> LiveSimulation:
    scenario, config = write_drill(tmp_path)
    return LiveSimulation(load_config(config), load_scenario(str(scenario)), speed=60)


def test_response_times_run_from_the_page_or_the_request() -> None:
    events = [
        event(
            1,
            "SignalReceived",
            1,
            fingerprint="f1",
            labels={"alertname": "HighErrorRate", "service": "payments"},
        ),
        event(2, "IncidentOpened", 2, incident_id="inc-1", fingerprint="f1"),
        event(3, "Escalated", 3, incident_id="inc-1"),
        event(4, "ApprovalRequested", 4, approval_id="apr-1"),
        event(5, "Acknowledged", 5, actor=PERSON, incident_id="inc-1"),
        event(6, "ApprovalGranted", 7, actor=COLLEAGUE, approval_id="apr-1"),
        event(7, "ApprovalDenied", 8, actor=PERSON, approval_id="apr-1"),
        event(8, "Acknowledged", 9, incident_id="inc-1"),  # onduty's own: nobody's response
    ]
    fixes = [
        Fix(at(10), PERSON, "deploy.rollback", "payments", "human-drill-001", True, "ok"),
        Fix(at(11), PERSON, "process.restart", "search-1", "human-drill-002", True, "ok"),
        Fix(at(12), PERSON, "process.restart", "payments-1", "human-drill-003", False, "no"),
    ]
    services = {"payments": "payments", "payments-1": "payments", "search-1": "search"}
    people = response_times(events, fixes, [COLLEAGUE], services.get)
    assert [(p.person, p.simulated) for p in people] == [(PERSON, False), (COLLEAGUE, True)]
    dana, sam = people
    assert [(r.kind, r.subject, r.seconds) for r in dana.responses] == [
        ("acknowledge", "inc-1", 120.0),  # from the page at 09:03
        ("deny", "apr-1", 240.0),  # from the request at 09:04
        ("fix", "deploy.rollback payments", 420.0),  # from the page of the incident about it
        ("fix", "process.restart search-1", None),  # nothing asked for it
    ]
    assert [(r.kind, r.seconds) for r in sam.responses] == [("approve", 180.0)]
    summary = dana.to_dict()
    assert summary["counts"] == {"acknowledge": 1, "approve": 0, "deny": 1, "fix": 2}
    assert summary["median_s"] == 240.0 and summary["max_s"] == 420.0


def test_a_fix_names_the_wrong_field_or_is_applied_as_the_persons(
    drill: LiveSimulation,
) -> None:
    refused = drill.fix(PERSON, "teleport", "payments")
    assert isinstance(refused, Refused) and (refused.status, refused.field) == (422, "action")
    for target, words in (("nowhere", "no service 'nowhere'"),
                          ("payments-1", "'payments-1' is an instance")):  # fmt: skip
        refused = drill.fix(PERSON, "deploy.rollback", target)
        assert isinstance(refused, Refused), target
        assert (refused.status, refused.field) == (422, "target") and words in refused.reason
    refused = drill.fix(PERSON, "process.restart", "payments")
    assert isinstance(refused, Refused) and "is a service" in refused.reason
    assert drill.world.actions == []

    made = drill.fix(PERSON, "process.restart", "payments-1")
    assert isinstance(made, Fix) and made.ok and made.person == PERSON
    assert made.command_id.startswith("human-")
    assert [a.target for a in drill.world.actions] == ["payments-1"]
    assert drill.world.fleet.instances["payments-1"].restarts == 1


def test_the_colleague_does_not_repeat_a_fix_a_person_made(drill: LiveSimulation) -> None:
    made = drill.fix(PERSON, "deploy.rollback", "payments")
    assert isinstance(made, Fix) and made.ok
    later = made.at + timedelta(minutes=5)
    with drill._lock:
        drill._colleague_fix("deploy.rollback", "payments", "human-inc-1", later)
        drill._colleague_fix("process.restart", "payments-2", "human-inc-2", later)
    assert drill.world.check("human-inc-1") is None  # not repeated
    assert drill.world.check("human-inc-2") is not None  # another fix: made
    assert [(f.person, f.simulated) for f in drill.fixes] == [(PERSON, False), (COLLEAGUE, True)]


def test_ending_scores_the_drill_once_and_freezes_the_fleet(drill: LiveSimulation) -> None:
    events = [event(1, "IncidentOpened", 1, incident_id="inc-1", fingerprint="f")]
    drill.attach(lambda: events)
    assert drill.status()["status"] == "running" and drill.status()["scorecard"] is None
    drill.fix(PERSON, "process.restart", "checkout-1")
    assert drill.end(PERSON) is True
    assert drill.end("someone else") is False
    status = drill.status()
    assert (status["status"], status["ended_by"]) == ("ended", PERSON)
    card = status["scorecard"]
    assert [p["person"] for p in card["people"]] == [PERSON]
    assert status["fixes"][0]["verdict"] == "harmful"  # checkout-1 was healthy
    refused = drill.fix(PERSON, "process.restart", "checkout-2")
    assert isinstance(refused, Refused) and refused.status == 409
    late = _Locked(drill).apply("process.restart", "checkout-2", {}, "cmd-late", at(30))
    assert not late.ok and "ended" in late.error  # onduty's own actions no longer land either
    assert drill.world.check("cmd-late") is None


def test_the_drill_runs_to_the_scenario_end_and_ends_itself(tmp_path: Path) -> None:
    scenario, config = write_drill(tmp_path, duration="3m")
    drill = LiveSimulation(load_config(config), load_scenario(str(scenario)), speed=3000)
    submitted: list[object] = []
    drill.run(lambda inputs: submitted.append(inputs) or True)
    assert drill.ended and drill.ended_by == "the scenario's end"
    assert drill.scorecard is not None and drill.status()["scorecard"] is not None


def test_the_drill_routes_check_the_roles_in_their_table(
    tmp_path: Path, drill: LiveSimulation
) -> None:
    plain = build_app(Service(load_config(tmp_path / "drill-config.yaml"), str(tmp_path / "p.db")))
    assert not [r for r in plain.routes if "drill" in getattr(r, "path", "")]
    app = build_app(Service(drill.world.config, str(tmp_path / "d.db")), drill=drill)
    seen: dict[tuple[str, str], str | None] = {}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/api/v1/drill"):
            roles = {required_role(d.call) for d in route.dependant.dependencies} - {None}
            for method in route.methods:
                seen[(method, route.path)] = roles.pop()
    assert seen == DRILL_ROLES


def test_the_drill_page_escapes_what_it_shows(tmp_path: Path) -> None:
    scenario, _ = write_drill(tmp_path)
    hostile = "<script>alert(1)</script>"
    text = scenario.read_text().replace("name: short-drill", f'name: "{hostile}"')
    scenario.write_text(text)
    config = load_config(tmp_path / "drill-config.yaml").model_copy(update={"access": {}})
    drill = LiveSimulation(config, load_scenario(str(scenario)), speed=60)
    drill.fix(hostile, "process.restart", "checkout-1")
    drill.end(hostile)
    app = build_app(Service(config, str(tmp_path / "e.db")), drill=drill)
    client = TestClient(app, base_url="http://127.0.0.1")
    page = client.get("/drill")
    assert page.status_code == 200, page.text
    assert hostile not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
