"""How events read in an incident's timeline: from their typed payloads, one renderer per type,
and as stored when there is no renderer or the payload does not validate."""

from __future__ import annotations

from datetime import UTC, datetime

from onduty.api.console.timeline import RENDERERS, entry
from onduty.events import (
    EVENT_TYPES,
    AdviceChoice,
    AdviceDiscarded,
    AdviceFailed,
    AdviceReceived,
    AdviceRequested,
    ApprovalRequested,
    Event,
    SignalReceived,
    make_event,
)

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


def test_the_advisors_steps_read_as_what_was_asked_answered_proposed_or_discarded() -> None:
    asked = AdviceRequested(
        request_id="adv-1",
        incident_id="inc-1",
        title="MemoryPressure on web-1",
        choices=[AdviceChoice(name="restart", action="process.restart", target="web-1")],
        reason="no runbook matches MemoryPressure",
    )
    answered = AdviceReceived(
        request_id="adv-1",
        incident_id="inc-1",
        model="small-model",
        prompt_hash="sha256:ab",
        content='{"action": "restart", "target": "web-1", "rationale": "<b>stuck</b>"}',
        latency_ms=2345.0,
        similar=["inc-0"],
    )
    failed = AdviceFailed(
        request_id="adv-2", incident_id="inc-1", problem="timeout", reason="no answer within 30s"
    )
    discarded = AdviceDiscarded(
        request_id="adv-3",
        incident_id="inc-1",
        model="small-model",
        prompt_hash="sha256:cd",
        reason="'drop-database' is not one of the allowed choices (restart)",
    )
    lines = [
        entry(make_event(body, id=f"e{n}", ts=NOW, stream="inc-1"))
        for n, body in enumerate((asked, answered, failed, discarded))
    ]
    assert [(line.kind, line.title, line.tone) for line in lines] == [
        ("advice", "Asked the advisor", "info"),
        ("advice", "The advisor (small-model) answered", "info"),
        ("advice", "No advice (timeout)", "warn"),
        ("advice", "The advisor's answer was discarded (small-model)", "warn"),
    ]
    assert ("choices", "restart (process.restart on web-1)") in lines[0].facts
    assert ("after", "2.3s") in lines[1].facts and lines[1].text == answered.content
    assert ("reason", "no answer within 30s") in lines[2].facts
    assert ("reason", discarded.reason) in lines[3].facts
