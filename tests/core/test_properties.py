"""Invariants of the core under random histories (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onduty.commands import StartAction
from onduty.events import (
    ActionFailed,
    ActionOutcomeUnknown,
    ActionStarted,
    ActionSucceeded,
    ApprovalDenied,
    ApprovalGranted,
    AutonomyChanged,
    Tick,
)
from onduty.manager import Manager
from onduty.replay import replay
from onduty.state import IN_FLIGHT
from tests.core.helpers import Driver

INSTANCES = ["web-1", "web-2", "web-3", "db-1", "batch-1", "ghost-1"]
ALERTS = ["InstanceDown", "HighLatency"]

operation = st.one_of(
    st.tuples(
        st.just("signal"),
        st.sampled_from(INSTANCES),
        st.sampled_from(["firing", "firing", "resolved", "acknowledged"]),
        st.sampled_from(ALERTS),
        st.integers(0, 400),
    ),
    st.tuples(st.just("tick"), st.integers(1, 900)),
    st.tuples(
        st.just("outcome"), st.sampled_from(["started", "ok", "fail", "unknown"]), st.integers(0, 5)
    ),
    st.tuples(st.just("answer"), st.sampled_from(["grant", "deny"]), st.integers(0, 3)),
    st.tuples(
        st.just("autonomy"),
        st.sampled_from(["web", "db"]),
        st.sampled_from(["observe", "suggest", "approve", "act"]),
    ),
)


def run(operations: list[tuple[Any, ...]]) -> Driver:
    """Play operations the way the world would answer the core's commands."""
    driver = Driver()
    starts: list[StartAction] = []
    approvals: list[str] = []
    for op in operations:
        if op[0] == "signal":
            _, instance, status, alert, after = op
            decision = driver.signal(instance, status, alertname=alert, after=after)
        elif op[0] == "tick":
            decision = driver.feed(Tick(), after=op[1])
        elif op[0] == "outcome" and starts:
            command = starts[op[2] % len(starts)]
            kind = op[1]
            if kind == "started":
                body: Any = ActionStarted(
                    command_id=command.command_id,
                    incident_id=command.incident_id,
                    action=command.action,
                    target=command.target,
                )
            elif kind == "ok":
                body = ActionSucceeded(command_id=command.command_id)
            elif kind == "fail":
                body = ActionFailed(command_id=command.command_id, error="boom")
            else:
                body = ActionOutcomeUnknown(command_id=command.command_id, reason="lost")
            decision = driver.feed(body, after=1)
        elif op[0] == "answer" and approvals:
            approval_id = approvals[op[2] % len(approvals)]
            answer: Any = (
                ApprovalGranted(approval_id=approval_id)
                if op[1] == "grant"
                else ApprovalDenied(approval_id=approval_id)
            )
            decision = driver.feed(answer, after=5, actor="alice")
        elif op[0] == "autonomy":
            decision = driver.feed(AutonomyChanged(service=op[1], level=op[2]), actor="admin")
        else:
            continue
        starts.extend(c for c in decision.commands if isinstance(c, StartAction))
        approvals.extend(
            e.data["approval_id"] for e in decision.events if e.type == "ApprovalRequested"
        )
    return driver


histories = st.lists(operation, min_size=1, max_size=60)
quick = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@quick
@given(histories)
def test_replay_reproduces_the_live_run(operations: list[tuple[Any, ...]]) -> None:
    driver = run(operations)
    report = replay(driver.log)
    assert report.differences == []
    assert report.manager is not None
    assert report.manager.snapshot() == driver.manager.snapshot()


@quick
@given(histories, st.integers(0, 10_000))
def test_folding_from_any_snapshot_equals_the_live_state(
    operations: list[tuple[Any, ...]], cut: int
) -> None:
    driver = run(operations)
    cut %= len(driver.log) + 1
    first = Manager()
    for event in driver.log[:cut]:
        first.apply(event)
    resumed = Manager.from_snapshot(first.snapshot())
    for event in driver.log[cut:]:
        resumed.apply(event)
    assert resumed.snapshot() == driver.manager.snapshot()
    assert resumed.pending_timers() == driver.manager.pending_timers()


@quick
@given(histories)
def test_every_started_action_was_allowed_first(operations: list[tuple[Any, ...]]) -> None:
    driver = run(operations)
    verdicts: dict[str, str] = {}
    for event in driver.log:
        if event.type == "PolicyEvaluated":
            verdicts[event.data["command_id"]] = event.data["verdict"]
        if event.type == "ActionStarted":
            assert verdicts.get(event.data["command_id"]) == "allow"


@quick
@given(histories)
def test_guardrail_limits_hold(operations: list[tuple[Any, ...]]) -> None:
    """Never two actions in flight on one service; never an action on an unknown target."""
    driver = run(operations)
    replayed = Manager()
    for event in driver.log:
        replayed.apply(event)
        in_flight: dict[str, int] = {}
        for action in replayed.state.actions.values():
            if action.status in IN_FLIGHT:
                in_flight[action.service or ""] = in_flight.get(action.service or "", 0) + 1
                assert not action.target.startswith("ghost")
        assert all(count <= 1 for count in in_flight.values()), in_flight
