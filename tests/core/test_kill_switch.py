"""Kill switches: set by an operator as an input event, they deny every proposal under them at
once, naming the switch and who set it; replay reproduces that."""

from __future__ import annotations

from onduty.events import KillSwitchCleared, KillSwitchSet, Origin
from onduty.manager import Manager
from onduty.state import State
from tests.core.helpers import Driver
from tests.core.test_guardrails import alert, policy, verdict


def test_a_kill_switch_stops_a_runbook_mid_incident() -> None:
    driver = Driver(policy())
    assert verdict(alert(driver, "web-1"))["verdict"] == "allow"
    driver.feed(
        KillSwitchSet(kind="runbook", name="restart", reason="restarts make it worse"),
        actor="alice",
        after=30,
    )
    denied = verdict(alert(driver, "web-2", after=30))
    assert denied["verdict"] == "deny"
    assert denied["reason"] == (
        "kill-switch: kill switch on runbook restart (set by alice: restarts make it worse)"
    )
    assert "kill-switch" in [rule["rule"] for rule in denied["rules"]]

    driver.feed(KillSwitchCleared(kind="runbook", name="restart"), actor="alice", after=30)
    assert verdict(alert(driver, "api-1", after=30))["verdict"] == "allow"

    # Replay: the same inputs to a fresh manager make the same decisions.
    fresh = Manager()
    replayed = []
    for event in driver.log:
        if event.origin == Origin.INPUT:
            replayed.extend(fresh.handle(event).events)
    decided = [e for e in driver.log if e.origin == Origin.DECISION]
    assert [(e.type, e.data) for e in replayed] == [(e.type, e.data) for e in decided]


def test_actuator_and_service_switches() -> None:
    driver = Driver(policy())
    driver.feed(KillSwitchSet(kind="actuator", name="process"), actor="bob")
    assert "actuator process (set by bob)" in verdict(alert(driver, "web-1"))["reason"]
    driver.feed(KillSwitchCleared(kind="actuator", name="process"))
    driver.feed(KillSwitchSet(kind="actuator", name="process.restar"), actor="bob")
    driver.feed(KillSwitchSet(kind="service", name="db"), actor="carol")
    assert verdict(alert(driver, "api-1"))["verdict"] == "allow"
    assert "service db (set by carol)" in verdict(alert(driver, "db-1"))["reason"]


def test_switches_survive_a_snapshot_and_none_leave_it_as_before() -> None:
    driver = Driver(policy())
    plain = driver.manager.state.encode()
    assert b"kill_switches" not in plain
    canonical = driver.manager.state.encode_canonical()
    assert canonical is not None and b"kill_switches" not in canonical
    driver.feed(KillSwitchSet(kind="service", name="web", reason="r"), actor="alice")
    state = State.from_snapshot(driver.manager.state.to_snapshot())
    (switch,) = state.kill_switches.values()
    assert (switch.kind, switch.name, switch.reason, switch.set_by) == (
        "service", "web", "r", "alice"
    )  # fmt: skip
    assert state.encode() == driver.manager.state.encode()
