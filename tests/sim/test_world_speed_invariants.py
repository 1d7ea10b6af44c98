"""The world's evaluation step takes shortcuts (noise drawn in one batch, alert series built
once per fleet shape, per-service figures computed once per step, healed faults no longer
ticked); none of them may change a signal or a random draw. These tests pin the signals of
whole runs, with actions that change the fleet's shape, to what they were before the shortcuts,
and check each shortcut against the plain computation it replaces."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import timedelta
from pathlib import Path

import pytest

from onduty.sim import AlertEvaluator, Fleet, World
from onduty.sim.alerts import Rule, _Series, fingerprint
from onduty.sim.fleet import _BATCH_GAUSS, _standard_normals
from onduty.sim.lab import load_setup

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def _digest(world: World, actions: list[tuple[timedelta, str, str]]) -> str:
    """sha256 of every signal and malformed payload a run emits, its final snapshot and the
    state of its generator, with `actions` applied at their offsets from the start."""
    digest = hashlib.sha256()
    for number, (offset, action, target) in enumerate(actions):
        at = world.start + offset
        for signal in world.advance(at):
            digest.update(signal.model_dump_json().encode())
        result = world.apply(action, target, {}, f"cmd-{number}", at)
        digest.update(repr(result).encode())
    for signal in world.advance(world.end):
        digest.update(signal.model_dump_json().encode())
    digest.update(json.dumps(world.take_malformed(), sort_keys=True, default=str).encode())
    digest.update(json.dumps(world.snapshot(), sort_keys=True, default=str).encode())
    digest.update(repr(world.rng.getstate()).encode())
    return digest.hexdigest()[:16]


def _world(ref: str, seed: int) -> World:
    scenario, config = load_setup(ref, None)
    return World(config, scenario.model_copy(update={"seed": seed}))


# Digests taken with the world as it was before its step got its shortcuts.
PINNED = [
    ("demo", 1, [], "0e101aad263e97fa"),
    ("demo", 7, [], "3805d14ac6c8d34f"),
    (
        "demo",
        3,
        [
            (timedelta(minutes=5), "service.scale_out", "search"),
            (timedelta(minutes=40), "process.restart", "checkout-2"),
            (timedelta(minutes=70), "service.scale_out", "payments"),
        ],
        "10299e745f486a98",
    ),
    (
        str(EXAMPLES / "alert_storm.yaml"),
        2,
        [
            (timedelta(minutes=20), "service.scale_out", "api"),
            (timedelta(minutes=25), "deploy.rollback", "api"),
        ],
        "9814c3ef0ef3a8af",
    ),
    (str(EXAMPLES / "malformed_signals.yaml"), 4, [], "432f54fe97573b49"),
    (str(EXAMPLES / "dependency_outage.yaml"), 5, [], "f35b5c0ad7464ef6"),
]


@pytest.mark.parametrize(("ref", "seed", "actions", "expected"), PINNED)
def test_runs_emit_exactly_the_signals_they_always_did(
    ref: str, seed: int, actions: list[tuple[timedelta, str, str]], expected: str
) -> None:
    assert _digest(_world(ref, seed), actions) == expected


@pytest.mark.parametrize("spare", [False, True])
@pytest.mark.parametrize("count", [0, 1, 2, 3, 30, 31])
def test_batched_normals_are_the_draws_of_gauss(spare: bool, count: int) -> None:
    batched, plain = random.Random(99), random.Random(99)
    if spare:  # a draw left over from an odd number of gauss calls
        batched.gauss(0, 1)
        plain.gauss(0, 1)
    draws = _standard_normals(batched, count)
    assert [0 + z * 0.8 for z in draws] == [plain.gauss(0, 0.8) for _ in range(count)]
    assert batched.getstate() == plain.getstate()
    assert batched.gauss(0, 1) == plain.gauss(0, 1)


def test_this_python_takes_the_batched_path() -> None:
    assert _BATCH_GAUSS


class _Checked(AlertEvaluator):
    """The evaluator, checking at every step that its cached series are what `Rule.series`
    gives afresh: the same labels, values and fingerprints, in the same order."""

    def _breached(self, index: int, rule: Rule, fleet: Fleet) -> list[tuple[_Series, float]]:
        found = super()._breached(index, rule, fleet)
        expected = [
            (labels, value)
            for labels, value in rule.series(fleet)
            if value is not None and rule.breached(value)
        ]
        assert [(series.labels, value) for series, value in found] == expected
        assert [series.key for series, _ in found] == [
            fingerprint(labels) for labels, _ in expected
        ]
        return found


def test_cached_series_follow_the_fleet_as_it_grows() -> None:
    world = _world(str(EXAMPLES / "alert_storm.yaml"), 1)
    world.evaluator = _Checked(resend_interval=world.resend_interval)
    before = set(world.fleet.instances)
    for minutes, action, target in [
        (17, "service.scale_out", "api"),
        (19, "service.scale_out", "api"),
        (30, "deploy.rollback", "api"),
    ]:
        at = world.start + timedelta(minutes=minutes)
        world.advance(at)
        assert world.apply(action, target, {}, f"c{minutes}", at).ok
    added = sorted(set(world.fleet.instances) - before)
    assert len(added) == 2
    # A new instance that dies raises its own alert, with its own labels.
    world.fleet.crash(added[-1])
    signals = world.advance(world.start + timedelta(minutes=40))
    down = [s.labels for s in signals if s.labels["alertname"] == "InstanceDown"]
    assert {labels["instance"] for labels in down} == {added[-1]}
    world.advance(world.end)


def test_held_figures_are_the_figures_of_the_moment() -> None:
    world = _world("demo", 1)
    world.advance(world.start + timedelta(minutes=50))
    fleet = world.fleet
    plain = {s: fleet.service_health(s) for s in fleet.services}
    fleet.hold()
    try:
        held = {s: fleet.service_health(s) for s in fleet.services}
        assert held == plain
        for service, (up, count, errors, latency) in held.items():
            assert fleet.service_error_rate(service) == errors
            assert fleet.service_latency_p99(service) == latency
            members = fleet.instances_of(service)
            assert (up, count) == (sum(1 for i in members if i.up), len(members))
    finally:
        fleet.release()
    first = next(iter(fleet.services))
    fleet.crash(fleet.services[first].instances[0])
    assert fleet.service_health(first)[0] == plain[first][0] - 1  # afresh once released
