"""The core's behaviour, driven by plain event lists and a virtual clock."""

from __future__ import annotations

from onduty.commands import CheckOutcome, Notify, ScheduleTimer, StartAction, StartUndo
from onduty.events import (
    ActionFailed,
    ActionOutcomeUnknown,
    ActionSucceeded,
    ApprovalDenied,
    ApprovalGranted,
    AutonomyChanged,
    Tick,
)
from onduty.manager import Manager
from tests.core.helpers import Driver, config, types


def only_start(decision_commands: tuple[object, ...]) -> StartAction:
    starts = [c for c in decision_commands if isinstance(c, StartAction)]
    assert len(starts) == 1, decision_commands
    return starts[0]


def test_a_firing_alert_opens_an_incident_and_acts_within_guardrails() -> None:
    driver = Driver()
    decision = driver.signal("web-1")
    assert types(decision) == [
        "IncidentOpened",
        "IncidentUpdated",
        "ActionProposed",
        "PolicyEvaluated",
    ]
    command = only_start(decision.commands)
    assert (command.action, command.target) == ("process.restart", "web-1")
    verdict = decision.events[-1].data
    assert verdict["verdict"] == "allow"
    assert verdict["policy_version"] == config().version


def test_the_same_alert_delivered_twice_counts_once() -> None:
    driver = Driver()
    driver.signal("web-1")
    again = driver.signal("web-1", after=1)
    assert again.events == () and again.commands == ()


def test_verified_fix_resolves_the_incident() -> None:
    driver = Driver()
    command = only_start(driver.signal("web-1").commands)
    driver.start(command)
    succeeded = driver.feed(ActionSucceeded(command_id=command.command_id), after=5)
    assert any(isinstance(c, ScheduleTimer) for c in succeeded.commands)
    resolved = driver.signal("web-1", "resolved", after=30)
    assert types(resolved) == ["IncidentUpdated", "VerificationPassed", "IncidentResolved"]
    assert driver.manager.state.incidents == {}
    assert driver.manager.state.actions == {}


def test_a_fix_that_does_not_verify_is_undone_and_escalated() -> None:
    driver = Driver()
    command = only_start(driver.signal("web-1").commands)
    driver.start(command)
    driver.feed(ActionSucceeded(command_id=command.command_id), after=5)
    early = driver.feed(Tick(), after=60)
    assert early.events == ()
    late = driver.feed(Tick(), after=61)
    assert types(late) == ["VerificationFailed", "Escalated"]
    undo = [c for c in late.commands if isinstance(c, StartUndo)]
    assert [(u.action, u.target, u.of_command_id) for u in undo] == [
        ("traffic.drain", "web-1", command.command_id)
    ]
    assert any(isinstance(c, Notify) and c.kind == "escalation" for c in late.commands)


def test_a_failed_action_is_undone_and_escalated() -> None:
    driver = Driver()
    command = only_start(driver.signal("web-1").commands)
    driver.start(command)
    failed = driver.feed(ActionFailed(command_id=command.command_id, error="exit 1"))
    assert types(failed) == ["Escalated"]
    assert "action failed: exit 1" in failed.events[0].data["reason"]
    assert any(isinstance(c, StartUndo) for c in failed.commands)


def test_an_unknown_outcome_is_escalated_never_rerun() -> None:
    driver = Driver()
    command = only_start(driver.signal("web-1").commands)
    driver.start(command)
    unknown = driver.feed(ActionOutcomeUnknown(command_id=command.command_id, reason="crash"))
    assert types(unknown) == ["Escalated"]
    assert not any(isinstance(c, StartAction) for c in unknown.commands)


def test_no_matching_runbook_escalates() -> None:
    driver = Driver()
    decision = driver.signal("web-1", alertname="HighLatency")
    assert types(decision)[-1] == "Escalated"
    assert "no runbook matches HighLatency" in decision.events[-1].data["reason"]


def test_rate_limit_allows_the_nth_and_denies_the_next() -> None:
    cfg = config(correlation={"group_by": ["instance"], "flap_threshold": 50})
    driver = Driver(cfg)
    for _ in range(2):
        command = only_start(driver.signal("web-1", after=60).commands)
        driver.start(command)
        driver.feed(ActionSucceeded(command_id=command.command_id))
        driver.signal("web-1", "resolved", after=10)
    third = driver.signal("web-1", after=60)
    verdict = next(e for e in third.events if e.type == "PolicyEvaluated").data
    assert verdict["verdict"] == "deny"
    assert verdict["reason"] == (
        "restart-budget: 2 process.restart on web-1 in the last hour, limit 2"
    )
    assert types(third)[-1] == "Escalated"
    assert not any(isinstance(c, StartAction) for c in third.commands)
    # once the window has passed, the budget is back
    later = driver.signal("web-1", "resolved", after=10)
    assert later.events
    again = driver.signal("web-1", after=3600)
    assert any(isinstance(c, StartAction) for c in again.commands)


def test_concurrency_limit_per_service() -> None:
    driver = Driver()
    only_start(driver.signal("web-1").commands)
    second = driver.signal("web-2", after=1)
    verdict = next(e for e in second.events if e.type == "PolicyEvaluated").data
    assert verdict["verdict"] == "deny"
    assert verdict["reason"].startswith("one-at-a-time: 1 action(s) in flight on web")


def test_unknown_or_empty_target_means_do_nothing() -> None:
    driver = Driver()
    unknown = driver.signal("web-9")
    verdict = next(e for e in unknown.events if e.type == "PolicyEvaluated").data
    assert verdict["verdict"] == "deny"
    assert "not in the inventory" in verdict["reason"]
    cfg = config(
        runbooks=[
            {
                "name": "restart",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.pod }}"}],
            }
        ]
    )
    empty = Driver(cfg).signal("web-1")
    verdict = next(e for e in empty.events if e.type == "PolicyEvaluated").data
    assert verdict["verdict"] == "deny"
    assert "no target" in verdict["reason"]
    assert not any(isinstance(c, StartAction) for c in empty.commands)


def test_approval_flow_grant() -> None:
    driver = Driver()
    decision = driver.signal("db-1")
    assert types(decision)[-1] == "ApprovalRequested"
    assert not any(isinstance(c, StartAction) for c in decision.commands)
    approval_id = decision.events[-1].data["approval_id"]
    granted = driver.feed(ApprovalGranted(approval_id=approval_id), after=90, actor="alice")
    assert types(granted) == ["PolicyEvaluated"]
    assert granted.events[0].data["reason"] == "autonomy: approved by alice"
    only_start(granted.commands)
    # a second answer to the same approval does nothing
    assert driver.feed(ApprovalGranted(approval_id=approval_id), actor="bob").events == ()


def test_approval_denied_escalates() -> None:
    driver = Driver()
    approval_id = driver.signal("db-1").events[-1].data["approval_id"]
    denied = driver.feed(ApprovalDenied(approval_id=approval_id, comment="not now"), actor="bob")
    assert types(denied) == ["Escalated"]
    assert denied.events[0].data["reason"] == "approval denied by bob: not now"


def test_unanswered_approval_expires_into_deny() -> None:
    driver = Driver()
    approval_id = driver.signal("db-1").events[-1].data["approval_id"]
    assert driver.feed(Tick(), after=599).events == ()
    expired = driver.feed(Tick(), after=1)
    assert types(expired) == ["ApprovalExpired", "Escalated"]
    late = driver.feed(ApprovalGranted(approval_id=approval_id), actor="alice")
    assert late.events == () and late.commands == ()


def test_autonomy_levels() -> None:
    driver = Driver()
    suggest = driver.signal("batch-1")
    verdict = next(e for e in suggest.events if e.type == "PolicyEvaluated").data
    assert verdict["verdict"] == "deny" and "suggest" in verdict["reason"]
    driver.feed(AutonomyChanged(service="web", level="observe", previous="act"), actor="admin")
    observed = driver.signal("web-2")
    verdict = next(e for e in observed.events if e.type == "PolicyEvaluated").data
    assert verdict["verdict"] == "deny" and "observe" in verdict["reason"]


def test_group_wait_delays_planning_and_groups_signals() -> None:
    cfg = config(correlation={"group_by": ["service", "alertname"], "group_wait": "30s"})
    driver = Driver(cfg)
    first = driver.signal("web-1")
    assert types(first) == ["IncidentOpened"]
    assert [c for c in first.commands if isinstance(c, ScheduleTimer)]
    second = driver.signal("web-2", after=10)
    assert types(second) == ["IncidentUpdated", "IncidentUpdated"]
    assert second.events[0].data["change"] == "signal_added"
    # Two instances now: the group is titled by what they share.
    assert second.events[1].data["change"] == "retitled"
    assert second.events[1].data["detail"] == "InstanceDown on web"
    ready = driver.feed(Tick(), after=20)
    assert "ActionProposed" in types(ready)


def test_flapping_signal_pauses_actions() -> None:
    cfg = config(
        correlation={"group_by": ["service", "alertname", "instance"], "flap_threshold": 4}
    )
    driver = Driver(cfg)
    command = only_start(driver.signal("web-1").commands)
    driver.start(command)
    driver.feed(ActionSucceeded(command_id=command.command_id))
    driver.signal("web-1", "resolved", after=30)
    driver.signal("web-1", after=30)
    driver.signal("web-1", "resolved", after=30)
    flapped = driver.signal("web-1", after=30)  # the fifth state change within the window
    assert types(flapped) == ["IncidentUpdated", "IncidentUpdated", "Escalated"]
    assert [e.data.get("change") for e in flapped.events[:2]] == ["signal_refired", "flapping"]
    assert flapped.events[2].data["reason"].startswith("flapping: 5 state changes within 15m")
    assert not any(isinstance(c, StartAction) for c in flapped.commands)


def test_recovery_lists_actions_in_doubt() -> None:
    driver = Driver()
    allowed = only_start(driver.signal("web-1").commands)
    folded = Manager()
    for event in driver.log:
        folded.apply(event)
    assert folded.in_doubt() == [allowed]
    driver.start(allowed)
    folded.apply(driver.log[-1])
    assert folded.in_doubt() == [CheckOutcome(allowed)]


def test_condition_guardrail_with_an_effect() -> None:
    cfg = config(
        policy={
            "guardrails": [
                {
                    "name": "high-tier-needs-human",
                    "when": 'service.tier == "high" && action.name == "process.restart"',
                    "effect": "require_approval",
                },
                {"name": "never-web-3", "when": 'target.name == "web-3"', "effect": "deny"},
            ]
        },
        services=[
            {"name": "web", "tier": "high", "autonomy": "act", "instances": ["web-1", "web-3"]}
        ],
    )
    driver = Driver(cfg)
    first = driver.signal("web-1")
    verdict = next(e for e in first.events if e.type == "PolicyEvaluated").data
    assert verdict["verdict"] == "require_approval"
    assert [rule["rule"] for rule in verdict["rules"]] == ["autonomy", "high-tier-needs-human"]
    third = driver.signal("web-3")
    verdict = next(e for e in third.events if e.type == "PolicyEvaluated").data
    assert verdict["verdict"] == "deny"
    assert verdict["reason"] == 'never-web-3: `target.name == "web-3"` holds'


def test_acknowledged_at_the_source_marks_the_incident_without_resolving_it() -> None:
    driver = Driver()
    opened = driver.signal("web-9", alertname="HighLatency")  # escalated: no runbook
    incident_id = opened.events[0].data["incident_id"]
    acked = driver.signal("web-9", "acknowledged", alertname="HighLatency", after=30)
    assert types(acked) == ["IncidentUpdated"]
    assert acked.events[0].data["change"] == "acknowledged"
    assert driver.manager.state.incidents[incident_id].acknowledged
    assert driver.signal("web-9", "acknowledged", alertname="HighLatency").events == ()
    resolved = driver.signal("web-9", "resolved", alertname="HighLatency", after=30)
    assert types(resolved)[-1] == "IncidentResolved"


def test_a_redelivered_notification_counts_once() -> None:
    from onduty.events import SignalReceived

    driver = Driver()
    labels = {"alertname": "InstanceDown", "instance": "web-1", "service": "web"}

    def delivery(status: str, delivery_id: str) -> SignalReceived:
        return SignalReceived(
            source="ce", fingerprint="fp-1", status=status, labels=labels, delivery_id=delivery_id
        )

    assert driver.feed(delivery("firing", "src/1")).events
    resolved = driver.feed(delivery("resolved", "src/2"), after=10)
    assert types(resolved)[0] == "IncidentUpdated"
    # the first notification again, after the resolution: recognised, not a new firing
    again = driver.feed(delivery("firing", "src/1"), after=10)
    assert again.events == () and again.commands == ()


def two_person_config(**approvals: object) -> object:
    return config(
        policy={"approvals": {"timeout": "10m", "required": 2, "roles": ["approver"], **approvals}},
        escalation={"default": [{"notify": ["sre-primary"]}, {"notify": ["sre-lead"]}]},
    )


def test_two_person_rule_needs_two_distinct_approvers() -> None:
    driver = Driver(two_person_config())  # type: ignore[arg-type]
    approval_id = driver.signal("db-1").events[-1].data["approval_id"]
    first = driver.feed(
        ApprovalGranted(approval_id=approval_id, role="approver"), after=30, actor="alice"
    )
    assert [e.data["change"] for e in first.events] == ["approval_partial"]
    assert first.events[0].data["detail"] == "1 of 2 approvals: alice"
    assert not any(isinstance(c, StartAction) for c in first.commands)
    repeat = driver.feed(ApprovalGranted(approval_id=approval_id, role="approver"), actor="alice")
    assert [e.data["change"] for e in repeat.events] == ["approval_repeated"]
    second = driver.feed(
        ApprovalGranted(approval_id=approval_id, role="approver"), after=30, actor="bob"
    )
    assert types(second) == ["PolicyEvaluated"]
    assert second.events[0].data["reason"] == "autonomy: approved by alice and bob"
    only_start(second.commands)


def test_an_approver_without_the_role_is_recorded_not_obeyed() -> None:
    driver = Driver(two_person_config(required=1))  # type: ignore[arg-type]
    approval_id = driver.signal("db-1").events[-1].data["approval_id"]
    refused = driver.feed(ApprovalGranted(approval_id=approval_id, role="viewer"), actor="eve")
    assert [e.data["change"] for e in refused.events] == ["approval_refused"]
    assert "eve (role viewer) may not answer approvals" in refused.events[0].data["detail"]
    denied = driver.feed(ApprovalDenied(approval_id=approval_id, role="viewer"), actor="eve")
    assert [e.data["change"] for e in denied.events] == ["approval_refused"]
    granted = driver.feed(ApprovalGranted(approval_id=approval_id, role="approver"), actor="amy")
    only_start(granted.commands)


def test_an_unanswered_approval_can_go_to_the_next_tier_before_it_is_denied() -> None:
    driver = Driver(two_person_config(required=1, on_timeout="escalate"))  # type: ignore[arg-type]
    approval_id = driver.signal("db-1").events[-1].data["approval_id"]
    moved = driver.feed(Tick(), after=600)
    assert types(moved) == ["Escalated", "ApprovalRequested"]
    assert moved.events[0].data["tier"] == 1
    assert moved.events[0].data["notify"] == ["sre-lead"]
    assert moved.events[1].data["approval_id"] == approval_id
    assert any(isinstance(c, Notify) and c.channels == ("sre-lead",) for c in moved.commands)
    expired = driver.feed(Tick(), after=600)
    assert types(expired) == ["ApprovalExpired", "Escalated"]


def test_arbitration_records_the_losers_and_honours_exclusions() -> None:
    restart = {
        "name": "restart",
        "when": 'signal.labels.alertname == "InstanceDown"',
        "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
    }
    drain = {
        "name": "drain",
        "priority": 10,
        "excludes": ["restart"],
        "when": 'signal.labels.alertname == "InstanceDown"',
        "do": [{"action": "traffic.drain", "target": "{{ signal.labels.instance }}"}],
    }
    driver = Driver(config(runbooks=[restart, drain]))
    decision = driver.signal("web-1")
    rejected = [e.data for e in decision.events if e.type == "ProposalRejected"]
    assert [(r["runbook"], r["reason"]) for r in rejected] == [
        ("restart", "excluded by runbook drain, which won")
    ]
    assert only_start(decision.commands).action == "traffic.drain"


def tiered(**escalation: object) -> object:
    return config(
        escalation={
            "default": [
                {"notify": ["sre-primary", "sre-email"], "wait": "5m"},
                {"notify": ["sre-lead"], "wait": "15m"},
            ],
            "services": {"db": [{"notify": ["dba"], "wait": "2m"}]},
            "repeat_last": 2,
            **escalation,
        }
    )


def pages(decision: object) -> list[tuple[int, tuple[str, ...]]]:
    return [
        (c.tier, c.channels)
        for c in decision.commands  # type: ignore[attr-defined]
        if isinstance(c, Notify) and c.kind == "escalation"
    ]


def test_escalation_tiers_fire_at_their_times_and_the_last_repeats_overdue() -> None:
    driver = Driver(tiered())  # type: ignore[arg-type]
    first = driver.signal("web-1", alertname="HighLatency")
    assert pages(first) == [(0, ("sre-primary", "sre-email"))]
    assert driver.feed(Tick(), after=299).events == ()
    second = driver.feed(Tick(), after=1)
    assert pages(second) == [(1, ("sre-lead",))]
    assert "not acknowledged within 5m" in second.events[0].data["reason"]
    assert driver.feed(Tick(), after=899).events == ()
    third = driver.feed(Tick(), after=1)
    assert [e.data.get("change") for e in third.events if e.type == "IncidentUpdated"] == [
        "overdue"
    ]
    assert pages(third) == [(1, ("sre-lead",))]
    assert pages(driver.feed(Tick(), after=900)) == [(1, ("sre-lead",))]
    assert pages(driver.feed(Tick(), after=900)) == []  # two repeats, then it stops


def test_an_acknowledgement_stops_the_escalation() -> None:
    from onduty.events import Acknowledged

    driver = Driver(tiered())  # type: ignore[arg-type]
    opened = driver.signal("web-1", alertname="HighLatency")
    incident_id = opened.events[0].data["incident_id"]
    driver.feed(Acknowledged(incident_id=incident_id), after=120, actor="alice")
    assert driver.feed(Tick(), after=600).events == ()
    assert driver.manager.pending_timers() == []


def test_a_service_has_its_own_escalation_policy() -> None:
    driver = Driver(tiered())  # type: ignore[arg-type]
    opened = driver.signal("db-1", alertname="DiskFull")
    assert pages(opened) == [(0, ("dba",))]


def test_a_probe_verifies_an_action_and_a_failing_one_undoes_it() -> None:
    from onduty.commands import RunCheck
    from onduty.events import CheckCompleted

    runbook = {
        "name": "restart-crashed-instance",
        "when": 'signal.labels.alertname == "InstanceDown"',
        "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
        "verify": {
            "signal_resolved_within": "2m",
            "probe": {"url": "http://web.internal/health", "expect_status": [200]},
        },
        "undo": [{"action": "traffic.drain", "target": "{{ signal.labels.instance }}"}],
    }
    for ok, expected in ((True, ["VerificationPassed"]), (False, ["VerificationFailed"])):
        driver = Driver(config(runbooks=[runbook]))
        command = only_start(driver.signal("web-1").commands)
        driver.start(command)
        succeeded = driver.feed(ActionSucceeded(command_id=command.command_id))
        checks = [c for c in succeeded.commands if isinstance(c, RunCheck)]
        assert [c.check["url"] for c in checks] == ["http://web.internal/health"]
        assert driver.manager.in_doubt() == checks  # re-run after a restart: it only reads
        result = driver.feed(
            CheckCompleted(command_id=command.command_id, ok=ok, detail="GET … answered 200")
        )
        assert [t for t in types(result) if t.startswith("Verification")] == expected
        if not ok:
            assert types(result)[-1] == "Escalated"
            assert any(isinstance(c, StartUndo) for c in result.commands)
