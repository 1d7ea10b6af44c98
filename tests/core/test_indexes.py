"""The core's indexes find what a scan of the state would (hypothesis): a tick acts on the same
signals and incidents, redeliveries are recognised for the same time, flapping keys are
forgotten at the same moment — whatever the history."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onduty.correlate import FlapDetector
from onduty.events import SignalReceived, SilenceCreated, Tick
from onduty.lifecycle import indexes
from onduty.lifecycle.indexes import Deliveries, Due
from onduty.manager import Manager
from onduty.state import State
from tests.core.helpers import T0, Driver, config

INSTANCES = ["web-1", "web-2", "db-1", "batch-1"]

steps = st.lists(
    st.tuples(
        st.sampled_from(["firing", "resolved", "tick", "silence", "ack"]),
        st.sampled_from(INSTANCES),
        st.sampled_from([0.0, 20.0, 90.0, 400.0, 1800.0]),
    ),
    min_size=1,
    max_size=40,
)


def _scan_stale(state: State, now: object, timeout: timedelta) -> list[str]:
    return [
        s.fingerprint
        for s in state.signals.values()
        if s.status == "firing" and s.last_seen is not None and s.last_seen + timeout <= now  # type: ignore[operator]
    ]


def _scan_due(state: State, now: object) -> list[str]:
    return [
        i.incident_id
        for i in state.incidents.values()
        if (i.escalation_due is not None and i.escalation_due <= now and not i.acknowledged)  # type: ignore[operator]
        or (not i.planned and i.ready_at <= now)  # type: ignore[operator]
        or i.flapping
    ]


def _check(manager: Manager) -> None:
    """Ask a copy of the indexes (answering pops them) what a tick now would look at."""
    due: Due = copy.deepcopy(manager.incidents.due)
    state = due._state
    now = state.last_ts
    assert now is not None
    for later in (timedelta(0), timedelta(minutes=10), timedelta(hours=2)):
        probe = copy.deepcopy(due)
        timeout = timedelta(minutes=5)
        found = [s.fingerprint for s in probe.stale(now + later, timeout)]
        assert found == _scan_stale(probe._state, now + later, timeout)
        scanned = _scan_due(probe._state, now + later)
        found_ids = [i.incident_id for i in probe.due(now + later)]
        assert set(scanned) <= set(found_ids)  # it may find more, never less
        order = list(probe._state.incidents)
        assert found_ids == sorted(found_ids, key=order.index)  # in the state's order
        muted = [i.incident_id for i in probe.in_order(probe.muted)]
        assert muted == [i.incident_id for i in probe._state.incidents.values() if i.muted]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_tick_indexes_agree_with_a_scan(history: list[tuple[str, str, float]]) -> None:
    cfg = config(
        correlation={
            "group_by": ["service", "alertname", "instance"],
            "resolve_timeout": "10m",
            "flap_threshold": 3,
            "flap_window": "30m",
        },
        escalation={"default": [{"notify": ["a"], "wait": "5m"}, {"notify": ["b"]}]},
    )
    driver = Driver(cfg)
    for kind, instance, after in history:
        if kind in ("firing", "resolved"):
            driver.signal(instance, kind, after=after)
        elif kind == "tick":
            driver.feed(Tick(timer_id=None), after=after)
        elif kind == "silence":
            driver.feed(
                SilenceCreated(
                    silence_id=f"s-{instance}",
                    matchers=[f'instance="{instance}"'],
                    starts_at=driver.now,
                    ends_at=driver.now + timedelta(minutes=15),
                    comment="maintenance",
                ),
                after=after,
            )
        else:
            driver.feed(
                SignalReceived(
                    source="test",
                    fingerprint=f"InstanceDown:{instance}",
                    status="acknowledged",
                    labels={"instance": instance},
                ),
                after=after,
            )
        _check(driver.manager)
    # a manager made from the state (as from a snapshot) builds the same answers
    _check(Manager(State.from_snapshot(driver.manager.snapshot())))


def _remember_by_sweep(
    model: dict[str, datetime], delivery_id: str, now: datetime, memory: Deliveries
) -> dict[str, datetime]:
    """The old way beside the index: a new id rebuilds the whole dict once it holds the sweep's
    size (patched to 4). Checks the index says fresh exactly when the model does."""
    fresh = delivery_id not in model
    assert memory.remember(delivery_id, now) is fresh
    if not fresh:
        return model
    model[delivery_id] = now
    if len(model) < 4:
        return model
    horizon = now - indexes.DELIVERY_MEMORY
    return {k: t for k, t in model.items() if t > horizon}


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([f"d{i}" for i in range(12)]), st.integers(-3, 30)),
        max_size=80,
    )
)
def test_delivery_ids_are_forgotten_as_a_full_sweep_forgets_them(
    deliveries: list[tuple[str, int]],
) -> None:
    state = State()
    memory = Deliveries(state)
    model: dict[str, datetime] = {}
    now = T0
    with mock.patch.object(indexes, "DELIVERY_SWEEP_AT", 4):
        for delivery_id, hours in deliveries:
            now = T0 + timedelta(hours=hours)  # out of order too
            model = _remember_by_sweep(model, delivery_id, now, memory)
            assert list(state.deliveries.items()) == list(model.items())


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([f"d{i}" for i in range(40)]), st.integers(0, 3))),
    st.integers(0, 60),
)
def test_delivery_ids_in_time_order_are_forgotten_alike_after_a_restart(
    deliveries: list[tuple[str, int]], restart: int
) -> None:
    state = State()
    memory = Deliveries(state)
    model: dict[str, datetime] = {}
    now = T0
    with mock.patch.object(indexes, "DELIVERY_SWEEP_AT", 4):
        for step, (delivery_id, hours) in enumerate(deliveries):
            if step == restart:
                memory = Deliveries(state)  # as from a snapshot
            now += timedelta(hours=hours * 8)  # in the log's order: never earlier
            model = _remember_by_sweep(model, delivery_id, now, memory)
            assert list(state.deliveries.items()) == list(model.items())


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 20), st.booleans()),
        max_size=60,
    )
)
def test_flap_pruning_forgets_what_a_scan_forgets(changes: list[tuple[str, int, bool]]) -> None:
    flaps = FlapDetector(timedelta(minutes=5), 3)
    now = T0
    for key, minutes, prune in changes:
        now += timedelta(minutes=minutes)
        flaps.record(key, now)
        if prune:
            horizon = now - flaps.window
            expected = sorted(k for k, times in flaps.changes.items() if times[-1] <= horizon)
            remaining = [k for k in flaps.changes if k not in expected]
            assert flaps.prune(now) == expected
            assert list(flaps.changes) == remaining
