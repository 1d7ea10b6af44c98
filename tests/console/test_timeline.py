"""How events read in an incident's timeline: from their typed payloads, one renderer per type,
and as stored when there is no renderer or the payload does not validate."""

from __future__ import annotations

from datetime import UTC, datetime

from onduty.api.console.timeline import RENDERERS, entry
from onduty.events import EVENT_TYPES, ApprovalRequested, Event, SignalReceived, make_event

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_typed_event_reads_as_its_line_with_the_facts_that_say_something() -> None:
    requested = ApprovalRequested(
        approval_id="apr-1",
        command_id="cmd-1",
        incident_id="inc-1",
        expires_at=datetime(2026, 3, 1, 12, 10, tzinfo=UTC),
        notify=["oncall", "lead"],
        required=2,
        round=1,
    )
    line = entry(make_event(requested, id="e1", ts=NOW, stream="inc-1"))
    assert (line.kind, line.title, line.tone) == (
        "approval",
        "Approval requested (next tier)",
        "warn",
    )
    assert line.facts == [
        ("needs", "2 approver(s)"),
        ("asked", "oncall, lead"),
        ("expires", "2026-03-01 12:10:00 UTC"),
    ]  # no empty summary
    assert all(model.__name__ in EVENT_TYPES for model in RENDERERS)


def test_events_without_a_renderer_or_a_valid_payload_are_shown_as_stored() -> None:
    signal = SignalReceived(source="am", fingerprint="fp-1", status="firing", labels={"a": "b"})
    line = entry(make_event(signal, id="e2", ts=NOW, stream="signal:fp-1", actor="monitoring"))
    assert (line.kind, line.title, line.by) == ("other", "SignalReceived", "monitoring")
    assert ("labels", '{"a":"b"}') in line.facts
    broken = Event(id="e3", type="ApprovalRequested", ts=NOW, stream="inc-1", data={"x": 1})
    assert (entry(broken).kind, entry(broken).facts) == ("other", [("x", "1")])
