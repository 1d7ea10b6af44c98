"""Similar incidents: an incident finds the closed incidents most like it (its past memory
incidents before its disk ones), with what was done about each and how it ended; the one-line
summary says which action fixed how many; the read model is bounded, survives a restart through
its snapshot, and is served by the API, the incident page (escaped) and `onduty similar`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from onduty.act import ActuatorRegistry
from onduty.api import build_app
from onduty.config import parse_config
from onduty.events import (
    ActionFailed,
    ActionProposed,
    ActionStarted,
    ActionSucceeded,
    Event,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Payload,
    SignalReceived,
    UndoFinished,
    UndoStarted,
    VerificationFailed,
    VerificationPassed,
    make_event,
)
from onduty.log.sqlite import SQLiteEventLog
from onduty.readmodel.models import ReadModels
from onduty.readmodel.similar import (
    ACTIONS_KEPT,
    SIGNALS_FOLDED,
    TERMS_KEPT,
    Outcome,
    PastAction,
    SimilarIncident,
    SimilarIncidents,
    for_prompt,
    summarize,
)
from onduty.runtime import VirtualClock
from onduty.service import Service, activation
from tests import run_cli
from tests.histories import write_history

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@dataclass
class Done:
    """An action of a past incident and how it ended."""

    action: str
    target: str
    runbook: str
    ended: str  # verified, verification failed, failed
    undone: bool = False


@dataclass
class History:
    """Events as the core records them: each signal first, then the decisions it caused (ids
    `<input id>:<n>`), the actions' outcomes as inputs of their own."""

    events: list[Event] = field(default_factory=list)
    at: datetime = T0
    count: int = 0

    def _add(self, body: Payload, stream: str, *, id: str, cause: str | None = None) -> Event:
        self.at += timedelta(minutes=1)
        event = make_event(body, id=id, ts=self.at, stream=stream, causation_id=cause)
        self.events.append(event)
        return event

    def incident(
        self,
        alertname: str,
        service: str,
        instance: str,
        summary: str,
        done: tuple[Done, ...] = (),
        *,
        title: str | None = None,
        close: bool = True,
    ) -> str:
        self.count += 1
        n = self.count
        incident = f"inc-{n:03d}-{alertname.lower()}"
        labels = {"alertname": alertname, "service": service, "instance": instance}
        signal = self._add(
            SignalReceived(source="prometheus", fingerprint=f"fp-{n}", status="firing",
                           labels={**labels, "severity": "page"},
                           annotations={"summary": summary,
                                        "runbook_url": "https://runbooks.example/x"}),
            f"signal:fp-{n}", id=f"in-{n}",
        )  # fmt: skip
        self._add(
            IncidentOpened(incident_id=incident, group_key={"service": service,
                           "alertname": alertname}, service=service,
                           title=title or f"{alertname} on {instance}", fingerprint=f"fp-{n}"),
            incident, id=f"in-{n}:0", cause=signal.id,
        )  # fmt: skip
        for step, what in enumerate(done):
            command = f"cmd-{n}-{step}"
            self._add(
                ActionProposed(command_id=command, incident_id=incident, agent="runbooks",
                               runbook=what.runbook, step=0, action=what.action,
                               target=what.target, timeout_s=30, rationale="runbook matched"),
                incident, id=f"in-{n}:{step + 1}", cause=signal.id,
            )  # fmt: skip
            self._add(
                ActionStarted(command_id=command, incident_id=incident, action=what.action,
                              target=what.target),
                incident, id=f"start-{command}",
            )  # fmt: skip
            if what.ended == "failed":
                self._add(ActionFailed(command_id=command, error="exit 1"), incident,
                          id=f"fail-{command}")  # fmt: skip
            else:
                self._add(ActionSucceeded(command_id=command), incident, id=f"ok-{command}")
                verdict: Payload = (
                    VerificationPassed(command_id=command, incident_id=incident, check="resolved")
                    if what.ended == "verified"
                    else VerificationFailed(command_id=command, incident_id=incident,
                                            reason="the signals did not resolve")
                )  # fmt: skip
                self._add(verdict, incident, id=f"verdict-{command}")
            if what.undone:
                undo = f"undo-{command}"
                started = UndoStarted(
                    command_id=undo, of_command_id=command, action="undo", target=what.target
                )
                self._add(started, incident, id=f"us-{command}")
                finished = UndoFinished(command_id=undo, of_command_id=command, ok=True)
                self._add(finished, incident, id=f"uf-{command}")
        if close:
            self._add(IncidentResolved(incident_id=incident, reason="all signals resolved"),
                      incident, id=f"resolved-{n}")  # fmt: skip
        return incident


def payments_history() -> tuple[History, dict[str, list[str]]]:
    """Past incidents of payments-api: memory ones (fixed by a rollback, twice), disk ones, one
    of another service; then an open memory incident."""
    history = History()
    rollback = Done("deploy.rollback", "payments-api", "roll-back-bad-deploy", "verified")
    restart = Done("process.restart", "payments-api-2", "restart-leaking", "verification failed",
                   undone=True)  # fmt: skip
    cleanup = Done("disk.cleanup", "payments-api-3", "clean-tmp", "verified")
    kinds: dict[str, list[str]] = {"memory": [], "disk": [], "other": []}
    kinds["memory"].append(history.incident(
        "HighMemory", "payments-api", "payments-api-1",
        "payments-api-1 uses 93% of its memory; the heap keeps growing", (rollback,)))  # fmt: skip
    kinds["disk"].append(history.incident(
        "DiskFull", "payments-api", "payments-api-3", "/var on payments-api-3 is 96% full",
        (cleanup,)))  # fmt: skip
    kinds["memory"].append(history.incident(
        "HighMemory", "payments-api", "payments-api-2",
        "payments-api-2 uses 97% of its memory after the deploy", (restart, rollback)))  # fmt: skip
    kinds["other"].append(history.incident(
        "HighLatency", "checkout", "checkout-1", "checkout p99 latency is 2.4 s"))  # fmt: skip
    kinds["disk"].append(history.incident(
        "DiskFull", "payments-api", "payments-api-1", "/var/log on payments-api-1 is 95% full",
        (cleanup,)))  # fmt: skip
    kinds["memory"].append(history.incident(
        "HighMemory", "payments-api", "payments-api-3", "payments-api-3 uses 91% of its memory",
        (Done("process.restart", "payments-api-3", "restart-leaking", "failed"),)))  # fmt: skip
    kinds["open"] = [history.incident(
        "HighMemory", "payments-api", "payments-api-4", "payments-api-4 uses 95% of its memory",
        close=False)]  # fmt: skip
    return history, kinds


# ---------------------------------------------------------------------------- ranking


def test_a_memory_incident_finds_its_past_memory_incidents_before_the_disk_ones() -> None:
    history, kinds = payments_history()
    model = SimilarIncidents().feed_all(history.events)
    (query,) = kinds["open"]

    matches = model.similar_to(query, limit=10)
    found = [match.incident_id for match in matches]
    assert set(found[:3]) == set(kinds["memory"]), found
    assert query not in found  # open incidents are never a match, nor itself
    for disk in kinds["disk"]:
        if disk in found:
            assert found.index(disk) > 2
    scores = [match.score for match in matches]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1.0001 for s in scores)

    # what was done about each, and how it ended
    by_id = {match.incident_id: match for match in matches}
    first, second, third = (by_id[key] for key in kinds["memory"])
    assert first.actions == (
        PastAction("deploy.rollback", "payments-api", "roll-back-bad-deploy", "verified"),
    )
    assert second.actions == (
        PastAction("process.restart", "payments-api-2", "restart-leaking", "verification failed",
                   undone=True),
        PastAction("deploy.rollback", "payments-api", "roll-back-bad-deploy", "verified"),
    )  # fmt: skip
    assert [(a.action, a.outcome, a.undone) for a in third.actions] == [
        ("process.restart", "failed", False)
    ]
    assert second.labels == {
        "alertname": "HighMemory", "instance": "payments-api-2", "service": "payments-api",
        "severity": "page",
    }  # fmt: skip
    assert second.title == "HighMemory on payments-api-2" and second.service == "payments-api"
    assert second.closed_at > second.opened_at and second.resolution == "all signals resolved"
    assert second.summary == (
        "process.restart payments-api-2: verification failed, undone; "
        "deploy.rollback payments-api: verified (resolved: all signals resolved)"
    )
    top = model.similar_to(query, limit=3)
    assert (
        summarize(top) == "3 similar incidents; a deploy.rollback of payments-api fixed 2 of them"
    )
    # a disk incident finds the disk incidents first
    disk = model.similar_to(kinds["disk"][0], limit=1)
    assert [match.incident_id for match in disk] == [kinds["disk"][1]]


def test_the_instance_family_matches_without_the_number() -> None:
    """web-7 has never failed before; web-1 and web-3 have, and a db instance has the same alert
    name: the web ones come first."""
    history = History()
    web = [history.incident("Down", "shop", f"web-{n}", "instance down") for n in (1, 3)]
    db = history.incident("Down", "shop", "db-1", "instance down")
    query = history.incident("Down", "shop", "web-7", "instance down", close=False)
    model = SimilarIncidents().feed_all(history.events)
    found = [match.incident_id for match in model.similar_to(query, limit=3)]
    assert set(found[:2]) == set(web) and found[2] == db


def test_nothing_alike_is_no_match_and_says_so() -> None:
    history = History()
    history.incident("DiskFull", "ledger", "ledger-db-1", "/data is 99% full")
    query = history.incident("CertificateExpiry", "edge", "lb-1", "TLS certificate expires",
                             close=False)  # fmt: skip
    model = SimilarIncidents().feed_all(history.events)
    assert model.similar_to(query) == []
    assert summarize([]) == "No similar incidents."


def test_actions_are_reported_as_they_ended_in_a_real_history(tmp_path: Path) -> None:
    """Over a history the real core recorded, each past action's outcome is the one its log
    says (verified by a VerificationPassed for its command, and so on)."""
    path = tmp_path / "log.db"
    write_history(path, 6_000, seed=11)
    with SQLiteEventLog(str(path)) as log:
        events = list(log.read())
    model = SimilarIncidents().feed_all(events)
    verdicts = {
        event.data["command_id"]: event.type
        for event in events
        if event.type in ("VerificationPassed", "VerificationFailed")
    }
    started = {e.data["command_id"]: e.data for e in events if e.type == "ActionStarted"}
    checked = 0
    for key in model.closed:
        document = model.documents[key]
        for action in document.actions:
            if action.command_id not in started:
                assert action.outcome == "proposed"
                continue
            assert (action.action, action.target) == (
                started[action.command_id]["action"],
                started[action.command_id]["target"],
            )
            verdict = verdicts.get(action.command_id)
            if verdict == "VerificationPassed":
                assert action.outcome == "verified"
            elif verdict == "VerificationFailed":
                assert action.outcome == "verification failed"
            checked += 1
    assert checked > 20
    assert any(a.outcome == "verified" for d in model.documents.values() for a in d.actions)
    # every closed incident with a signal has its labels
    assert sum(bool(model.documents[key].labels) for key in model.closed) > len(model.closed) / 2


# ---------------------------------------------------------------------------- summary wording


def match(incident: str, *actions: PastAction) -> SimilarIncident:
    return SimilarIncident(
        incident_id=incident, title="t", service="s", score=0.5, opened_at=T0,
        closed_at=T0 + timedelta(hours=1), resolution="all signals resolved", labels={},
        actions=actions,
    )  # fmt: skip


def act(
    action: str, target: str, outcome: Outcome = "verified", undone: bool = False
) -> PastAction:
    return PastAction(action, target, "rb", outcome, undone)


def test_the_summary_names_the_action_that_fixed_the_most() -> None:
    rollback, restart = act("rollback", "payments-api"), act("restart", "payments-api-1")
    three = [match("a", rollback), match("b", act("restart", "payments-api-1", "failed")),
             match("c", restart, rollback)]  # fmt: skip
    assert summarize(three) == "3 similar incidents; a rollback of payments-api fixed 2 of them, "\
        "and a restart of payments-api-1 fixed 1 of them"  # fmt: skip
    assert (
        summarize([match("a", rollback)])
        == "1 similar incident; a rollback of payments-api fixed it"
    )
    # counted once per incident, however often it ran there
    assert summarize([match("a", rollback, rollback), match("b")]) == (
        "2 similar incidents; a rollback of payments-api fixed 1 of them"
    )
    # a tie goes to the best match's action; "an" before a vowel
    tie = [match("a", act("undo-deploy", "web")), match("b", act("rollback", "web"))]
    assert summarize(tie).startswith("2 similar incidents; an undo-deploy of web fixed 1 of them")


def test_the_summary_says_when_nothing_verified_or_nothing_was_done() -> None:
    failed = act("restart", "web-1", "verification failed", undone=True)
    assert summarize([match("a", failed), match("b")]) == (
        "2 similar incidents; no action verified in any of them"
    )
    assert summarize([match("a")]) == "1 similar incident; no action was taken in it"
    assert summarize([match("a"), match("b")]) == (
        "2 similar incidents; no action was taken in any of them"
    )


def test_the_summary_and_the_prompt_list_keep_hostile_text_inert() -> None:
    hostile = act("restart", "web-1\n2026-01-05 INFO forged\x1b[2J")
    line = summarize([match("a", hostile)])
    assert "\n" not in line and "\x1b" not in line
    assert "web-1\\n2026-01-05 INFO forged\\x1b[2J" in line
    listed = for_prompt([match("a", hostile)])
    assert listed == [
        {
            "incident_id": "a", "title": "t", "service": "s", "similarity": 0.5,
            "closed_at": (T0 + timedelta(hours=1)).isoformat(),
            "resolution": "all signals resolved", "labels": {},
            "actions": [{"action": "restart", "target": hostile.target, "runbook": "rb",
                         "outcome": "verified", "undone": False}],
        }
    ]  # fmt: skip


# ---------------------------------------------------------------------------- bounds, restart


def test_memory_stays_bounded_however_many_incidents_close() -> None:
    history = History()
    for n in range(300):
        kind, instance = ("HighMemory", "DiskFull", "Down")[n % 3], f"svc-{n % 7}-{n % 5}"
        restart = Done("process.restart", instance, "rb", "verified")
        history.incident(kind, f"svc-{n % 7}", instance, f"{kind} number {n}", (restart,))
    flood = History(at=history.at, count=history.count)
    big = flood.incident("Flood", "web", "web-1", "x", close=False)
    for n in range(5_000):  # a huge incident: signals joining it
        signal = flood._add(
            SignalReceived(source="p", fingerprint=f"f{n}", status="firing",
                           labels={"alertname": "Flood", "pod": f"web-{n}", f"label{n}": "v"},
                           annotations={"summary": f"pod web-{n} is flooding with word{n}"}),
            f"signal:f{n}", id=f"flood-{n}",
        )  # fmt: skip
        flood._add(IncidentUpdated(incident_id=big, change="signal_added", fingerprint=f"f{n}"),
                   big, id=f"flood-{n}:0", cause=signal.id)  # fmt: skip
    model = SimilarIncidents(keep=50).feed_all([*history.events, *flood.events])
    assert len(model.closed) == 50
    assert set(model.documents) == {*model.closed, big}
    assert len(model._commands) == 50  # one action each, of the kept ones only
    # the statistics are those of the kept documents alone
    expected: dict[str, int] = {}
    for key in model.closed:
        for term in model.documents[key].terms:
            expected[term] = expected.get(term, 0) + 1
    assert dict(model._df) == expected
    huge = model.documents[big]
    assert len(huge.terms) <= TERMS_KEPT and len(huge.text) <= 600 and len(huge.labels) <= 32
    assert huge.signals == SIGNALS_FOLDED  # the first ones: a flood says no more than them


def test_a_restart_from_the_snapshot_answers_as_a_full_rebuild(tmp_path: Path) -> None:
    history, kinds = payments_history()
    with SQLiteEventLog(str(tmp_path / "log.db")) as log:
        placed = log.append(history.events)
        cut = len(placed) // 2
        early = ReadModels()
        for event in placed[:cut]:
            early.feed(event)
        early.save(log)
        restarted = ReadModels()
        assert restarted.restore(log) == len(placed) - cut  # only the tail is fed
        full = ReadModels()
        for event in placed:
            full.feed(event)
        assert restarted.similar.state() == full.similar.state()
        (query,) = kinds["open"]
        assert restarted.similar.similar_to(query) == full.similar.similar_to(query)
        assert len(restarted.similar.similar_to(query)) == 3

        # kept fewer after the restart: bounded as configured now
        small = ReadModels()
        small.similar.keep = 2
        small.restore(log)
        assert len(small.similar.closed) == 2


def test_a_snapshot_that_does_not_decode_changes_nothing() -> None:
    history, _ = payments_history()
    model = SimilarIncidents().feed_all(history.events)
    before = model.state()
    broken = orjson.loads(orjson.dumps(before))
    broken["closed"].append("inc-nobody")
    with pytest.raises(ValueError, match="closed incident without its document"):
        model.load(broken)
    assert model.state() == before


# ---------------------------------------------------------------------------- API and page


def served(path: Path, events: list[Event], **similar: object) -> Service:
    """A service on a log of `events` after the policy's activation, prepared (its read models
    and core restored from the log), not started."""
    config = parse_config({"similar": similar} if similar else {})
    policy = make_event(activation(config, "active", "test"), id="policy", ts=T0, stream="policy")
    with SQLiteEventLog(str(path)) as log:
        log.append([policy, *events])
    service = Service(
        config, str(path), actuators=ActuatorRegistry(), clock=VirtualClock(events[-1].ts)
    )
    service.prepare()
    return service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Service, dict[str, list[str]]]]:
    history, kinds = payments_history()
    hostile = history.incident(
        "HighMemory", "payments-api", "payments-api-5", f"payments-api-5 memory {HOSTILE}",
        (Done("deploy.rollback", f"payments-api {HOSTILE}", "roll-back-bad-deploy", "verified"),),
        title=f"HighMemory {HOSTILE}",
    )  # fmt: skip
    kinds["hostile"] = [hostile]
    running = served(tmp_path / "log.db", history.events, limit=4)
    try:
        yield running, kinds
    finally:
        assert running.log is not None
        running.log.close()


def client(service: Service) -> TestClient:
    return TestClient(build_app(service), base_url="http://127.0.0.1")


def test_the_api_lists_similar_incidents(service: tuple[Service, dict[str, list[str]]]) -> None:
    running, kinds = service
    (query,) = kinds["open"]
    api = client(running)
    answer = api.get(f"/api/v1/incidents/{query}/similar")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["incident_id"] == query and body["method"] == "lexical"
    found = [item["incident_id"] for item in body["similar"]]
    assert set(found) == {*kinds["memory"], *kinds["hostile"]}  # as many as configured
    first = body["similar"][0]
    assert set(first) == {"incident_id", "title", "service", "score", "opened_at", "closed_at",
                          "resolution", "labels", "actions", "summary"}  # fmt: skip
    assert first["service"] == "payments-api" and 0 < first["score"] <= 1
    assert all({"action", "target", "runbook", "outcome", "undone"} == set(a)
               for item in body["similar"] for a in item["actions"])  # fmt: skip
    assert body["summary"].startswith(
        "4 similar incidents; a deploy.rollback of payments-api fixed 2 of them, and a "
        f"deploy.rollback of payments-api {HOSTILE} fixed 1 of them"
    )

    assert len(api.get(f"/api/v1/incidents/{query}/similar?limit=1").json()["similar"]) == 1
    assert api.get(f"/api/v1/incidents/{query}/similar?limit=0").status_code == 422
    missing = api.get("/api/v1/incidents/inc-nobody/similar")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no incident inc-nobody", "field": "incident_id"}
    # a closed incident has similar ones too, itself excluded
    closed = api.get(f"/api/v1/incidents/{kinds['disk'][0]}/similar?limit=1").json()
    assert [item["incident_id"] for item in closed["similar"]] == [kinds["disk"][1]]


def test_an_incident_that_left_memory_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    history, kinds = payments_history()
    running = served(tmp_path / "log.db", history.events, keep=2)
    try:
        oldest = kinds["memory"][0]
        assert not running.read.similar.known(oldest)  # only the two last closed are kept
        body = client(running).get(f"/api/v1/incidents/{oldest}/similar").json()
        kept = [item["incident_id"] for item in body["similar"]]
        assert kept and set(kept) <= set(running.read.similar.closed)
        assert kept[0] == kinds["memory"][2]  # the memory one of the two kept
    finally:
        assert running.log is not None
        running.log.close()


def test_the_incident_page_shows_similar_incidents_escaped(
    service: tuple[Service, dict[str, list[str]]],
) -> None:
    running, kinds = service
    (query,) = kinds["open"]
    page = client(running).get(f"/incidents/{query}")
    assert page.status_code == 200
    text = page.text
    assert "Similar incidents" in text and "4 similar incidents; a deploy.rollback of" in text
    (hostile,) = kinds["hostile"]
    assert f'href="/incidents/{hostile}"' in text  # each links to its own page
    assert "HighMemory &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    assert "payments-api &lt;script&gt;" in text  # the action's target too
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "deploy.rollback</code> payments-api: <strong>verified</strong>" in text
    assert "verification failed</strong>, undone" in text
    fragment = client(running).get(f"/fragments/incidents/{query}").text
    assert "Similar incidents" in fragment and "<script>alert" not in fragment
    lonely = client(running).get(f"/incidents/{kinds['other'][0]}").text
    assert "No closed incident is like this one." in lonely


def test_the_command_line_lists_them_from_a_log(tmp_path: Path) -> None:
    history, kinds = payments_history()
    with SQLiteEventLog(str(tmp_path / "log.db")) as log:
        log.append(history.events)
    shutil.copy(tmp_path / "log.db", tmp_path / "copy.db")
    (query,) = kinds["open"]
    result = run_cli.onduty("similar", query, "--store", str(tmp_path / "copy.db"))
    assert result.returncode == 0, result.stderr
    for incident in kinds["memory"]:
        assert incident in result.stdout
    assert "deploy.rollback payments-api: verified" in result.stdout
    assert "3 similar incidents; a deploy.rollback of payments-api fixed 2 of them" in result.stdout
    missing = run_cli.onduty("similar", "inc-nobody", "--store", str(tmp_path / "copy.db"))
    assert missing.returncode == 2 and "there is no incident 'inc-nobody'" in missing.stderr


def test_denied_proposals_never_crowd_out_the_actions_that_ran() -> None:
    """An incident whose proposals were denied again and again, then acted on: the action that
    ran (and verified) is what its match reports."""
    history = History()
    incident = history.incident(
        "HighErrorRate", "checkout", "checkout-1", "5xx above 5%", close=False
    )
    for n in range(ACTIONS_KEPT * 3):
        history._add(
            ActionProposed(command_id=f"denied-{n}", incident_id=incident, agent="runbooks",
                           runbook="roll-back", step=0, action="deploy.rollback",
                           target="checkout", timeout_s=30, rationale="runbook matched"),
            incident, id=f"denied-{n}",
        )  # fmt: skip
    started = ActionStarted(
        command_id="denied-59", incident_id=incident, action="deploy.rollback", target="checkout"
    )
    history._add(started, incident, id="start")
    history._add(ActionSucceeded(command_id="denied-59"), incident, id="ok")
    passed = VerificationPassed(command_id="denied-59", incident_id=incident, check="resolved")
    history._add(passed, incident, id="verified")
    history._add(IncidentResolved(incident_id=incident, reason="all signals resolved"), incident,
                 id="resolved")  # fmt: skip
    query = history.incident("HighErrorRate", "checkout", "checkout-2", "5xx above 5%", close=False)
    model = SimilarIncidents().feed_all(history.events)
    (found,) = model.similar_to(query)
    assert found.actions == (PastAction("deploy.rollback", "checkout", "roll-back", "verified"),)
    assert len(model.documents[incident].actions) == ACTIONS_KEPT
    assert summarize([found]) == "1 similar incident; a deploy.rollback of checkout fixed it"
