"""Each fault kind really changes the fleet, raises its alert after `for:` and clears as it
should: by the action that heals it, or by itself, or not at all."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from onduty.events import Signal
from onduty.sim import DEFAULT_START, World

T0 = DEFAULT_START
WorldFactory = Callable[..., World]


def m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(world: World, until: datetime) -> list[tuple[datetime, Signal]]:
    """Advance eval step by eval step, tagging each signal with the time it was emitted."""
    out: list[tuple[datetime, Signal]] = []
    t = world.now
    while t <= until:
        out.extend((t, s) for s in world.advance(t))
        t += world.eval_interval
    return out


def firsts(stream: list[tuple[datetime, Signal]], alertname: str, status: str) -> list[datetime]:
    """Times of the first notification of each alert episode (re-sends excluded)."""
    seen: set[tuple[str, str, str]] = set()
    times = []
    for at, signal in stream:
        if signal.labels["alertname"] != alertname or signal.status != status:
            continue
        key = (signal.fingerprint, str(signal.starts_at), str(signal.ends_at))
        if key not in seen:
            seen.add(key)
            times.append(at)
    return times


def test_instance_crash_fires_after_one_minute_and_restart_heals_after_boot(
    make_world: WorldFactory,
) -> None:
    world = make_world([{"at": "5m", "kind": "instance_crash", "target": "web-2"}])
    assert run(world, m(5.75)) == []
    assert not world.healthy("web-2", m(5.75))
    assert world.fleet.instances["web-2"].crashed

    stream = run(world, m(6))
    assert [(s.status, s.labels["instance"]) for _, s in stream] == [("firing", "web-2")]
    signal = stream[0][1]
    assert signal.labels == {
        "alertname": "InstanceDown",
        "service": "web",
        "instance": "web-2",
        "region": "eu-west",
        "severity": "critical",
    }
    assert signal.starts_at == m(6)
    assert signal.source == "sim"

    # Nothing heals it by itself.
    run(world, m(7))
    assert world.faults[0].cleared_at is None

    result = world.apply("process.restart", "web-2", {}, "cmd-1", m(7))
    assert result.ok, result.error
    assert not world.healthy("web-2", m(7) + timedelta(seconds=19))
    stream = run(world, m(7.5))
    # Booting at 07:15, answering again at 07:30.
    assert [(at, s.status) for at, s in stream] == [(m(7.5), "resolved")]
    assert stream[0][1].ends_at == m(7.5)
    fault = world.faults[0]
    assert fault.cleared_by == "cmd-1"
    assert fault.cleared_at == m(7) + timedelta(seconds=20)
    assert world.healthy("web-2", m(7.5))
    assert world.actions[0].target_was_healthy is False


def test_bad_deploy_fires_after_two_minutes_and_only_rollback_heals(
    make_world: WorldFactory,
) -> None:
    world = make_world([{"at": "5m", "kind": "bad_deploy", "target": "api"}])
    before = world.fleet.services["api"].version
    run(world, m(5))
    assert world.fleet.services["api"].version != before
    assert world.fleet.services["api"].previous_version == before
    rate = world.fleet.service_error_rate("api")
    assert rate is not None and 0.2 < rate < 0.3

    stream = run(world, m(9))
    assert firsts(stream, "HighErrorRate", "firing") == [m(7)]

    assert world.apply("process.restart", "api-1", {}, "restart", m(9)).ok
    stream = run(world, m(10))
    assert firsts(stream, "HighErrorRate", "resolved") == []
    assert world.faults[0].cleared_at is None

    result = world.apply("deploy.rollback", "api", {}, "rollback", m(10))
    assert result.ok and before in result.output
    assert world.fleet.services["api"].version == before
    stream = run(world, m(11))
    assert firsts(stream, "HighErrorRate", "resolved") == [m(10.25)]
    fault = world.faults[0]
    assert (fault.cleared_by, fault.cleared_at) == ("rollback", m(10))

    again = world.apply("deploy.rollback", "api", {}, "rollback-2", m(11))
    assert not again.ok and "no previous version" in again.error


def test_memory_leak_grows_past_ninety_and_restart_resets_it(make_world: WorldFactory) -> None:
    world = make_world([{"at": "0m", "kind": "memory_leak", "target": "web-1"}])
    run(world, m(20))
    assert 70 < world.fleet.instances["web-1"].memory_pct < 80
    stream = run(world, m(39))
    # 55% + 1%/min passes 90% just after 35m; `for: 2m` makes it fire at 37m15s.
    assert firsts(stream, "HighMemoryUsage", "firing") == [m(37.25)]
    assert stream[-1][1].labels["instance"] == "web-1"

    assert world.apply("process.restart", "web-1", {}, "cmd-leak", m(40)).ok
    stream = run(world, m(50))
    assert firsts(stream, "HighMemoryUsage", "resolved") == [m(40.25)]
    assert firsts(stream, "HighMemoryUsage", "firing") == []
    assert world.fleet.instances["web-1"].memory_pct < 60
    fault = world.faults[0]
    assert (fault.cleared_by, fault.cleared_at) == ("cmd-leak", m(40) + timedelta(seconds=20))


def test_dependency_latency_clears_by_itself_and_actions_do_not_help(
    make_world: WorldFactory,
) -> None:
    world = make_world(
        [{"at": "5m", "kind": "dependency_latency", "target": "api", "duration": "20m"}]
    )
    stream = run(world, m(8))
    assert firsts(stream, "HighLatency", "firing") == [m(7)]
    p99 = world.fleet.service_latency_p99("api")
    assert p99 is not None and 2000 < p99 < 3000

    assert world.apply("process.restart", "api-1", {}, "r1", m(8)).ok
    assert world.apply("deploy.rollback", "api", {}, "rb", m(8)).ok
    assert world.apply("service.scale_out", "api", {}, "so", m(8)).ok
    stream = run(world, m(24.75))
    assert firsts(stream, "HighLatency", "resolved") == []
    assert world.faults[0].cleared_at is None
    assert not world.healthy("api", m(24.75))

    stream = run(world, m(30))
    assert firsts(stream, "HighLatency", "resolved") == [m(25)]
    fault = world.faults[0]
    assert (fault.cleared_by, fault.cleared_at) == ("self", m(25))
    assert world.healthy("api", m(30))


def test_flapping_alternates_and_restarts_do_not_stop_it(make_world: WorldFactory) -> None:
    world = make_world(
        [
            {
                "at": "5m",
                "kind": "flapping",
                "target": "web-3",
                "duration": "30m",
                "period": "4m",
            }
        ]
    )
    stream = run(world, m(6.5))
    assert world.apply("process.restart", "web-3", {}, "r1", m(6.5)).ok
    stream += run(world, m(60))
    fired = firsts(stream, "InstanceDown", "firing")
    resolved = firsts(stream, "InstanceDown", "resolved")
    # Down [5m, 7m), up [7m, 9m), down [9m, 11m) ... the last down phase is [33m, 35m).
    assert fired == [m(6 + 4 * k) for k in range(8)]
    assert resolved == [m(7 + 4 * k) for k in range(8)]
    fault = world.faults[0]
    assert (fault.cleared_by, fault.cleared_at) == ("self", m(35))
    assert world.actions[0].target_was_healthy is False
    assert world.healthy("web-3", m(60))


def test_fault_records_name_their_alerts(make_world: WorldFactory) -> None:
    world = make_world(
        [
            {"at": "1m", "kind": "instance_crash", "target": "web-1"},
            {"at": "1m", "kind": "bad_deploy", "target": "api"},
            {"at": "2m", "kind": "memory_leak", "target": "web-2"},
            {"at": "3m", "kind": "dependency_latency", "target": "web"},
            {"at": "4m", "kind": "flapping", "target": "api-1"},
        ]
    )
    world.advance(m(5))
    assert [(f.id, f.kind, f.target, f.service, f.alertnames) for f in world.faults] == [
        ("F01", "instance_crash", "web-1", "web", ("InstanceDown",)),
        ("F02", "bad_deploy", "api", "api", ("HighErrorRate",)),
        ("F03", "memory_leak", "web-2", "web", ("HighMemoryUsage",)),
        ("F04", "dependency_latency", "web", "web", ("HighLatency",)),
        ("F05", "flapping", "api-1", "api", ("InstanceDown",)),
    ]
    assert all(f.cleared_at is None for f in world.faults)


def test_faults_are_injected_in_time_order_with_ids_from_the_scenario(
    make_world: WorldFactory,
) -> None:
    world = make_world(
        [
            {"at": "30m", "kind": "instance_crash", "target": "web-1"},
            {"at": "10m", "kind": "instance_crash", "target": "web-2"},
        ]
    )
    world.advance(m(20))
    assert [f.id for f in world.faults] == ["F02"]
    world.advance(m(40))
    assert [(f.id, f.injected_at) for f in world.faults] == [("F02", m(10)), ("F01", m(30))]
