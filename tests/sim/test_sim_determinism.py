"""Same seed and same actions at the same times: the same signals, byte for byte. Another
seed: other noise, the same faults. And `rebuild` puts a world back where it was."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onduty.config import Config
from onduty.events import Signal
from onduty.sim import (
    DEFAULT_START,
    AppliedRecord,
    Scenario,
    World,
    load_builtin_config,
    load_scenario,
)

T0 = DEFAULT_START
ScenarioFactory = Callable[..., Scenario]


def dump(signals: list[Signal]) -> list[bytes]:
    return [s.model_dump_json().encode() for s in signals]


def full_run(config: Config, scenario: Scenario) -> tuple[World, list[Signal]]:
    world = World(config, scenario)
    return world, world.advance(world.end)


def test_the_demo_is_byte_identical_for_the_same_seed() -> None:
    config, scenario = load_builtin_config("demo"), load_scenario("demo")
    first_world, first = full_run(config, scenario)
    second_world, second = full_run(config, scenario)
    assert len(first) > 50
    assert dump(first) == dump(second)
    assert first_world.snapshot() == second_world.snapshot()


def test_another_seed_changes_the_noise_not_the_faults() -> None:
    config, scenario = load_builtin_config("demo"), load_scenario("demo")
    world, signals = full_run(config, scenario)
    other_world, other = full_run(config, scenario.model_copy(update={"seed": scenario.seed + 1}))
    assert dump(signals) != dump(other)
    assert world.faults == other_world.faults
    memory = [i.memory_pct for i in world.fleet.instances.values()]
    other_memory = [i.memory_pct for i in other_world.fleet.instances.values()]
    assert memory != other_memory
    # The alerts themselves (what fired, when) do not depend on the noise.
    assert [(s.fingerprint, s.status, s.starts_at) for s in signals] == [
        (s.fingerprint, s.status, s.starts_at) for s in other
    ]


FAULTS: list[dict[str, Any]] = [
    {"at": "3m", "kind": "instance_crash", "target": "web-1"},
    {"at": "6m", "kind": "bad_deploy", "target": "api"},
    {"at": "9m", "kind": "memory_leak", "target": "web-2"},
    {"at": "15m", "kind": "dependency_latency", "target": "web", "duration": "10m"},
    {"at": "20m", "kind": "flapping", "target": "api-2", "duration": "12m", "period": "2m"},
    {"at": "40m", "kind": "instance_crash", "target": "web-3"},
]
ACTIONS = [
    ("process.restart", "web-1"),
    ("process.restart", "web-2"),
    ("process.restart", "web-3"),
    ("process.restart", "api-2"),
    ("deploy.rollback", "api"),
    ("deploy.rollback", "web"),
    ("service.scale_out", "web"),
    ("service.scale_out", "api"),
]


def drive(world: World, actions: list[AppliedRecord], end: datetime) -> list[Signal]:
    """Advance eval step by eval step to `end`, applying `actions` (sorted) at their times."""
    out: list[Signal] = []
    pending = list(actions)
    t = world.now
    while True:
        while pending and pending[0][0] <= t:
            at, action, target, params, command_id = pending.pop(0)
            out += world.advance(at)
            world.apply(action, target, params, command_id, at)
        out += world.advance(t)
        if t >= end:
            return out
        t = min(t + world.eval_interval, end)


def scripted(offsets: list[tuple[int, int]]) -> list[AppliedRecord]:
    records: list[AppliedRecord] = []
    for number, (seconds, which) in enumerate(sorted(offsets)):
        action, target = ACTIONS[which]
        records.append((T0 + timedelta(seconds=seconds), action, target, {}, f"cmd-{number}"))
    return records


def check_rebuild(
    config: Config, scenario: Scenario, actions: list[AppliedRecord], until: datetime
) -> None:
    end = T0 + scenario.duration
    before = [a for a in actions if a[0] <= until]
    after = [a for a in actions if a[0] > until]
    original = World(config, scenario)
    drive(original, before, until)
    rebuilt = World.rebuild(config, scenario, before, until)
    assert rebuilt.snapshot() == original.snapshot()
    after_original = drive(original, after, end)
    after_rebuilt = drive(rebuilt, after, end)
    assert dump(after_rebuilt) == dump(after_original)
    assert rebuilt.snapshot() == original.snapshot()


def test_rebuild_reproduces_state_and_the_stream_that_follows(
    small_config: Config, make_scenario: ScenarioFactory
) -> None:
    scenario = make_scenario(FAULTS, duration="1h")
    actions = scripted([(300, 0), (480, 4), (700, 6), (1000, 3), (2520, 1), (2600, 2)])
    for minutes in (0, 4, 11.5, 29, 43.25, 60):
        check_rebuild(small_config, scenario, actions, T0 + timedelta(minutes=minutes))


def test_a_firing_alert_lost_in_a_crash_comes_back_within_the_resend_interval(
    small_config: Config, make_scenario: ScenarioFactory
) -> None:
    scenario = make_scenario(FAULTS, duration="1h")
    until = T0 + timedelta(minutes=5, seconds=10)  # web-1 fired at 4m; that signal is lost
    world = World.rebuild(small_config, scenario, [], until)
    later = drive(world, [], until + scenario.resend_interval)
    assert any(s.labels.get("instance") == "web-1" and s.status == "firing" for s in later)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    offsets=st.lists(st.tuples(st.integers(0, 3599), st.integers(0, len(ACTIONS) - 1)), max_size=8),
    cut=st.integers(0, 3600),
)
def test_rebuild_at_any_point_matches_an_uninterrupted_run(
    small_config: Config,
    make_scenario: ScenarioFactory,
    offsets: list[tuple[int, int]],
    cut: int,
) -> None:
    scenario = make_scenario(FAULTS, duration="1h")
    check_rebuild(small_config, scenario, scripted(offsets), T0 + timedelta(seconds=cut))
