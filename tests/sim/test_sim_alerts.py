"""The evaluator behaves like Prometheus rules feeding Alertmanager: pending, then firing after
`for:`, re-sent every resend interval, resolved once and re-sent once."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from onduty.config import Config
from onduty.events import Signal
from onduty.sim import DEFAULT_START, AlertEvaluator, Fleet, fingerprint

T0 = DEFAULT_START
STEP = timedelta(seconds=15)


def evaluate_until(
    fleet: Fleet, evaluator: AlertEvaluator, start: datetime, end: datetime
) -> list[tuple[datetime, Signal]]:
    out: list[tuple[datetime, Signal]] = []
    t = start
    while t <= end:
        fleet.advance(t)
        out.extend((t, s) for s in evaluator.evaluate(fleet, t))
        t += STEP
    return out


def test_firing_only_after_for_then_resent_then_resolved_and_resent_once(
    small_config: Config,
) -> None:
    fleet = Fleet(small_config.services, random.Random(3))
    evaluator = AlertEvaluator(resend_interval=timedelta(minutes=5))
    fleet.crash("web-1")

    stream = evaluate_until(fleet, evaluator, T0, T0 + timedelta(seconds=45))
    assert stream == []  # pending, `for: 1m` not yet elapsed
    assert evaluator.firing() == []

    stream = evaluate_until(fleet, evaluator, T0 + timedelta(minutes=1), T0 + timedelta(minutes=12))
    assert [(at - T0, s.status) for at, s in stream] == [
        (timedelta(minutes=1), "firing"),
        (timedelta(minutes=6), "firing"),
        (timedelta(minutes=11), "firing"),
    ]
    assert {s.starts_at for _, s in stream} == {T0 + timedelta(minutes=1)}
    assert all(s.ends_at is None for _, s in stream)
    assert evaluator.firing()[0]["instance"] == "web-1"

    restart_at = T0 + timedelta(minutes=12, seconds=5)
    fleet.restart("web-1", "cmd", restart_at)
    stream = evaluate_until(
        fleet, evaluator, T0 + timedelta(minutes=12, seconds=15), T0 + timedelta(minutes=30)
    )
    resolved_at = T0 + timedelta(minutes=12, seconds=30)
    assert [(at, s.status, s.ends_at) for at, s in stream] == [
        (resolved_at, "resolved", resolved_at),
        (resolved_at + timedelta(minutes=5), "resolved", resolved_at),
    ]
    assert evaluator.alerts == {}


def test_a_condition_that_clears_before_for_sends_nothing(small_config: Config) -> None:
    fleet = Fleet(small_config.services, random.Random(3))
    evaluator = AlertEvaluator()
    fleet.crash("api-2")
    stream = evaluate_until(fleet, evaluator, T0, T0 + timedelta(seconds=30))
    fleet.restart("api-2", "cmd", T0 + timedelta(seconds=40))
    stream += evaluate_until(
        fleet, evaluator, T0 + timedelta(seconds=45), T0 + timedelta(minutes=10)
    )
    assert stream == []


def test_a_new_episode_after_resolution_fires_again_with_a_new_start(
    small_config: Config,
) -> None:
    fleet = Fleet(small_config.services, random.Random(3))
    evaluator = AlertEvaluator()
    fleet.crash("web-3")
    stream = evaluate_until(fleet, evaluator, T0, T0 + timedelta(minutes=2))
    fleet.restart("web-3", "a", T0 + timedelta(minutes=2))
    stream += evaluate_until(
        fleet, evaluator, T0 + timedelta(minutes=2, seconds=15), T0 + timedelta(minutes=3)
    )
    fleet.crash("web-3")
    stream += evaluate_until(
        fleet, evaluator, T0 + timedelta(minutes=3, seconds=15), T0 + timedelta(minutes=5)
    )
    statuses = [(at - T0, s.status, s.starts_at) for at, s in stream]
    assert statuses == [
        (timedelta(minutes=1), "firing", T0 + timedelta(minutes=1)),
        (timedelta(minutes=2, seconds=30), "resolved", T0 + timedelta(minutes=1)),
        (timedelta(minutes=4, seconds=15), "firing", T0 + timedelta(minutes=4, seconds=15)),
    ]
    assert len({s.fingerprint for _, s in stream}) == 1


def test_signal_shape(small_config: Config) -> None:
    fleet = Fleet(small_config.services, random.Random(3))
    evaluator = AlertEvaluator()
    fleet.crash("api-1")
    stream = evaluate_until(fleet, evaluator, T0, T0 + timedelta(minutes=1))
    (_, signal) = stream[0]
    assert signal.fingerprint == fingerprint(signal.labels)
    assert len(signal.fingerprint) == 16
    int(signal.fingerprint, 16)
    assert signal.annotations["summary"] == "api-1 (api) is down"
    assert "1m" in signal.annotations["description"]
    assert signal.generator_url == "sim://prometheus/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
    assert signal.labels["region"] == "us-east"


def test_fingerprint_ignores_label_order() -> None:
    a = fingerprint({"alertname": "X", "service": "s", "instance": "i"})
    b = fingerprint({"instance": "i", "service": "s", "alertname": "X"})
    assert a == b
    assert a != fingerprint({"alertname": "X", "service": "s", "instance": "j"})


def test_a_healthy_fleet_stays_quiet(small_config: Config) -> None:
    for seed in range(5):
        fleet = Fleet(small_config.services, random.Random(seed))
        evaluator = AlertEvaluator()
        assert evaluate_until(fleet, evaluator, T0, T0 + timedelta(hours=2)) == []
