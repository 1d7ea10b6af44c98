"""The scorecard of real runs (the runtime, the core and the simulated world): what it counts,
how it judges actions, people alone beside it, and the control run with no fault."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from onduty.config import Config, parse_config
from onduty.events import Event
from onduty.sim import Scenario, parse_scenario
from onduty.sim.driver import IN_MEMORY, _through_the_webhook, run_scenario
from onduty.sim.expectations import METRICS
from onduty.sim.lab import people_alone, without_faults
from onduty.sim.scorecard import Scorecard, score

RESTART = {
    "name": "restart-crashed",
    "when": 'signal.labels.alertname == "InstanceDown"',
    "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
    "verify": {"signal_resolved_within": "3m"},
}
ROLLBACK = {
    "name": "rollback",
    "when": 'signal.labels.alertname == "HighErrorRate"',
    "do": [{"action": "deploy.rollback", "target": "{{ signal.labels.service }}"}],
    "verify": {"signal_resolved_within": "4m"},
}


def config(*runbooks: dict[str, Any], web: str = "act", **extra: Any) -> Config:
    return parse_config(
        {
            "services": [
                {
                    "name": "web",
                    "tier": "critical",
                    "autonomy": web,
                    "instances": ["web-1", "web-2", "web-3"],
                },
                {"name": "api", "tier": "high", "autonomy": "act", "instances": ["api-1", "api-2"]},
            ],
            "correlation": {"group_by": ["service", "alertname", "instance"], "group_wait": "30s"},
            "runbooks": list(runbooks),
            "escalation": {"default": [{"notify": ["sre"], "wait": "5m"}]},
            **extra,
        }
    )


def scenario(**fields: Any) -> Scenario:
    document: dict[str, Any] = {
        "name": "small",
        "seed": 3,
        "duration": "2h",
        "on_call": {
            "approve_after": "2m",
            "acknowledge_after": "3m",
            "fix_after": "20m",
            "approvers": ["alice"],
        },
        "faults": [
            {"at": "10m", "kind": "instance_crash", "target": "web-2"},
            {"at": "30m", "kind": "bad_deploy", "target": "api"},
            {"at": "1h", "kind": "dependency_latency", "target": "web", "duration": "20m"},
        ],
        "control": [{"from": "1h30m", "to": "2h"}],
    }
    document.update(fields)
    return parse_scenario(document)


def card_of(scenario: Scenario, config: Config, *, control_run: bool = False) -> Scorecard:
    return run_scenario(scenario, config, IN_MEMORY, control_run=control_run).scorecard


@pytest.fixture(scope="module")
def policy() -> Scorecard:
    return card_of(scenario(), config(RESTART, ROLLBACK))


def test_a_known_run_is_scored_against_the_truth(policy: Scorecard) -> None:
    metrics = policy.metrics()
    assert set(metrics) == set(METRICS)
    # the crash is restarted and the bad deploy rolled back; no runbook fixes latency, which
    # is paged and ends by itself after its 20 minutes
    assert {k: metrics[k] for k in ("faults", "detected", "auto_remediated", "escalated")} == {
        "faults": 3,
        "detected": 3,
        "auto_remediated": 2,
        "escalated": 1,
    }
    assert [(a.action, a.target, a.verdict, a.fault_kind) for a in policy.actions] == [
        ("process.restart", "web-2", "right", "instance_crash"),
        ("deploy.rollback", "api", "right", "bad_deploy"),
    ]
    assert (metrics["wrong_actions"], metrics["harmful_actions"], metrics["false_actions"]) == (
        0,
        0,
        0,
    )
    # detection: the alert's `for` and the 30 s group wait; recovery: 1m50s for the crash,
    # 2m30s for the rollback, 20m for the latency that ends by itself
    assert metrics["mttd_median"] == 120.0
    assert (metrics["mttr_median"], metrics["mttr_max"]) == (150.0, 1200.0)
    assert metrics["escalated_within"] == 150.0
    assert metrics["approval_wait_p90"] is None and metrics["control_incidents"] == 0


def test_a_group_restricts_the_figures_to_its_faults_and_actions(policy: Scorecard) -> None:
    critical = policy.metrics(("tier", "critical"))  # web: the crash and the latency
    assert (critical["faults"], critical["actions"], critical["escalated"]) == (2, 1, 1)
    crashes = policy.metrics(("kind", "instance_crash"))
    assert (crashes["faults"], crashes["right_actions"], crashes["mttr_max"]) == (1, 1, 110.0)
    api = policy.metrics(("service", "api"))
    assert (api["faults"], api["auto_remediated"], api["escalated_within"]) == (1, 1, None)
    assert ("tier", "high") in policy.groups() and ("kind", "bad_deploy") in policy.groups()


def test_people_alone_are_paged_for_everything_and_recover_slower(policy: Scorecard) -> None:
    alone = card_of(*people_alone(scenario(), config(RESTART, ROLLBACK)))
    metrics = alone.metrics()
    assert (metrics["actions"], metrics["escalated"], metrics["human_fixed"]) == (0, 3, 2)
    assert alone.denied_by.get("autonomy", 0) >= 2 and alone.guardrail_denials == 0
    recover = policy.metrics()["mttr_median"]
    assert recover is not None and (metrics["mttr_median"] or 0) > recover


def test_an_action_on_a_healthy_target_is_harmful_and_a_false_action() -> None:
    restart_another = {
        "name": "restart-the-first-instance",
        "when": 'signal.labels.alertname == "InstanceDown"',
        "do": [{"action": "process.restart", "target": "web-1"}],
    }
    faults = [{"at": "10m", "kind": "instance_crash", "target": "web-2"}]
    card = card_of(scenario(faults=faults, control=[]), config(restart_another))
    assert [(a.target, a.verdict, a.false) for a in card.actions] == [("web-1", "harmful", True)]
    metrics = card.metrics()
    assert (metrics["harmful_actions"], metrics["false_actions"]) == (1, 1)
    assert metrics["false_action_rate"] == 0.5  # one in two simulated hours
    assert (metrics["auto_remediated"], metrics["human_fixed"]) == (0, 1)


def test_the_wait_for_an_approval_runs_from_the_request_to_the_grant() -> None:
    faults = [{"at": "10m", "kind": "instance_crash", "target": "web-2"}]
    card = card_of(scenario(faults=faults, control=[]), config(RESTART, web="approve"))
    metrics = card.metrics()
    assert (metrics["approvals_requested"], metrics["approved"]) == (1, 1)
    assert metrics["approval_wait_p90"] == 120.0  # alice answers after two minutes
    assert metrics["auto_remediated"] == 1


def test_a_control_run_has_no_fault_and_every_incident_is_a_false_alarm() -> None:
    card = card_of(without_faults(scenario()), config(RESTART, ROLLBACK), control_run=True)
    metrics = card.metrics()
    assert (metrics["faults"], metrics["actions"], metrics["false_action_rate"]) == (0, 0, 0.0)
    assert metrics["control_incidents"] == card.incidents


def test_the_scorecard_is_plain_json(policy: Scorecard) -> None:
    data = json.loads(json.dumps(policy.to_dict()))
    assert data["metrics"]["right_actions"] == 2
    assert data["by_group"]["tier:critical"]["faults"] == 2
    assert [a["verdict"] for a in data["actions"]] == ["right", "right"]


def test_malformed_deliveries_go_through_the_real_parser_and_are_refused() -> None:
    class Broken:
        def take_malformed(self) -> list[Any]:
            good = {
                "version": "4",
                "status": "firing",
                "alerts": [{"status": "firing", "labels": {"alertname": "X", "service": "web"}}],
            }
            return [{"version": "4", "alerts": "not a list"}, b"{not json", good]

    delivered = list(_through_the_webhook(Broken(), datetime(2026, 1, 5, 9, 0)))  # type: ignore[arg-type]
    assert delivered[:2] == [None, None]
    assert delivered[2] is not None and delivered[2].labels["alertname"] == "X"


def test_expectations_and_steady_state_are_checked_against_the_metrics() -> None:
    expect = [
        "right_actions == 2",
        "mttr_median < 3m",
        "escalated_within < 5m for tier critical",
        "auto_remediated == 1 for kind bad_deploy",
        "wrong_actions > 0",  # fails: there is none
    ]
    steady = {"before": ["firing_alerts == 0"], "after": ["open_incidents == 0"]}
    card = card_of(scenario(expect=expect, steady_state=steady), config(RESTART, ROLLBACK))
    outcome = {(e.name, e.bound): (e.actual, e.ok) for e in card.expectations}
    assert outcome == {
        ("right_actions", "== 2"): (2, True),
        ("mttr_median", "< 3m"): (150.0, True),
        ("escalated_within for tier critical", "< 5m"): (150.0, True),
        ("auto_remediated for kind bad_deploy", "== 1"): (1, True),
        ("wrong_actions", "> 0"): (0, False),
        ("steady state before: firing_alerts", "== 0"): (0.0, True),
        ("steady state after: open_incidents", "== 0"): (0, True),
    }
    assert not card.passed


def test_faults_of_the_signals_are_reported_apart_from_the_outages() -> None:
    faults = [
        {"at": "5m", "kind": "stale_signals", "target": "any", "duration": "1h", "delay": "3m"},
        {"at": "5m", "kind": "malformed_signals", "target": "web", "duration": "1h"},
        {"at": "20m", "kind": "instance_crash", "target": "api-1"},
    ]
    card = card_of(scenario(faults=faults, control=[]), config(RESTART))
    metrics = card.metrics()
    # one outage, detected late (the signals are stale) and restarted: an hour of stale or
    # garbled signals is neither undetected nor an hour-long recovery
    assert (metrics["faults"], metrics["signal_faults"]) == (1, 2)
    assert (metrics["detected"], metrics["undetected"], metrics["unrecovered"]) == (1, 0, 0)
    assert (metrics["auto_remediated"], metrics["human_fixed"]) == (1, 0)
    assert metrics["mttr_max"] is not None and metrics["mttr_max"] < 8 * 60
    assert metrics["mttd_max"] is not None and metrics["mttd_max"] >= 4 * 60
    assert [f.record.kind for f in card.faults] == ["instance_crash"]
    stale = card.metrics(("kind", "stale_signals"))
    assert (stale["faults"], stale["signal_faults"], stale["mttr_max"]) == (0, 1, None)
    assert card.metrics(("service", "web"))["signal_faults"] == 1
    # what they did: the signals they applied to while they held, the deliveries refused
    data = json.loads(json.dumps(card.to_dict()))
    reported = {f["kind"]: f for f in data["signal_faults"]}
    assert set(reported) == {"stale_signals", "malformed_signals"}
    assert reported["stale_signals"]["delivered"] >= 1
    assert reported["stale_signals"]["refused"] == 0
    assert reported["malformed_signals"]["service"] == "web"
    assert reported["malformed_signals"]["refused"] == metrics["refused_signals"]
    assert [f["kind"] for f in data["faults"]] == ["instance_crash"]


REGION_FLEET = {
    "services": [
        {"name": "web", "tier": "critical", "regions": ["eu-west", "us-east"], "instances": 4},
        {"name": "api", "tier": "high", "region": "eu-west", "instances": 3},
        {"name": "batch", "tier": "low", "region": "us-east", "instances": 2},
    ]
}


def test_a_region_outage_counts_in_the_most_critical_tier_it_touches() -> None:
    outage = scenario(
        fleet=REGION_FLEET,
        faults=[{"at": "20m", "kind": "region_outage", "target": "us-east", "duration": "30m"}],
        control=[],
        expect=["escalated_within < 5m for tier critical", "faults == 0 for tier low"],
    )
    events: list[Event] = []
    result = run_scenario(outage, outage.apply_fleet(config()), IN_MEMORY, on_event=events.append)
    card = result.scorecard
    (fault,) = card.faults
    assert (fault.record.service, fault.tier) == ("", "critical")  # web runs in us-east too
    critical = card.metrics(("tier", "critical"))
    assert (critical["faults"], critical["escalated"]) == (1, 1)
    within = critical["escalated_within"]
    assert within is not None and within < 5 * 60
    outcome = {e.name: (e.actual, e.ok) for e in card.expectations}
    assert outcome == {
        "escalated_within for tier critical": (within, True),
        "faults for tier low": (0, True),
    }
    # without the config (as a drill scores), the scenario's fleet tells the tiers
    drill = score(events, result.world.faults, result.world.actions, outage)
    assert [f.tier for f in drill.faults] == ["critical"]


def test_the_package_exports_what_a_user_of_the_lab_imports() -> None:
    from onduty import sim
    from onduty.sim import lab, scorecard

    assert all(hasattr(sim, name) for name in sim.__all__)
    # every fault kind of the library, by its class name
    assert {cls.__name__ for cls in sim.FAULT_KINDS.values()} <= set(sim.__all__)
    # the scorecard, the expectations and the lab's entry points
    assert (sim.Scorecard, sim.score, sim.SignalFaultScore) == (
        scorecard.Scorecard,
        scorecard.score,
        scorecard.SignalFaultScore,
    )
    assert (sim.run_one, sim.monte_carlo, sim.compare) == (
        lab.run_one,
        lab.monte_carlo,
        lab.compare,
    )
    assert {"parse_expectation", "check", "Expectation", "run_scenario"} <= set(sim.__all__)
