"""The demo scenario tells the story it promises when someone answers its alerts the way the
demo config says onduty should: a crude responder stands in for the manager here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from onduty.events import Signal
from onduty.sim import World, load_builtin_config, load_scenario, parse_scenario

RUNBOOKS = {
    "InstanceDown": ("process.restart", "instance"),
    "HighErrorRate": ("deploy.rollback", "service"),
    "HighMemoryUsage": ("process.restart", "instance"),
}
GROUP_WAIT = timedelta(seconds=30)
APPROVAL = timedelta(minutes=2)
BUDGET, BUDGET_WINDOW = 3, timedelta(hours=1)


@dataclass
class Responder:
    open: set[str] = field(default_factory=set)
    due: list[tuple[datetime, str, str, str]] = field(default_factory=list)
    restarts: dict[str, list[datetime]] = field(default_factory=dict)
    escalated: list[dict[str, str]] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    fired: list[tuple[datetime, Signal]] = field(default_factory=list)

    def see(self, at: datetime, signal: Signal) -> None:
        if signal.status == "resolved":
            self.open.discard(signal.fingerprint)
            return
        self.fired.append((at, signal))
        if signal.fingerprint in self.open:
            return  # a re-send
        self.open.add(signal.fingerprint)
        runbook = RUNBOOKS.get(signal.labels["alertname"])
        if runbook is None:
            self.escalated.append(signal.labels)
            return
        action, label = runbook
        target = signal.labels[label]
        approval = APPROVAL if signal.labels["service"] == "checkout" else timedelta(0)
        when = at + GROUP_WAIT + approval
        if action == "process.restart":
            recent = [t for t in self.restarts.get(target, []) if when - t < BUDGET_WINDOW]
            if len(recent) >= BUDGET:
                self.denied.append(target)
                self.escalated.append(signal.labels)
                return
            self.restarts.setdefault(target, []).append(when)
        self.due.append((when, action, target, f"cmd-{len(self.due) + 1}"))


def test_the_demo_story() -> None:
    config, scenario = load_builtin_config("demo"), load_scenario("demo")
    world = World(config, scenario)
    responder = Responder()
    t = world.start
    while t <= world.end:
        for when, action, target, command_id in [d for d in responder.due if d[0] == t]:
            result = world.apply(action, target, {}, command_id, when)
            assert result.ok, result.error
        for signal in world.advance(t):
            responder.see(t, signal)
        t += world.eval_interval

    faults = {f.id: f for f in world.faults}
    assert len(faults) == 7
    by_kind = {(f.kind, f.target): f for f in faults.values()}
    for key in [
        ("instance_crash", "search-2"),
        ("bad_deploy", "payments"),
        ("memory_leak", "search-3"),
        ("instance_crash", "checkout-2"),
        ("instance_crash", "payments-3"),
    ]:
        fault = by_kind[key]
        assert fault.cleared_by is not None and fault.cleared_by.startswith("cmd-"), key
    for key in [("dependency_latency", "payments"), ("flapping", "search-4")]:
        assert by_kind[key].cleared_by == "self"

    # The checkout crash waited for the on-call's approval.
    checkout = by_kind[("instance_crash", "checkout-2")]
    assert checkout.cleared_at is not None
    assert checkout.cleared_at - checkout.injected_at > APPROVAL + timedelta(minutes=1)

    # Every fault raised the alerts it is expected to, on its target.
    for fault in faults.values():
        label = "service" if fault.target == fault.service else "instance"
        assert any(
            s.labels["alertname"] in fault.alertnames
            and s.labels[label] == fault.target
            and at >= fault.injected_at
            for at, s in responder.fired
        ), fault

    # Latency has no runbook: escalated. Flapping exhausted the restart budget: escalated.
    assert {"HighLatency"} <= {labels["alertname"] for labels in responder.escalated}
    assert "search-4" in responder.denied
    assert len(responder.restarts["search-4"]) == BUDGET
    assert world.wrong_actions == []

    # The control period is quiet.
    control = scenario.control[-1]
    quiet_from = world.start + control.start
    assert [s for at, s in responder.fired if at >= quiet_from] == []
    assert world.firing() == []


@pytest.mark.parametrize("seed", range(4))
def test_a_control_period_without_faults_emits_no_alerts(seed: int) -> None:
    scenario = parse_scenario(
        {"name": "quiet", "seed": seed, "duration": "6h", "control": [{"from": "0s", "to": "6h"}]}
    )
    world = World(load_builtin_config("demo"), scenario)
    assert world.advance(world.end) == []
    assert world.faults == []
