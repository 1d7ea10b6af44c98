"""The answer desk and the autonomy desk over their read models, on a virtual clock: what every
door (API, console, CLI, simulated people) is allowed to record."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from onduty.approvals import AnswerDesk, AutonomyDesk, AutonomyOutcome, Refusal
from onduty.events import ApprovalGranted, ApprovalRequested, IncidentOpened, make_event
from onduty.readmodel import AutonomyRaises, IncidentProjection
from onduty.runtime import Input

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class Log:
    """Inputs placed as events, fed to the read models."""

    def __init__(self, *models: IncidentProjection | AutonomyRaises) -> None:
        self.models = models
        self.now = T0
        self._ids = itertools.count(1)

    def record(self, inputs: list[Input]) -> None:
        for item in inputs:
            event = make_event(
                item.body, id=f"ev-{next(self._ids)}", ts=self.now, stream="t", actor=item.actor
            )
            for model in self.models:
                model.feed(event)


def autonomy_desk() -> tuple[AutonomyDesk, Log]:
    raises = AutonomyRaises()
    log = Log(raises)
    ids = itertools.count(1)
    return AutonomyDesk(raises, lambda: log.now, lambda: f"raise-{next(ids)}"), log


def change(
    desk: AutonomyDesk, log: Log, level: str, previous: str, person: str, required: int = 2
) -> AutonomyOutcome | Refusal:
    outcome = desk.change(
        "search", level, previous, person, required=required, timeout=timedelta(minutes=10)
    )
    if isinstance(outcome, AutonomyOutcome):
        log.record(outcome.inputs)
    return outcome


def test_a_raise_needs_n_different_admins_in_time() -> None:
    desk, log = autonomy_desk()
    asked = change(desk, log, "act", "suggest", "root", required=3)
    assert isinstance(asked, AutonomyOutcome) and not asked.changed
    assert asked.reply["status"].startswith("1 of 3: asked by root, waiting for 2 more admins")
    same = change(desk, log, "act", "suggest", "ROOT", required=3)  # one person, any case
    assert isinstance(same, Refusal) and same.status == 409
    second = change(desk, log, "act", "suggest", "ruth", required=3)
    assert isinstance(second, AutonomyOutcome) and not second.changed
    assert second.reply["status"] == (
        "2 of 3: asked by root, confirmed by ruth, waiting for another admin"
    )
    log.now += timedelta(minutes=10)  # nobody else in time: it expires, nothing changed
    assert desk.pending() == []
    late = desk.confirm(str(asked.reply["request_id"]), "rhea")
    assert isinstance(late, Refusal) and late.status == 404 and "expired" in late.reason
    again = change(desk, log, "act", "suggest", "rhea", required=3)
    assert isinstance(again, AutonomyOutcome) and again.reply["confirmed_by"] == ["rhea"]


def test_lowering_and_single_approver_policies_change_at_once() -> None:
    desk, log = autonomy_desk()
    lowered = change(desk, log, "observe", "act", "root")
    assert isinstance(lowered, AutonomyOutcome) and lowered.changed
    assert [type(i.body).__name__ for i in lowered.inputs] == ["AutonomyChanged"]
    alone = change(desk, log, "act", "observe", "root", required=1)
    assert isinstance(alone, AutonomyOutcome) and alone.changed


def test_the_answer_desk_takes_one_approval_per_person_whatever_the_case() -> None:
    projection = IncidentProjection()
    log = Log(projection)
    opened = IncidentOpened(
        incident_id="inc-1", group_key={}, title="db-1 down", service="db", fingerprint="f"
    )
    requested = ApprovalRequested(
        approval_id="apr-1",
        command_id="cmd-1",
        incident_id="inc-1",
        expires_at=T0 + timedelta(minutes=10),
        required=2,
    )
    log.record([Input(opened), Input(requested)])
    desk = AnswerDesk(projection, lambda: ["approver"])
    first = desk.answer("apr-1", "alice", {"viewer", "approver"}, "approve")
    assert not isinstance(first, Refusal)
    assert isinstance(first.body, ApprovalGranted) and first.body.role == "approver"
    log.record([first.input()])
    again = desk.answer("apr-1", "Alice", {"approver"}, "approve")
    assert isinstance(again, Refusal) and again.status == 409
    assert "already approved" in again.reason
    unknown = desk.answer("apr-2", "bob", {"approver"}, "approve")
    assert isinstance(unknown, Refusal) and unknown.status == 404
    # a person without an allowed role answers in `approver`: the core records it as refused
    other = desk.answer("apr-1", "olga", {"viewer", "operator"}, "deny")
    assert not isinstance(other, Refusal) and other.body.role == "approver"
