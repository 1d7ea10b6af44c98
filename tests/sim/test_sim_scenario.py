"""Scenarios load from YAML or by built-in name, and every error names its field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from onduty.config import Config, ConfigError
from onduty.configfile import load_config
from onduty.sim import (
    DEFAULT_START,
    Scenario,
    World,
    builtin_scenarios,
    load_builtin_config,
    load_scenario,
    parse_scenario,
    read_builtin,
)

ScenarioFactory = Callable[..., Scenario]
BASE: dict[str, Any] = {"name": "t", "seed": 1, "duration": "6h"}


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(document, "s.yaml")
    assert caught.value.source == "s.yaml"
    return caught.value.problems


def crash(at: str, **extra: Any) -> dict[str, Any]:
    return {"at": at, "kind": "instance_crash", "target": "web-1", **extra}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"name": "t"}, "seed: required field is missing"),
        ({**BASE, "duration": "soon"}, "duration: expected a duration"),
        ({**BASE, "faults": [{**crash("1m"), "kind": "meteor"}]}, "faults[0].kind:"),
        ({**BASE, "faults": [{"at": "1m", "kind": "bad_deploy"}]}, "faults[0].target: required"),
        ({**BASE, "faults": [{**crash("1m"), "when": "x"}]}, "faults[0].when: unknown field"),
        ({**BASE, "faults": [crash("1m", duration="5m")]}, "faults[0].duration: instance_crash"),
        (
            {
                **BASE,
                "faults": [
                    {"at": "1m", "kind": "dependency_latency", "target": "web", "period": "1m"}
                ],
            },
            "faults[0].period: only flapping faults take a period",
        ),
        ({**BASE, "faults": [crash("1m"), crash("7h")]}, "faults[1].at: 7h is not before"),
        ({**BASE, "control": [{"from": "2h", "to": "1h"}]}, "control[0].to: must be after"),
        ({**BASE, "control": [{"from": "5h", "to": "7h"}]}, "control[0].to: 7h is after"),
        ({**BASE, "control": [{"from": "5h"}]}, "control[0].to: required field is missing"),
        ({**BASE, "eval_interval": "0s"}, "eval_interval: must be longer than zero"),
        ({**BASE, "expect": {"detected_min": -1}}, "expect.detected_min:"),
        ({**BASE, "expect": {"detected": 3}}, "expect.detected: unknown field"),
        ({**BASE, "on_call": {"approve_after": "later"}}, "on_call.approve_after:"),
    ],
)
def test_validation_errors_name_the_field(document: dict[str, Any], expected: str) -> None:
    found = problems(document)
    assert any(expected in problem for problem in found), found


def test_a_fault_inside_a_control_period_is_rejected() -> None:
    found = problems({**BASE, "faults": [crash("5h10m")], "control": [{"from": "5h", "to": "6h"}]})
    assert found == [
        "faults[0].at: the instance_crash at 310m falls in the no-fault control period "
        "control[0] (5h to 6h)"
    ]


def test_a_timed_fault_running_into_a_control_period_is_rejected() -> None:
    latency = {"at": "4h50m", "kind": "dependency_latency", "target": "web", "duration": "20m"}
    found = problems({**BASE, "faults": [latency], "control": [{"from": "5h", "to": "6h"}]})
    assert len(found) == 1 and found[0].startswith("faults[0].at:")
    assert "control[0]" in found[0]


def test_compound_durations_and_defaults() -> None:
    scenario = parse_scenario({**BASE, "faults": [crash("1h15m30s")]})
    assert scenario.faults[0].at == timedelta(hours=1, minutes=15, seconds=30)
    assert scenario.start_at == DEFAULT_START
    assert scenario.eval_interval == timedelta(seconds=15)
    assert scenario.resend_interval == timedelta(minutes=5)
    assert scenario.on_call.approve_after == timedelta(minutes=2)
    assert scenario.on_call.acknowledge_after == timedelta(minutes=5)
    assert scenario.expect.detected_min is None


def test_start_is_utc() -> None:
    scenario = parse_scenario({**BASE, "start": "2026-03-01T10:00:00+02:00"})
    assert scenario.start_at == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_world_checks_fault_targets_against_the_config(
    small_config: Config, make_scenario: ScenarioFactory
) -> None:
    scenario = make_scenario(
        [
            {"at": "1m", "kind": "instance_crash", "target": "web-9"},
            {"at": "1m", "kind": "instance_crash", "target": "web"},
            {"at": "1m", "kind": "bad_deploy", "target": "web-1"},
            {"at": "1m", "kind": "dependency_latency", "target": "db"},
        ]
    )
    with pytest.raises(ConfigError) as caught:
        World(small_config, scenario)
    assert caught.value.problems == [
        "faults[0].target: no instance 'web-9' in the config",
        "faults[1].target: 'web' is a service; instance_crash needs one of its instances",
        "faults[2].target: 'web-1' is an instance; bad_deploy needs a service",
        "faults[3].target: no service 'db' in the config",
    ]


def test_load_from_a_file_and_report_bad_yaml(tmp_path: Path) -> None:
    good = tmp_path / "s.yaml"
    good.write_text("name: file\nseed: 3\nfaults:\n  - {at: 2m, kind: bad_deploy, target: web}\n")
    assert load_scenario(good).faults[0].kind == "bad_deploy"
    assert load_scenario(str(good)).name == "file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")


def test_unknown_builtin_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="built-in scenarios: demo"):
        load_scenario("nonesuch")


def test_the_builtin_demo_ships_with_its_config() -> None:
    assert "demo" in builtin_scenarios()
    scenario = load_scenario("demo")
    config = load_builtin_config("demo")
    assert "restart-crashed-instance" in read_builtin("demo-config.yaml")
    World(config, scenario)  # every target exists

    services = {s.name: s for s in config.services}
    assert services["checkout"].tier == "critical"
    assert services["checkout"].autonomy.name == "APPROVE"
    assert services["checkout"].instances == ["checkout-1", "checkout-2", "checkout-3"]
    assert services["payments"].autonomy.name == "ACT"
    assert services["search"].instances == [f"search-{n}" for n in range(1, 5)]
    assert config.correlation.group_by == ["service", "alertname", "instance"]
    assert config.correlation.group_wait == timedelta(seconds=30)
    runbooks = {r.name: r for r in config.runbooks}
    assert set(runbooks) == {
        "restart-crashed-instance",
        "rollback-bad-deploy",
        "restart-leaking-instance",
    }
    assert not any("HighLatency" in r.when for r in config.runbooks)
    assert config.policy.approvals.timeout == timedelta(minutes=10)
    assert [t.notify for t in config.escalation.default] == [["sre-primary"], ["sre-lead"]]

    kinds = [f.kind for f in scenario.faults]
    assert len(kinds) >= 7
    assert kinds.count("instance_crash") >= 3
    assert {"bad_deploy", "memory_leak", "dependency_latency", "flapping"} <= set(kinds)
    end = scenario.duration
    assert any(c.end == end and c.end - c.start >= timedelta(hours=1) for c in scenario.control)


def test_the_demo_config_file_is_a_valid_onduty_config() -> None:
    path = Path(__file__).parents[2] / "src/onduty/sim/scenarios/demo-config.yaml"
    assert load_config(path).version == load_builtin_config("demo").version


FLEET: dict[str, Any] = {
    "services": [
        {
            "name": "web",
            "tier": "critical",
            "regions": ["eu-west", "us-east"],
            "instances": 4,
            "depends_on": ["db"],
        },
        {"name": "db", "tier": "high", "region": "eu-west", "instances": ["db-a", "db-b"]},
    ]
}


def test_a_fleet_replaces_the_config_services(small_config: Config) -> None:
    scenario = parse_scenario({**BASE, "fleet": FLEET})
    config = scenario.apply_fleet(small_config)
    assert [(s.name, s.tier, s.region, s.instances) for s in config.services] == [
        ("web", "critical", "eu-west", ["web-1", "web-2", "web-3", "web-4"]),
        ("db", "high", "eu-west", ["db-a", "db-b"]),
    ]
    assert config.services[0].autonomy.name == "ACT"  # lent by the config's web
    assert config.version != small_config.version
    world = World(small_config, scenario)
    assert [i.region for i in world.fleet.instances_of("web")] == [
        "eu-west",
        "us-east",
        "eu-west",
        "us-east",
    ]
    assert world.fleet.callers_of("db") == ["web"]
    assert parse_scenario(BASE).apply_fleet(small_config) is small_config


def test_fleet_problems_name_the_field() -> None:
    bad = {
        "services": [
            {"name": "web", "instances": 2, "depends_on": ["nope", "web"]},
            {"name": "api", "instances": ["web-1"]},
        ]
    }
    found = problems({**BASE, "fleet": bad})
    assert "fleet.services[1].instances: 'web-1' already belongs to service 'web'" in found
    assert any(p.startswith("fleet.services[0].depends_on[0]: no service 'nope'") for p in found)
    assert "fleet.services[0].depends_on[1]: a service cannot depend on itself" in found


def test_planned_faults_are_the_fixed_faults() -> None:
    faults = [{"at": "1m", "kind": "instance_crash", "target": "web-1"}]
    scenario = parse_scenario({**BASE, "faults": faults})
    assert [(f.kind, f.target) for f in scenario.planned_faults()] == [("instance_crash", "web-1")]


def drawn(**fault: Any) -> Scenario:
    return parse_scenario({**BASE, "fleet": FLEET, "faults": [fault]})


def test_drawn_faults_are_the_same_for_the_same_seed_and_stay_in_their_window() -> None:
    spec = {"kind": "instance_crash", "target": {"service": "web"}, "count": 5,
            "between": ["1h", "2h"]}  # fmt: skip
    first = drawn(**spec).planned_faults()
    assert first == drawn(**spec).planned_faults()
    assert len(first) == 5
    assert all(timedelta(hours=1) <= f.at < timedelta(hours=2) for f in first if f.at)
    assert [f.at for f in first] == sorted(f.at for f in first if f.at)
    assert {f.target for f in first} <= {"web-1", "web-2", "web-3", "web-4"}
    other = parse_scenario({**BASE, "seed": 2, "fleet": FLEET, "faults": [spec]})
    assert other.planned_faults() != first


def test_selectors_pick_targets_of_the_right_kind() -> None:
    by_region = drawn(kind="instance_crash", target={"region": "us-east"}, count=20)
    assert {f.target for f in by_region.planned_faults()} == {"web-2", "web-4"}
    by_tier = drawn(kind="bad_deploy", target={"tier": "high"}, count=5)
    assert {f.target for f in by_tier.planned_faults()} == {"db"}
    anywhere = drawn(kind="region_outage", target="any", count=10)
    assert {f.target for f in anywhere.planned_faults()} == {"eu-west", "us-east"}
    wedged = drawn(kind="dependency_outage", target="any", count=3)
    assert {f.target for f in wedged.planned_faults()} == {"db"}  # the one with callers
    signals = drawn(kind="stale_signals", target="any", at="1m")
    assert [f.target for f in signals.planned_faults()] == ["any"]  # the whole pipeline
    fixed = drawn(kind="instance_crash", target="db-a", at="5m")
    assert [(f.target, f.at) for f in fixed.planned_faults()] == [("db-a", timedelta(minutes=5))]


def test_a_rate_draws_about_that_many_per_hour() -> None:
    counts = [
        len(
            parse_scenario(
                {**BASE, "seed": seed, "fleet": FLEET,
                 "faults": [{"kind": "instance_crash", "target": "any", "rate": "2/h"}]}
            ).planned_faults()
        )
        for seed in range(40)
    ]  # fmt: skip
    assert 9 < sum(counts) / len(counts) < 15  # 2/h over 6h


def test_a_selector_that_matches_nothing_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"faults\[0\].target: no target of instance_crash"):
        drawn(kind="instance_crash", target={"region": "mars"}, count=1).planned_faults()


def test_drawn_times_avoid_the_control_periods() -> None:
    scenario = parse_scenario(
        {**BASE, "fleet": FLEET, "control": [{"from": "1h", "to": "6h"}],
         "faults": [{"kind": "instance_crash", "target": "any", "count": 30}]}
    )  # fmt: skip
    assert all(f.at is not None and f.at < timedelta(hours=1) for f in scenario.planned_faults())


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"kind": "instance_crash", "target": "a"}, "faults[0].at: give `at`"),
        ({"kind": "instance_crash", "target": "a", "at": "1m", "count": 2},
         "faults[0].at: a drawn fault"),
        ({"kind": "instance_crash", "target": "a", "count": 2, "rate": 1},
         "faults[0].rate: give `count` or `rate`, not both"),
        ({"kind": "instance_crash", "target": "a", "at": "1m", "between": ["1m", "2m"]},
         "faults[0].between: only a drawn fault"),
        ({"kind": "instance_crash", "target": "a", "count": 1, "between": ["1m", "7h"]},
         "faults[0].between: 7h is after the end"),
        ({"kind": "instance_crash", "target": "a", "rate": "often"},
         "faults[0].rate: 'often' is not a rate"),
    ],
)  # fmt: skip
def test_drawn_fault_problems(fault: dict[str, Any], expected: str) -> None:
    assert any(p.startswith(expected) for p in problems({**BASE, "faults": [fault]})), problems(
        {**BASE, "faults": [fault]}
    )


def test_response_times_drawn_have_their_median_and_p90() -> None:
    import random

    from onduty.sim.scenario import ResponseTime

    spread = ResponseTime.model_validate({"median": "2m", "p90": "6m"})
    rng = random.Random(1)
    draws = sorted(spread.sample(rng).total_seconds() for _ in range(4000))
    assert 110 < draws[2000] < 130
    assert 330 < draws[3600] < 390


def test_people_inherit_on_call_settings_and_may_be_away() -> None:
    from onduty.events import Event
    from onduty.sim.oncall import OnCall

    scenario = parse_scenario(
        {**BASE, "on_call": {"approve_after": {"median": "2m", "p90": "4m"}, "away": 1.0},
         "people": [{"name": "carol", "away": 0.0}, {"name": "dan", "roles": ["viewer"]}]}
    )  # fmt: skip
    roster = scenario.roster()
    assert [(p.name, p.away, p.fix_after) for p in roster] == [
        ("carol", 0.0, timedelta(minutes=20)),
        ("dan", 1.0, timedelta(minutes=20)),
    ]
    people = OnCall(scenario, DEFAULT_START, timedelta(seconds=15))
    asked = Event(
        id="e1", seq=1, stream="s", ts=DEFAULT_START, type="ApprovalRequested", actor="onduty",
        data={"approval_id": "a1", "required": 2},
    )  # fmt: skip
    people.feed(asked)
    assert [person for _, person in people._grants] == ["carol"]  # dan holds no approver role


def test_people_fix_the_true_cause_or_wait_when_nothing_fixes_it() -> None:
    from onduty.sim.oncall import OnCall

    scenario = parse_scenario(
        {**BASE, "fleet": FLEET, "faults": [
            {"at": "10m", "kind": "dependency_outage", "target": "db"},
            {"at": "20m", "kind": "region_outage", "target": "us-east"},
            {"at": "30m", "kind": "deploy_leak", "target": "web"},
        ]}
    )  # fmt: skip
    people = OnCall(scenario, DEFAULT_START, timedelta(seconds=15))
    at = DEFAULT_START + timedelta(hours=1)
    assert people.diagnose({"alertname": "HighErrorRate", "service": "web"}, at) == (
        "service.restart",
        "db",
    )
    down = {"alertname": "InstanceDown", "service": "web", "instance": "web-2", "region": "us-east"}
    assert people.diagnose(down, at) is None  # a region outage ends by itself
    leak = {"alertname": "HighMemoryUsage", "service": "web", "instance": "web-1"}
    assert people.diagnose(leak, at) == ("deploy.rollback", "web")
    crash = {"alertname": "InstanceDown", "service": "db", "instance": "db-a", "region": "eu-west"}
    assert people.diagnose(crash, at) == ("process.restart", "db-a")  # no fault: the obvious
