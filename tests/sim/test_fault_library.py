"""The fault library beyond the first five kinds: each changes the fleet (or what the alerting
pipeline delivers, or what the actuators do) the way its ground truth says, raises the alerts
it should, and is healed by its right fix and nothing else."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from onduty.config import Config, ConfigError, parse_config
from onduty.events import Signal
from onduty.sense import IngestError, parse_alertmanager
from onduty.sim import DEFAULT_START, World, parse_scenario
from onduty.sim.faults import FAULT_KINDS

T0 = DEFAULT_START
FLEET: dict[str, Any] = {
    "services": [
        {
            "name": "web",
            "tier": "critical",
            "regions": ["eu-west", "us-east"],
            "instances": 4,
            "depends_on": ["db"],
        },
        {"name": "api", "tier": "high", "region": "eu-west", "instances": 2, "depends_on": ["db"]},
        {"name": "db", "tier": "high", "region": "eu-west", "instances": 2},
        {"name": "batch", "tier": "low", "region": "us-east", "instances": 2},
    ]
}
CONFIG: Config = parse_config({})


def m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def world_with(*faults: dict[str, Any], seed: int = 3, duration: str = "2h") -> World:
    scenario = parse_scenario(
        {"name": "lib", "seed": seed, "duration": duration, "fleet": FLEET, "faults": list(faults)}
    )
    return World(CONFIG, scenario)


def run(world: World, until: datetime) -> list[tuple[datetime, Signal]]:
    out: list[tuple[datetime, Signal]] = []
    t = world.now
    while t <= until:
        out.extend((t, s) for s in world.advance(t))
        t += world.eval_interval
    return out


def fired(stream: list[tuple[datetime, Signal]], alertname: str) -> dict[str, datetime]:
    """Who (instance, endpoint or service) fired `alertname`, and when first."""
    found: dict[str, datetime] = {}
    for at, signal in stream:
        labels = signal.labels
        if labels["alertname"] == alertname and signal.status == "firing":
            who = labels.get("instance") or labels.get("endpoint") or labels["service"]
            found.setdefault(who, at)
    return found


def resolved(stream: list[tuple[datetime, Signal]], alertname: str) -> set[str]:
    return {
        s.labels.get("instance") or s.labels.get("endpoint") or s.labels["service"]
        for _, s in stream
        if s.labels["alertname"] == alertname and s.status == "resolved"
    }


def test_every_kind_states_its_ground_truth() -> None:
    assert len(FAULT_KINDS) >= 16
    targets = {"instance": "web-1", "service": "db", "region": "eu-west", "signals": "any"}
    faults = [
        {"at": "1m", "kind": kind, "target": targets[cls.scope]}
        for kind, cls in sorted(FAULT_KINDS.items())
    ]
    world = world_with(*faults)
    world.advance(m(2))
    for record in world.faults:
        assert record.cause, record.kind
        assert record.scope in ("instance", "service", "region", "signals")
    fixes = {record.kind: record.right_fix for record in world.faults}
    assert fixes["disk_full"] == "disk.cleanup web-1"
    assert fixes["dependency_outage"] == "service.restart db"
    assert fixes["deploy_leak"] == "deploy.rollback db"
    assert fixes["alert_storm"] == "deploy.rollback db"
    assert fixes["actuator_hang"] == "process.restart web-1"
    for kind in ("region_outage", "flapping", "dependency_latency", "stale_signals"):
        assert fixes[kind] is None


def test_disk_full_fires_and_only_a_cleanup_heals() -> None:
    world = world_with({"at": "5m", "kind": "disk_full", "target": "web-2"})
    stream = run(world, m(14))
    # 85% + 2%/min passes 95% after 5 minutes; `for: 1m`.
    assert fired(stream, "DiskFull") == {"web-2": m(11.25)}
    assert world.apply("process.restart", "web-2", {}, "restart", m(14)).ok
    # While it boots it exports nothing (the alert resolves); then the full disk is back.
    stream = run(world, m(16))
    assert fired(stream, "DiskFull") == {"web-2": m(15.5)}
    assert world.fleet.instances["web-2"].disk_pct > 95
    result = world.apply("disk.cleanup", "web-2", {}, "cleanup", m(16))
    assert result.ok and "freed" in result.output
    stream = run(world, m(18))
    assert resolved(stream, "DiskFull") == {"web-2"}
    assert fired(stream, "DiskFull") == {}
    fault = world.faults[0]
    assert (fault.cleared_by, fault.cleared_at) == ("cleanup", m(16))
    assert [(a.command_id, a.verdict) for a in world.actions] == [
        ("restart", "wrong"),
        ("cleanup", "right"),
    ]


def test_a_dependency_outage_alerts_from_the_callers_and_heals_by_restarting_it() -> None:
    world = world_with({"at": "5m", "kind": "dependency_outage", "target": "db"})
    stream = run(world, m(10))
    assert set(fired(stream, "HighErrorRate")) == {"web", "api"}
    assert [s for _, s in stream if s.labels["service"] == "db"] == []  # wedged, silently
    record = world.faults[0]
    assert record.signals_from == ("web", "api")
    assert "db is wedged" in record.cause

    assert world.apply("deploy.rollback", "web", {}, "rollback-caller", m(10)).ok
    stream = run(world, m(12))
    assert resolved(stream, "HighErrorRate") == set()
    assert world.apply("service.restart", "db", {}, "restart-db", m(12)).ok
    assert world.fleet.instances["db-1"].restarts == world.fleet.instances["db-2"].restarts == 1
    stream = run(world, m(16))
    assert resolved(stream, "HighErrorRate") == {"web", "api"}
    fault = world.faults[0]
    assert (fault.cleared_by, fault.cleared_at) == ("restart-db", m(12) + timedelta(seconds=20))
    verdicts = [(a.command_id, a.verdict) for a in world.actions]
    assert verdicts == [("rollback-caller", "wrong"), ("restart-db", "right")]


def test_a_dependency_outage_needs_callers() -> None:
    with pytest.raises(ConfigError, match="no service depends on 'batch'"):
        world_with({"at": "5m", "kind": "dependency_outage", "target": "batch"})


def test_a_region_outage_downs_every_instance_there_until_it_ends_by_itself() -> None:
    world = world_with(
        {"at": "5m", "kind": "region_outage", "target": "us-east", "duration": "20m"}
    )
    stream = run(world, m(8))
    assert set(fired(stream, "InstanceDown")) == {"web-2", "web-4", "batch-1", "batch-2"}
    assert world.apply("process.restart", "web-2", {}, "restart-there", m(8)).ok
    assert world.actions[0].verdict == "wrong"
    assert "no action fixes it" in world.actions[0].reason
    stream = run(world, m(24.75))
    assert resolved(stream, "InstanceDown") == set()
    stream = run(world, m(30))
    assert resolved(stream, "InstanceDown") == {"web-2", "web-4", "batch-1", "batch-2"}
    fault = world.faults[0]
    assert (fault.cleared_by, fault.cleared_at, fault.right_fix) == ("self", m(25), None)
    assert fault.signals_from == ("web-2", "web-4", "batch-1", "batch-2", "web", "batch")
    lost = world.slo_minutes_lost()
    assert lost["batch"] == pytest.approx(20.0, abs=0.3)  # none of batch was up
    assert lost["web"] == 0.0  # half of web kept serving


def test_an_alert_storm_raises_an_alert_per_endpoint_and_a_rollback_ends_it() -> None:
    world = world_with({"at": "5m", "kind": "alert_storm", "target": "api", "size": 300})
    stream = run(world, m(9))
    endpoints = fired(stream, "EndpointErrors")
    assert len(endpoints) == 300
    assert len({s.fingerprint for _, s in stream}) == 301  # and the service's HighErrorRate
    assert set(fired(stream, "HighErrorRate")) == {"api"}
    assert world.apply("deploy.rollback", "api", {}, "rollback", m(9)).ok
    stream = run(world, m(12))
    assert len(resolved(stream, "EndpointErrors")) == 300
    assert world.firing() == []
    assert world.faults[0].cleared_by == "rollback"
    assert world.actions[0].verdict == "right"


def test_a_release_that_leaks_comes_back_after_a_restart_and_only_a_rollback_heals() -> None:
    world = world_with({"at": "5m", "kind": "deploy_leak", "target": "api"})
    stream = run(world, m(40))
    first = fired(stream, "HighMemoryUsage")
    assert set(first) == {"api-1", "api-2"}
    assert all(m(20) < at < m(40) for at in first.values())
    assert world.apply("process.restart", "api-1", {}, "restart", m(40)).ok
    assert world.actions[0].verdict == "wrong"
    assert "its fix is deploy.rollback api" in world.actions[0].reason
    stream = run(world, m(42))
    assert "api-1" in resolved(stream, "HighMemoryUsage")
    stream = run(world, m(75))
    assert "api-1" in fired(stream, "HighMemoryUsage")  # it leaked back
    assert world.faults[0].cleared_at is None
    assert world.apply("deploy.rollback", "api", {}, "rollback", m(75)).ok
    stream = run(world, m(78))
    assert resolved(stream, "HighMemoryUsage") == {"api-1", "api-2"}
    assert world.faults[0].cleared_by == "rollback"


def test_a_hung_actuator_times_out_having_done_nothing() -> None:
    world = world_with({"at": "5m", "kind": "actuator_hang", "target": "web-1"})
    run(world, m(7))
    result = world.apply("process.restart", "web-1", {}, "cmd-1", m(7))
    assert not result.ok and "timed out" in result.error
    assert world.fleet.instances["web-1"].crashed
    assert world.actions == []
    assert world.apply("process.restart", "web-3", {}, "elsewhere", m(7)).ok  # others work
    assert world.apply("process.restart", "web-1", {}, "human-I1", m(8)).ok  # by hand
    run(world, m(9))
    assert world.faults[0].cleared_by == "human-I1"


def test_a_silently_failing_actuator_reports_success_and_changes_nothing() -> None:
    world = world_with({"at": "5m", "kind": "actuator_silent_failure", "target": "web-1"})
    run(world, m(7))
    result = world.apply("process.restart", "web-1", {}, "cmd-1", m(7))
    assert result.ok and "restarted web-1" in result.output
    run(world, m(10))
    assert world.fleet.instances["web-1"].crashed
    assert world.fleet.instances["web-1"].restarts == 0
    assert world.faults[0].cleared_at is None
    assert world.actions[0].verdict == "right"
    assert "changed nothing" in world.actions[0].reason
    assert world.apply("process.restart", "web-1", {}, "human-I1", m(10)).ok
    run(world, m(11))
    assert world.faults[0].cleared_by == "human-I1"


CRASH = {"at": "5m", "kind": "instance_crash", "target": "api-1"}


def test_stale_signals_arrive_late_and_otherwise_unchanged() -> None:
    plain = run(world_with(CRASH), m(30))
    stale = run(
        world_with(CRASH, {"at": "0m", "kind": "stale_signals", "target": "api", "delay": "3m"}),
        m(30),
    )
    assert [s for _, s in plain] == [s for _, s in stale]
    assert [at + timedelta(minutes=3) for at, _ in plain] == [at for at, _ in stale]


def test_duplicate_signals_arrive_twice() -> None:
    plain = run(world_with(CRASH), m(30))
    doubled = run(
        world_with(CRASH, {"at": "0m", "kind": "duplicate_signals", "target": "any"}), m(30)
    )
    assert [s for _, s in doubled] == [s for _, s in plain for _ in range(2)]


def test_clock_skew_shifts_timestamps_either_way() -> None:
    plain = run(world_with(CRASH), m(30))
    for skew, shift in (("-10m", timedelta(minutes=-10)), ("90s", timedelta(seconds=90))):
        world = world_with(CRASH, {"at": "0m", "kind": "clock_skew", "target": "any", "skew": skew})
        skewed = run(world, m(30))
        assert [at for at, _ in skewed] == [at for at, _ in plain]
        for (_, before), (_, after) in zip(plain, skewed, strict=True):
            assert before.starts_at is not None and after.starts_at == before.starts_at + shift


def test_malformed_signals_are_refused_by_the_webhook_parser() -> None:
    world = world_with(
        CRASH,
        {"at": "4m", "kind": "disk_full", "target": "db-1"},
        {"at": "0m", "kind": "malformed_signals", "target": "any", "fraction": 1.0},
    )
    assert run(world, m(25)) == []
    broken = world.take_malformed()
    assert len(broken) >= 4
    assert world.take_malformed() == []
    for payload in broken:
        with pytest.raises(IngestError):
            parse_alertmanager(json.dumps(payload).encode(), received_at=m(25))
    half = world_with(
        CRASH, {"at": "0m", "kind": "malformed_signals", "target": "any", "fraction": 0.5}
    )
    delivered = run(half, m(60))
    assert delivered and half.take_malformed()


def test_new_kinds_leave_the_rest_of_the_fleet_noise_alone() -> None:
    """Faults draw from generators of their own: the fleet's noise is the same with them."""
    plain = world_with(seed=11)
    plain.advance(m(30))
    for fault in (
        {"at": "1m", "kind": "deploy_leak", "target": "api"},
        {"at": "1m", "kind": "alert_storm", "target": "api", "size": 20},
        {"at": "1m", "kind": "malformed_signals", "target": "any"},
        {"at": "1m", "kind": "dependency_outage", "target": "db"},
    ):
        other = world_with(fault, seed=11)
        other.advance(m(30))
        assert other.fleet.instances["batch-1"] == plain.fleet.instances["batch-1"]
        assert other.snapshot()["rng"] == plain.snapshot()["rng"]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"kind": "region_outage", "target": "mars"}, "no instance runs in region 'mars'"),
        ({"kind": "stale_signals", "target": "web-1"}, "neither `any` nor a service"),
        ({"kind": "disk_full", "target": "web"}, "'web' is a service"),
    ],
)
def test_targets_are_checked_per_kind(fault: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        world_with({"at": "1m", **fault})


def test_kind_specific_settings_are_refused_on_other_kinds() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(
            {
                "name": "x",
                "seed": 1,
                "faults": [{"at": "1m", "kind": "instance_crash", "target": "a", "size": 3}],
            }
        )
    assert caught.value.problems == ["faults[0].size: only alert_storm faults take a size"]


EVERYTHING = (
    {"at": "2m", "kind": "stale_signals", "target": "any", "duration": "20m", "delay": "2m"},
    {"at": "3m", "kind": "malformed_signals", "target": "web", "duration": "30m"},
    {"at": "4m", "kind": "duplicate_signals", "target": "api", "duration": "25m"},
    {"at": "5m", "kind": "clock_skew", "target": "any", "duration": "30m", "skew": "-5m"},
    {"at": "5m", "kind": "actuator_silent_failure", "target": "web-1"},
    {"at": "6m", "kind": "dependency_outage", "target": "db"},
    {"at": "7m", "kind": "alert_storm", "target": "batch", "size": 30},
    {"at": "8m", "kind": "deploy_leak", "target": "api"},
    {"at": "9m", "kind": "disk_full", "target": "web-3"},
    {"at": "10m", "kind": "region_outage", "target": "us-east", "duration": "10m"},
    {
        "kind": "instance_crash",
        "target": {"tier": "critical"},
        "count": 3,
        "between": ["1m", "40m"],
    },
)
SCRIPT = (
    (7.5, "process.restart", "web-1"),
    (12, "service.restart", "db"),
    (13, "deploy.rollback", "batch"),
    (15.25, "disk.cleanup", "web-3"),
    (31, "process.restart", "api-2"),
)


def drive(world: World, until: float) -> str:
    """Run to `until` minutes with the script's actions; every signal and malformed payload,
    as bytes."""
    out: list[str] = []
    for number, (at, action, target) in enumerate(SCRIPT):
        if at <= until and m(at) >= world.now:
            out += [s.model_dump_json() for _, s in run(world, m(at))]
            world.apply(action, target, {}, f"cmd-{number}", m(at))
    out += [s.model_dump_json() for _, s in run(world, m(until))]
    out += [json.dumps(p, sort_keys=True) for p in world.take_malformed()]
    return "\n".join(out)


def test_every_kind_together_is_the_same_byte_for_byte_for_the_same_seed() -> None:
    first, second = world_with(*EVERYTHING), world_with(*EVERYTHING)
    assert drive(first, 60) == drive(second, 60)
    assert first.snapshot() == second.snapshot()
    assert drive(world_with(*EVERYTHING, seed=4), 60) != drive(world_with(*EVERYTHING), 60)


@pytest.mark.parametrize("cut", [6.5, 12.1, 21, 33])
def test_a_rebuilt_world_carries_on_as_the_original(cut: float) -> None:
    original = world_with(*EVERYTHING)
    drive(original, cut)
    original.advance(m(cut))
    done = [
        (m(at), action, target, {}, f"cmd-{n}")
        for n, (at, action, target) in enumerate(SCRIPT)
        if at <= cut
    ]
    rebuilt = World.rebuild(original.config, original.scenario, done, m(cut))
    original.take_malformed()
    rebuilt.take_malformed()
    assert rebuilt.snapshot() == original.snapshot()
    assert drive(rebuilt, 60) == drive(original, 60)
