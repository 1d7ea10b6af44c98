"""Rate limits counted across the fleet (`across: fleet`), through the core: an action the
policy allows here waits for its fleet-wide counts, asked for as a command and recorded with
their answer, so a replay decides exactly as the manager did."""

from __future__ import annotations

from typing import Any

from onduty.commands import CountAcrossFleet, StartAction
from onduty.config import Config
from onduty.events import FleetCountAnswer, FleetCountAnswered, SignalReceived
from onduty.manager import Manager
from tests.core.helpers import Driver, config

SERVICES = [{"name": "web", "autonomy": "act", "instances": [f"web-{i}" for i in range(6)]}]
RUNBOOKS = [
    {
        "name": "restart",
        "when": 'signal.labels.alertname == "InstanceDown"',
        "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
    }
]


def fleet_policy(local_max: int = 10, fleet_max: int = 3) -> Config:
    return config(
        services=SERVICES,
        runbooks=RUNBOOKS,
        correlation={"group_by": ["instance", "alertname"]},
        policy={
            "guardrails": [
                {
                    "name": "fleet-restarts",
                    "rate": {
                        "action": "process.restart",
                        "max": fleet_max,
                        "per": "10m",
                        "key": "service",
                        "across": "fleet",
                    },
                },
                {"name": "local", "rate": {"max": local_max, "per": "10m"}},
            ]
        },
    )


def down(driver: Driver, instance: str) -> Any:
    return driver.feed(
        SignalReceived(
            source="test",
            fingerprint=f"down:{instance}",
            status="firing",
            labels={"alertname": "InstanceDown", "instance": instance, "service": "web"},
        )
    )


def answer(request: CountAcrossFleet, granted: bool, seen: int = 0) -> FleetCountAnswered:
    reason = "granted" if granted else f"{seen} actions already counted, limit 3"
    return FleetCountAnswered(
        command_id=request.command_id,
        granted=granted,
        answers=[
            FleetCountAnswer(
                rule="fleet-restarts",
                granted=granted,
                seen=seen,
                limit=3,
                reason=f"fleet-restarts: {reason}",
            )
        ],
    )


def test_an_allowed_action_waits_for_its_fleet_count_then_starts() -> None:
    driver = Driver(fleet_policy())
    decision = down(driver, "web-1")
    asked = [c for c in decision.commands if isinstance(c, CountAcrossFleet)]
    assert [c for c in decision.commands if isinstance(c, StartAction)] == []
    assert [e.type for e in decision.events if e.type.startswith(("Policy", "Fleet"))] == [
        "FleetCountRequested"
    ]
    (request,) = asked
    assert request.counts == (
        {
            "rule": "fleet-restarts",
            "scope": "rate:fleet-restarts:web",
            "limit": 3,
            "window_s": 600.0,
            "target": "web-1",
            "distinct": False,
        },
    )
    started = driver.feed(answer(request, granted=True))
    verdicts = [e.data for e in started.events if e.type == "PolicyEvaluated"]
    assert [v["verdict"] for v in verdicts] == ["allow"]
    assert [c.target for c in started.commands if isinstance(c, StartAction)] == ["web-1"]


def test_a_refused_count_denies_and_escalates_naming_the_fleet_limit() -> None:
    driver = Driver(fleet_policy())
    (request,) = [c for c in down(driver, "web-2").commands if isinstance(c, CountAcrossFleet)]
    refused = driver.feed(answer(request, granted=False, seen=3))
    verdict = next(e.data for e in refused.events if e.type == "PolicyEvaluated")
    assert verdict["verdict"] == "deny"
    assert verdict["reason"] == "fleet-restarts: 3 actions already counted, limit 3"
    assert [c for c in refused.commands if isinstance(c, StartAction)] == []
    assert any(e.type == "Escalated" for e in refused.events)


def test_an_answer_nothing_waits_for_changes_nothing() -> None:
    driver = Driver(fleet_policy())
    (request,) = [c for c in down(driver, "web-3").commands if isinstance(c, CountAcrossFleet)]
    driver.feed(answer(request, granted=True))
    again = driver.feed(answer(request, granted=True))  # asked twice after a restart, say
    assert list(again.commands) == [] and [e.type for e in again.events] == []


def test_a_local_limit_refuses_without_asking_the_fleet() -> None:
    driver = Driver(fleet_policy(local_max=0))
    decision = down(driver, "web-4")
    assert [c for c in decision.commands if isinstance(c, CountAcrossFleet)] == []
    assert next(e.data for e in decision.events if e.type == "PolicyEvaluated")["verdict"] == (
        "deny"
    )


def test_a_restart_asks_again_for_counts_never_answered() -> None:
    driver = Driver(fleet_policy())
    (request,) = [c for c in down(driver, "web-5").commands if isinstance(c, CountAcrossFleet)]
    restarted = Manager()
    for event in driver.log:
        restarted.apply(event)
    assert [c for c in restarted.in_doubt() if isinstance(c, CountAcrossFleet)] == [request]
    from_snapshot = Manager.from_snapshot(restarted.snapshot())
    assert [c for c in from_snapshot.in_doubt() if isinstance(c, CountAcrossFleet)] == [request]


def test_a_policy_without_fleet_counts_keeps_its_version() -> None:
    """`across` is left out of the policy document when it is the default, so a policy
    written before fleets existed has the same content hash as before."""
    plain = config(policy={"guardrails": [{"name": "r", "rate": {"max": 2, "per": "1h"}}]})
    said = config(
        policy={"guardrails": [{"name": "r", "rate": {"max": 2, "per": "1h", "across": "manager"}}]}
    )
    assert plain.version == said.version
    assert "across" not in plain.policy_document()["policy"]["guardrails"][0]["rate"]
    assert fleet_policy().version != config(services=SERVICES, runbooks=RUNBOOKS).version


def blast_policy(**blast: Any) -> Config:
    rule = {
        "name": "web-capacity",
        "blast": {"max": 2, "window": "10m", "across": "fleet", **blast},
    }
    return config(
        services=SERVICES,
        runbooks=RUNBOOKS,
        correlation={"group_by": ["instance", "alertname"]},
        policy={"guardrails": [rule]},
    )


def test_a_blast_radius_across_the_fleet_counts_distinct_instances() -> None:
    driver = Driver(blast_policy(down_alerts=[]))
    (asked,) = [c for c in down(driver, "web-1").commands if isinstance(c, CountAcrossFleet)]
    assert asked.counts == (
        {
            "rule": "web-capacity",
            "scope": "blast:web-capacity:web",
            "limit": 2,
            "window_s": 600.0,
            "target": "web-1",
            "distinct": True,
        },
    )


def test_acting_on_an_instance_already_down_counts_nothing_across_the_fleet() -> None:
    driver = Driver(blast_policy())  # InstanceDown: web-1 is affected already
    decision = down(driver, "web-1")
    assert [c for c in decision.commands if isinstance(c, CountAcrossFleet)] == []
    assert [c.target for c in decision.commands if isinstance(c, StartAction)] == ["web-1"]
