"""The two-person rule in the core and in the read model that mirrors it: a request stays pending
until the core decides it; identities are compared without regard to case."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from onduty.commands import StartAction
from onduty.events import ApprovalDenied, ApprovalGranted, Tick
from onduty.readmodel import IncidentProjection
from tests.core.helpers import Driver, types
from tests.core.test_manager import two_person_config


def pending_request(driver: Driver) -> str:
    return str(driver.signal("db-1").events[-1].data["approval_id"])


def grant(driver: Driver, approval_id: str, actor: str, role: str = "approver") -> list[str]:
    decision = driver.feed(ApprovalGranted(approval_id=approval_id, role=role), actor=actor)
    return [e.data.get("change", e.type) for e in decision.events]


def test_alice_and_Alice_are_one_approver_in_the_core() -> None:
    driver = Driver(two_person_config())  # type: ignore[arg-type]
    approval_id = pending_request(driver)
    assert grant(driver, approval_id, "alice") == ["approval_partial"]
    assert grant(driver, approval_id, "Alice") == ["approval_repeated"]
    assert grant(driver, approval_id, "ALICE") == ["approval_repeated"]
    assert driver.manager.state.approvals[approval_id].approvers == ["alice"]
    second = driver.feed(ApprovalGranted(approval_id=approval_id, role="approver"), actor="bob")
    assert types(second) == ["PolicyEvaluated"]
    assert second.events[0].data["reason"] == "autonomy: approved by alice and bob"
    assert any(isinstance(c, StartAction) for c in second.commands)


def test_the_read_model_keeps_a_partly_approved_request_pending() -> None:
    driver = Driver(two_person_config())  # type: ignore[arg-type]
    approval_id = pending_request(driver)
    read = IncidentProjection()

    def seen() -> IncidentProjection:
        read.__init__()  # type: ignore[misc]
        return read.feed_all(driver.log)

    grant(driver, approval_id, "alice")
    item = seen().approvals[approval_id]
    assert item.approved_by == ["alice"]
    assert item.status == "1 of 2: approved by alice, waiting for another approver"
    assert approval_id in read.incidents[item.incident_id].awaiting_approval

    # someone whose role may not approve: recorded, refused by the core, not counted here either
    assert grant(driver, approval_id, "eve", role="viewer") == ["approval_refused"]
    driver.feed(ApprovalDenied(approval_id=approval_id, role="viewer"), actor="eve")
    item = seen().approvals[approval_id]
    assert item.approved_by == ["alice"]
    assert "eve (role viewer) may not answer approvals" in item.refusals["eve"]

    grant(driver, approval_id, "Alice")  # the same person again
    assert seen().approvals[approval_id].approved_by == ["alice"]

    grant(driver, approval_id, "bob")
    assert approval_id not in seen().approvals
    decided = read.answered[approval_id]
    assert (decided.outcome, decided.status) == ("granted", "approved by alice and bob")
    assert read.incidents[decided.incident_id].awaiting_approval == []


def test_a_request_asked_again_of_the_next_tier_keeps_its_approvals() -> None:
    driver = Driver(two_person_config(on_timeout="escalate"))  # type: ignore[arg-type]
    approval_id = pending_request(driver)
    grant(driver, approval_id, "alice")
    driver.feed(Tick(), after=600)  # not answered in full: asked of the next tier
    read = IncidentProjection().feed_all(driver.log)
    item = read.approvals[approval_id]
    assert (item.round, item.approved_by) == (1, ["alice"])
    assert read.incidents[item.incident_id].awaiting_approval == [approval_id]
    driver.feed(Tick(), after=600)
    read = IncidentProjection().feed_all(driver.log)
    assert approval_id not in read.approvals
    assert read.answered[approval_id].outcome == "expired"


ANSWERS = st.lists(
    st.tuples(
        st.sampled_from(["grant", "deny", "tick", "grant", "resolve"]),
        st.sampled_from(["alice", "Alice", "bob", "carol", "eve"]),
        st.sampled_from(["approver", "viewer"]),
    ),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(answers=ANSWERS, required=st.integers(1, 3))
def test_the_read_model_mirrors_the_cores_decision_after_every_answer(
    answers: list[tuple[str, str, str]], required: int
) -> None:
    driver = Driver(two_person_config(required=required))  # type: ignore[arg-type]
    approval_id = pending_request(driver)
    read = IncidentProjection().feed_all(driver.log)
    fed = len(driver.log)
    for kind, actor, role in answers:
        if kind == "tick":
            driver.feed(Tick(), after=240)
        elif kind == "resolve":  # the alert clears: the request is moot
            driver.signal("db-1", status="resolved")
        elif kind == "grant":
            driver.feed(ApprovalGranted(approval_id=approval_id, role=role), actor=actor)
        else:
            driver.feed(ApprovalDenied(approval_id=approval_id, role=role), actor=actor)
        read.feed_all(driver.log[fed:])
        fed = len(driver.log)
        core = driver.manager.state.approvals
        assert set(read.approvals) == set(core)
        for key, approval in core.items():
            assert read.approvals[key].approved_by == approval.approvers
