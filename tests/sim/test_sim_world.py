"""The world's actuators: idempotent by command id, honest about wrong actions, strict about
time; and the signal stream does not depend on how finely the caller slices time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from onduty.sim import ACTIONS, DEFAULT_START, ActionResult, World

T0 = DEFAULT_START
WorldFactory = Callable[..., World]


def m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_apply_is_idempotent_by_command_id(make_world: WorldFactory) -> None:
    world = make_world([{"at": "1m", "kind": "instance_crash", "target": "web-1"}])
    world.advance(m(3))
    first = world.apply("process.restart", "web-1", {}, "cmd-1", m(3))
    assert first.ok
    second = world.apply("process.restart", "web-1", {}, "cmd-1", m(4))
    assert second == first
    assert world.fleet.instances["web-1"].restarts == 1
    assert len(world.actions) == 1
    assert world.check("cmd-1") == first
    assert world.check("never-applied") is None


def test_failed_applies_are_remembered_too(make_world: WorldFactory) -> None:
    world = make_world()
    result = world.apply("process.reboot", "web-1", {}, "x", m(1))
    assert not result.ok
    assert "process.reboot" in result.error
    assert all(action in result.error for action in ACTIONS)
    assert world.check("x") == result
    assert world.actions == []


@pytest.mark.parametrize(
    ("action", "target", "fragment"),
    [
        ("process.restart", "web-9", "unknown instance 'web-9'"),
        ("process.restart", "web", "'web' is a service"),
        ("deploy.rollback", "web-1", "'web-1' is an instance"),
        ("deploy.rollback", "nope", "unknown service 'nope'"),
        ("service.scale_out", "nope", "unknown service 'nope'"),
    ],
)
def test_unknown_targets_fail_with_a_clear_error(
    make_world: WorldFactory, action: str, target: str, fragment: str
) -> None:
    world = make_world()
    result = world.apply(action, target, {}, "c", m(1))
    assert result == ActionResult(ok=False, output="", error=result.error)
    assert fragment in result.error
    assert world.actions == []


def test_wrong_actions_are_recorded(make_world: WorldFactory) -> None:
    world = make_world(
        [
            {"at": "1m", "kind": "instance_crash", "target": "web-2"},
            {"at": "1m", "kind": "bad_deploy", "target": "api"},
        ]
    )
    world.advance(m(2))
    assert world.healthy("web-1", m(2))
    assert not world.healthy("web-2", m(2))
    assert not world.healthy("web", m(2))  # one of its instances has an active fault
    assert not world.healthy("api-1", m(2))  # its service has an active fault
    world.apply("process.restart", "web-1", {}, "healthy-restart", m(2))
    # A restart of a healthy instance really takes it down while it boots.
    assert not world.healthy("web-1", m(2) + timedelta(seconds=10))
    world.apply("process.restart", "web-2", {}, "needed-restart", m(2))
    world.apply("deploy.rollback", "api", {}, "needed-rollback", m(2))
    world.advance(m(3))
    world.apply("deploy.rollback", "web", {}, "healthy-rollback", m(3))
    assert [(a.command_id, a.target_was_healthy) for a in world.actions] == [
        ("healthy-restart", True),
        ("needed-restart", False),
        ("needed-rollback", False),
        ("healthy-rollback", True),
    ]
    assert [a.command_id for a in world.wrong_actions] == ["healthy-restart", "healthy-rollback"]
    assert world.actions[0].at == m(2)


def test_healthy_rejects_unknown_targets(make_world: WorldFactory) -> None:
    with pytest.raises(KeyError):
        make_world().healthy("mystery", m(0))


def test_scale_out_adds_a_booting_instance(make_world: WorldFactory) -> None:
    world = make_world()
    result = world.apply("service.scale_out", "web", {}, "so-1", m(1))
    assert result.ok and "web-4" in result.output
    assert world.fleet.services["web"].instances[-1] == "web-4"
    assert not world.healthy("web-4", m(1) + timedelta(seconds=5))
    assert world.advance(m(10)) == []
    assert world.healthy("web-4", m(10))
    assert world.fleet.instances["web-4"].up
    assert world.actions[0].target_was_healthy is True


def test_time_cannot_go_backwards_and_must_be_aware(make_world: WorldFactory) -> None:
    world = make_world()
    world.advance(m(5))
    with pytest.raises(ValueError, match="backwards"):
        world.advance(m(4))
    with pytest.raises(ValueError, match="backwards"):
        world.apply("process.restart", "web-1", {}, "late", m(4))
    with pytest.raises(ValueError, match="time zone"):
        world.advance(datetime(2026, 1, 5, 10, 0))  # naive on purpose


def test_apply_keeps_the_signals_emitted_while_moving_time(make_world: WorldFactory) -> None:
    world = make_world([{"at": "1m", "kind": "instance_crash", "target": "web-1"}])
    world.apply("service.scale_out", "api", {}, "so", m(3))  # moves time without advance
    signals = world.advance(m(3))
    assert [(s.status, s.labels["instance"]) for s in signals] == [("firing", "web-1")]


def test_the_stream_does_not_depend_on_how_time_is_sliced(make_world: WorldFactory) -> None:
    faults = [
        {"at": "2m", "kind": "instance_crash", "target": "web-1"},
        {"at": "7m", "kind": "bad_deploy", "target": "api"},
        {"at": "20m", "kind": "flapping", "target": "web-3", "duration": "20m"},
    ]
    coarse = make_world(faults)
    fine = make_world(faults)
    coarse_stream = coarse.advance(m(12))
    coarse.apply("process.restart", "web-1", {}, "c", m(12))
    coarse_stream += coarse.advance(m(60))

    fine_stream = []
    t = T0
    applied = False
    while t < m(60):
        fine_stream += fine.advance(t)
        if not applied and t + timedelta(seconds=7) > m(12):
            fine_stream += fine.advance(m(12))
            fine.apply("process.restart", "web-1", {}, "c", m(12))
            applied = True
        t += timedelta(seconds=7)
    fine_stream += fine.advance(m(60))
    assert [s.model_dump_json() for s in fine_stream] == [
        s.model_dump_json() for s in coarse_stream
    ]
    assert fine.snapshot() == coarse.snapshot()


def test_each_action_is_judged_right_wrong_or_harmful(make_world: WorldFactory) -> None:
    world = make_world(
        [
            {"at": "1m", "kind": "instance_crash", "target": "web-2"},
            {"at": "1m", "kind": "bad_deploy", "target": "api"},
        ]
    )
    world.advance(m(4))
    world.apply("process.restart", "web-2", {}, "fix", m(4))
    world.apply("process.restart", "api-1", {}, "restart-for-a-deploy", m(4))
    world.apply("process.restart", "web-1", {}, "healthy", m(4))
    world.apply("deploy.rollback", "api", {}, "rollback", m(4))
    verdicts = {a.command_id: (a.verdict, a.reason) for a in world.actions}
    assert verdicts["fix"] == ("right", "process.restart web-2 is the fix of F01 (instance_crash)")
    assert verdicts["restart-for-a-deploy"][0] == "wrong"
    assert "its fix is deploy.rollback api" in verdicts["restart-for-a-deploy"][1]
    assert verdicts["healthy"] == ("harmful", "web-1 was healthy: no active fault touched it")
    assert verdicts["rollback"][0] == "right"


def test_an_action_that_leaves_a_service_without_capacity_is_harmful(
    make_world: WorldFactory,
) -> None:
    world = make_world([{"at": "1m", "kind": "bad_deploy", "target": "api"}])
    world.advance(m(4))
    world.apply("process.restart", "api-1", {}, "first", m(4))
    world.apply("process.restart", "api-2", {}, "second", m(4))
    assert [a.verdict for a in world.actions] == ["wrong", "harmful"]
    assert "api was left with 0 of 2 instances up" in world.actions[1].reason


def test_slo_minutes_lost_count_degraded_steps_per_service(make_world: WorldFactory) -> None:
    world = make_world([{"at": "10m", "kind": "bad_deploy", "target": "api"}])
    world.advance(m(9.9))
    assert world.slo_minutes_lost() == {"api": 0.0, "web": 0.0}
    world.advance(m(20))
    lost = world.slo_minutes_lost()
    assert lost["web"] == 0.0
    assert 9.5 <= lost["api"] <= 10.25  # every 15 s step from 10m to 20m
    world.apply("deploy.rollback", "api", {}, "rollback", m(20))
    world.advance(m(40))
    assert world.slo_minutes_lost()["api"] == lost["api"]
    assert world.take_malformed() == []
