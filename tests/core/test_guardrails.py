"""Blast radius, outage brake and freeze windows, through the core (the policy's table tests
live with `onduty policy test`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from onduty.commands import StartAction
from onduty.config import Config
from onduty.events import ActionStarted, ActionSucceeded, SignalReceived
from tests.core.helpers import T0, Driver, config

SERVICES = [
    {"name": "web", "autonomy": "act", "instances": ["web-1", "web-2", "web-3", "web-4"]},
    {"name": "api", "autonomy": "act", "instances": ["api-1", "api-2"]},
    {"name": "db", "autonomy": "act", "instances": ["db-1"]},
]
RUNBOOKS = [
    {
        "name": "restart",
        "when": 'signal.labels.alertname in ["InstanceDown", "HighMemoryUsage"]',
        "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
        "verify": {"signal_resolved_within": "2m"},
    }
]


def policy(*guardrails: dict[str, Any]) -> Config:
    return config(
        services=SERVICES,
        runbooks=RUNBOOKS,
        correlation={"group_by": ["instance", "alertname"], "flap_threshold": 100},
        policy={"guardrails": list(guardrails)},
    )


def alert(driver: Driver, instance: str, name: str = "HighMemoryUsage", **kw: Any) -> Any:
    service = instance.rsplit("-", 1)[0]
    labels = {"alertname": name, "instance": instance, "service": service}
    return driver.feed(
        SignalReceived(
            source="test", fingerprint=f"{name}:{instance}", status=kw.pop("status", "firing"),
            labels=labels,
        ),
        **kw,
    )  # fmt: skip


def verdict(decision: Any) -> dict[str, Any]:
    found = [e.data for e in decision.events if e.type == "PolicyEvaluated"]
    assert found, [e.type for e in decision.events]
    return found[-1]


BLAST = {"name": "web-capacity", "blast": {"max": 1, "window": "10m"}}


def finish(driver: Driver, decision: Any) -> None:
    """The action ran and fixed it: started, succeeded, the alert resolved (verified)."""
    (command,) = [c for c in decision.commands if isinstance(c, StartAction)]
    driver.feed(
        ActionStarted(
            command_id=command.command_id, incident_id=command.incident_id,
            action=command.action, target=command.target,
        )
    )  # fmt: skip
    driver.feed(ActionSucceeded(command_id=command.command_id))
    alert(driver, command.target, status="resolved")


def test_blast_radius_counts_what_was_acted_on_within_the_window() -> None:
    driver = Driver(policy(BLAST))
    first = alert(driver, "web-1")
    assert verdict(first)["verdict"] == "allow"
    finish(driver, first)
    second = verdict(alert(driver, "web-2", after=60))
    assert second["verdict"] == "deny"
    assert second["reason"] == (
        "web-capacity: process.restart on web-2 would make 2 of 4 web instances affected "
        "within 10m (1 already down or acted on), limit 1"
    )
    # nine minutes later web-1 is still inside the window; ten minutes after it, it is not
    assert verdict(alert(driver, "web-3", after=480))["verdict"] == "deny"
    assert verdict(alert(driver, "web-4", after=60))["verdict"] == "allow"


def test_blast_radius_counts_instances_already_down() -> None:
    driver = Driver(policy(BLAST))
    alert(driver, "web-1", "InstanceDown")  # web-1 is down (and its restart is allowed)
    leaking = verdict(alert(driver, "web-2", after=1200))  # long after web-1's restart
    assert leaking["verdict"] == "deny", "web-1 is still down: web-2 would be a second"
    # restarting an instance that is already down adds no disruption
    assert verdict(alert(driver, "web-3", "InstanceDown", after=10))["verdict"] == "allow"


def test_a_scoped_rule_applies_only_where_its_condition_holds() -> None:
    scoped = {**BLAST, "when": 'service.name == "api"'}
    driver = Driver(policy(scoped))
    alert(driver, "web-1")
    assert verdict(alert(driver, "web-2", after=60))["verdict"] == "allow"


def test_the_outage_brake_stops_automation_when_much_of_the_fleet_alerts() -> None:
    brake = {"name": "outage-brake", "outage": {"max_fraction": 0.5, "of": "services"}}
    driver = Driver(policy(brake))
    assert verdict(alert(driver, "web-1"))["verdict"] == "allow"
    alert(driver, "api-1", "HighLatency", after=10)  # no runbook: escalated, but alerting
    third = alert(driver, "db-1", after=10)
    assert verdict(third)["verdict"] == "deny"
    assert verdict(third)["reason"] == (
        "outage-brake: 3 of 3 services are alerting (more than 50%): automation pauses "
        "during an outage"
    )
    assert [e.type for e in third.events][-1] == "Escalated"


def test_freeze_ranges_and_recurring_freezes_in_local_time() -> None:
    start = T0 + timedelta(minutes=30)
    freeze = {
        "name": "release-freeze",
        "freeze": {
            "ranges": [{"from": start.isoformat(), "to": (start + timedelta(hours=1)).isoformat()}]
        },
    }
    driver = Driver(policy(freeze))
    assert verdict(alert(driver, "web-1", after=29 * 60 + 59))["verdict"] == "allow"
    frozen = verdict(alert(driver, "web-2", after=1))
    assert frozen["verdict"] == "deny" and "release-freeze: changes are frozen" in frozen["reason"]
    assert verdict(alert(driver, "web-3", after=3599))["verdict"] == "deny"
    assert verdict(alert(driver, "web-4", after=1))["verdict"] == "allow"  # the end is exclusive

    weekly = {
        "name": "friday-evening",
        "freeze": {"cron": "0 18 * * 5", "duration": "2h", "timezone": "Europe/Berlin"},
    }
    # T0 is Monday 2026-01-05 09:00Z; Friday 2026-01-09 18:00 in Berlin is 17:00Z (winter)
    driver = Driver(policy(weekly))
    before = T0 + timedelta(days=4, hours=7, minutes=59)
    assert (
        verdict(alert(driver, "web-1", after=(before - T0).total_seconds()))["verdict"] == "allow"
    )
    assert verdict(alert(driver, "web-2", after=60))["verdict"] == "deny"


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["web-1", "web-2", "web-3", "web-4"]),
            st.integers(0, 400),
            st.sampled_from(["firing", "resolved", "ok", "start"]),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_blast_radius_is_never_exceeded(ops: list[tuple[str, int, str]]) -> None:
    """Under random interleavings of proposals across a service, never more than the limit
    of distinct instances is acted on within the window."""
    limit, window = 2, timedelta(minutes=10)
    driver = Driver(policy({"name": "cap", "blast": {"max": limit, "window": "10m"}}))
    starts: list[StartAction] = []
    allowed: list[tuple[Any, str]] = []
    for instance, after, kind in ops:
        if kind in ("firing", "resolved"):
            decision = alert(driver, instance, status=kind, after=after)
        elif starts:
            command = starts.pop(0)
            body: Any = (
                ActionStarted(
                    command_id=command.command_id, incident_id=command.incident_id,
                    action=command.action, target=command.target,
                )
                if kind == "start"
                else ActionSucceeded(command_id=command.command_id)
            )  # fmt: skip
            decision = driver.feed(body, after=after)
        else:
            continue
        starts.extend(c for c in decision.commands if isinstance(c, StartAction))
        for event in decision.events:
            if event.type == "PolicyEvaluated" and event.data["verdict"] == "allow":
                target = driver.manager.state.actions[event.data["command_id"]].target
                allowed.append((event.ts, target))
                recent = {t for at, t in allowed if event.ts - at < window}
                assert len(recent) <= limit, recent


def budget(max_: int) -> dict[str, Any]:
    return {"name": "budget", "rate": {"action": "process.restart", "max": max_, "per": "1h"}}


def candidate_event(cfg: Config, role: str, selector: str | None = None) -> Any:
    from onduty.events import PolicyActivated

    return PolicyActivated(
        version=cfg.version, config=cfg.policy_document(), role=role, selector=selector
    )


def test_a_shadow_policy_is_evaluated_and_recorded_but_never_enforced() -> None:
    driver = Driver(policy(budget(5)))
    driver.feed(candidate_event(policy(budget(0)), "shadow"), actor="admin")
    decision = alert(driver, "web-1")
    enforced = verdict(decision)
    assert enforced["verdict"] == "allow"
    diverged = [e.data for e in decision.events if e.type == "PolicyShadowDiverged"]
    assert diverged == [
        {
            "command_id": enforced["command_id"],
            "incident_id": enforced["incident_id"],
            "mode": "shadow",
            "enforced": "allow",
            "enforced_version": policy(budget(5)).version,
            "other": "deny",
            "other_version": policy(budget(0)).version,
            "other_reason": "budget: 0 process.restart on web-1 in the last hour, limit 0",
        }
    ]
    assert any(isinstance(c, StartAction) for c in decision.commands)


def test_a_canary_policy_is_enforced_only_where_its_selector_holds() -> None:
    driver = Driver(policy(budget(5)))
    driver.feed(
        candidate_event(policy(budget(0)), "canary", 'service.name == "api"'), actor="admin"
    )
    assert verdict(alert(driver, "web-1"))["verdict"] == "allow"
    canary = alert(driver, "api-1", after=10)
    assert verdict(canary)["verdict"] == "deny"
    assert [e.data["mode"] for e in canary.events if e.type == "PolicyShadowDiverged"] == ["canary"]


def test_promoting_the_candidate_makes_it_active_and_drops_it() -> None:
    driver = Driver(policy(budget(5)))
    strict = policy(budget(0))
    driver.feed(candidate_event(strict, "shadow"), actor="admin")
    driver.feed(candidate_event(strict, "active"), actor="admin")
    decision = alert(driver, "web-1")
    assert verdict(decision)["verdict"] == "deny"
    assert not [e for e in decision.events if e.type == "PolicyShadowDiverged"]
    assert driver.manager.state.candidate is None
    assert driver.manager.state.previous_policy == policy(budget(5)).policy_document()


def test_the_circuit_breaker_opens_after_failures_and_lets_one_trial_through() -> None:
    from onduty.events import ActionFailed

    driver = Driver(
        config(
            services=SERVICES,
            runbooks=RUNBOOKS,
            correlation={"group_by": ["instance", "alertname"], "flap_threshold": 100},
            policy={"breaker": {"failures": 2, "cooldown": "10m"}},
        )
    )

    def attempt(after: float) -> Any:
        decision = alert(driver, "web-1", after=after)
        starts = [c for c in decision.commands if isinstance(c, StartAction)]
        return decision, starts

    def fail(command: StartAction) -> None:
        driver.feed(
            ActionStarted(
                command_id=command.command_id, incident_id=command.incident_id,
                action=command.action, target=command.target,
            )
        )  # fmt: skip
        driver.feed(ActionFailed(command_id=command.command_id, error="exit 1"))
        alert(driver, "web-1", status="resolved", after=1)

    for _ in range(2):
        _, starts = attempt(after=60)
        fail(starts[0])
    blocked, starts = attempt(after=60)
    assert not starts
    assert verdict(blocked)["reason"].startswith(
        "breaker: open after 2 failures of process.restart on web-1"
    )
    alert(driver, "web-1", status="resolved", after=1)
    trial, starts = attempt(after=600)  # the cool-down has passed: one trial
    assert verdict(trial)["verdict"] == "allow" and starts
    driver.feed(
        ActionStarted(
            command_id=starts[0].command_id, incident_id=starts[0].incident_id,
            action=starts[0].action, target=starts[0].target,
        )
    )  # fmt: skip
    driver.feed(ActionSucceeded(command_id=starts[0].command_id))
    assert driver.manager.state.breakers == {}  # a success closes it


def test_conditions_can_read_counts_from_history() -> None:
    busy = {
        "name": "busy-target-needs-human",
        "when": "counts.target_actions_1h >= 1",
        "effect": "require_approval",
    }
    driver = Driver(policy(busy))
    first = alert(driver, "web-1")
    assert verdict(first)["verdict"] == "allow"
    finish(driver, first)
    again = verdict(alert(driver, "web-1", after=60))
    assert again["verdict"] == "require_approval"
    assert again["reason"] == "busy-target-needs-human: `counts.target_actions_1h >= 1` holds"
