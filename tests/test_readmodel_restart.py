"""The read models over months and across restarts: resolved incidents leave memory and are
still served (read back from the log), and a restart from a read-model snapshot shows exactly
what a full rebuild shows; a snapshot not bound to the chain is refused and rebuilt."""

from __future__ import annotations

import gc
import shutil
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onduty.act import ActuatorRegistry
from onduty.api import build_app
from onduty.config import Config
from onduty.events import (
    ActionStarted,
    Event,
    IncidentOpened,
    IncidentResolved,
    Payload,
    SignalReceived,
    make_event,
)
from onduty.log import Snapshot
from onduty.log.memory import MemoryEventLog
from onduty.log.sqlite import SQLiteEventLog
from onduty.readmodel import IncidentProjection
from onduty.readmodel.models import SNAPSHOT_KEY, ReadModels, state_of
from onduty.runtime import VirtualClock
from onduty.service import Service
from tests.histories import write_history

HISTORY_EVENTS = 12_000
KEPT = 4


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    """A realistic log (the benchmarks' history: faults, runbooks, approvals, pages) of about
    `HISTORY_EVENTS` events, with many incidents opened and resolved."""
    path = tmp_path_factory.mktemp("history") / "log.db"
    return path, write_history(path, HISTORY_EVENTS, seed=5)


def prepared(path: Path, config: Config, keep_resolved: int | None) -> Service:
    """A service on (a copy of) the log, prepared (its read models and core restored)."""
    log = SQLiteEventLog(str(path))
    now = next(log.read(after=log.head()[0] - 1)).ts
    log.close()
    service = Service(config, str(path), actuators=ActuatorRegistry(), clock=VirtualClock(now))
    service.read.incidents.keep_resolved = keep_resolved
    service.prepare()
    return service


@pytest.fixture(scope="module")
def two(
    history: tuple[Path, Config], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, Service]]:
    """The same log served twice: keeping every incident in memory, and keeping `KEPT`
    resolved ones."""
    path, config = history
    folder = tmp_path_factory.mktemp("two")
    services = []
    for name, keep in (("all", None), ("few", KEPT)):
        copy = folder / f"{name}.db"
        shutil.copy(path, copy)
        services.append(prepared(copy, config, keep))
    yield services[0], services[1]
    for service in services:
        assert service.log is not None
        service.log.close()


def client(service: Service) -> TestClient:
    return TestClient(build_app(service), base_url="http://127.0.0.1")


def test_an_old_resolved_incident_is_served_as_when_it_was_in_memory(
    two: tuple[Service, Service],
) -> None:
    everything, few = two
    resolved = [v for v in everything.read.incidents.ordered() if v.status == "resolved"]
    assert len(resolved) > 20 * KEPT
    in_memory = [v for v in few.read.incidents.incidents.values() if v.status == "resolved"]
    assert len(in_memory) == KEPT
    full, small = client(everything), client(few)
    for view in resolved[:: max(1, len(resolved) // 40)]:  # forty of them, oldest first
        url = f"/api/v1/incidents/{view.incident_id}"
        expected, served = full.get(url), small.get(url)
        assert served.status_code == 200, served.text
        assert served.json() == expected.json()
        assert served.json()["timeline"][0]["type"] == "IncidentOpened"
        page = f"/incidents/{view.incident_id}"
        assert small.get(page).text == full.get(page).text
    for other in ("inc-nobody", "approvals", "timers"):  # not an incident, though a stream
        assert small.get(f"/api/v1/incidents/{other}").status_code == 404
    # the history pages, newest first and from the oldest, and a search, are the same too
    for query in ("", "?after=0", "?before=30", "?q=web", "?q=checkout%20restart"):
        assert small.get("/history" + query).text == full.get("/history" + query).text
    assert small.get("/shift?window=7d").text == full.get("/shift?window=7d").text


# ---------------------------------------------------------------------------- memory


def cycle(log: MemoryEventLog, n: int, at: datetime) -> list[Event]:
    """One incident opened by a signal, acted on, and resolved: appended to `log`."""
    incident = f"inc-{n}"

    def event(body: Payload, stream: str = incident, cause: str | None = None) -> Event:
        return make_event(body, id=f"e{n}-{type(body).__name__}", ts=at, stream=stream,
                          causation_id=cause)  # fmt: skip

    signal = event(
        SignalReceived(source="t", fingerprint=f"fp-{n}", status="firing",
                       labels={"service": "web", "instance": f"web-{n}", "alertname": "Down"}),
        stream=f"signal:fp-{n}",
    )  # fmt: skip
    opened = IncidentOpened(
        incident_id=incident, group_key={"service": "web"}, service="web", title="Down on web",
        fingerprint=f"fp-{n}",
    )  # fmt: skip
    started = ActionStarted(
        command_id=f"cmd-{n}", incident_id=incident, action="restart", target=f"web-{n}"
    )
    resolved = IncidentResolved(incident_id=incident, reason="all signals resolved")
    return log.append([signal, event(opened, cause=signal.id), event(started), event(resolved)])


def test_memory_does_not_grow_with_resolved_incidents() -> None:
    log, projection = MemoryEventLog(), IncidentProjection(keep_timeline=True, keep_resolved=50)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(1_000):
        projection.feed_all(cycle(log, n, t0 + timedelta(hours=n)))
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.take_snapshot()
    for n in range(1_000, 3_000):
        projection.feed_all(cycle(log, n, t0 + timedelta(hours=n)))
    gc.collect()  # what a collection frees is not held
    grown = tracemalloc.take_snapshot().compare_to(before, "filename")
    tracemalloc.stop()
    mine = [stat for stat in grown if "/onduty/readmodel/" in stat.traceback[0].filename]
    held = sum(stat.size_diff for stat in mine)
    assert len(projection.incidents) == 50
    assert len(projection._command_incident) == 50
    assert len(projection.facts) <= 8 * 24 + 1  # a week's, for the shift overview
    assert len(projection.resolved) == 3_000  # one seq each: where the history pages
    assert held < 2_000 * 64, f"{held} bytes held for 2,000 more resolved incidents"
    # the oldest is still there, read back from the log
    from onduty.readmodel.archive import rebuild

    old = rebuild(log, "inc-0")
    assert old is not None and old.status == "resolved" and old.actions == ["restart web-0"]


# ---------------------------------------------------------------------------- snapshots


def fed(events: list[Event], keep_resolved: int | None) -> ReadModels:
    models = ReadModels()
    models.incidents.keep_resolved = keep_resolved
    for event in events:
        models.feed(event)
    return models


def comparable(models: ReadModels) -> Any:
    return orjson.loads(orjson.dumps(state_of(models)))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.floats(0.0, 1.0), keep=st.sampled_from([None, 2, 10]))
def test_a_restart_from_a_snapshot_equals_a_full_rebuild(
    history: tuple[Path, Config], tmp_path: Path, cut: float, keep: int | None
) -> None:
    path, _ = history
    shutil.copy(path, tmp_path / "log.db")
    log = SQLiteEventLog(str(tmp_path / "log.db"))
    try:
        events = list(log.read())
        at = max(1, int(len(events) * cut))
        early = fed(events[:at], keep)
        early.save(log)
        restarted = ReadModels()
        restarted.incidents.keep_resolved = keep
        assert restarted.restore(log) == len(events) - at  # only the tail is fed
        assert comparable(restarted) == comparable(fed(events, keep))
    finally:
        log.close()


def test_a_snapshot_not_bound_to_the_chain_is_refused_and_rebuilt(
    history: tuple[Path, Config], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = history
    copy = tmp_path / "log.db"
    shutil.copy(path, copy)
    log = SQLiteEventLog(str(copy))
    try:
        events = list(log.read())
        rebuilt = comparable(fed(events, None))
        fed(events[:500], None).save(log)
        stored = orjson.loads(log.get_meta(SNAPSHOT_KEY) or "")

        # edited: a view's title changed without its digest
        edited = orjson.loads(orjson.dumps(stored))
        edited["state"]["incidents"]["views"][0][1] = "nothing to see"
        # bound to another chain (its digest right): the event at its seq has another hash
        other = Snapshot.bound(stored["seq"], "0" * 64, stored["state"])
        elsewhere = {**stored, "event_hash": other.event_hash, "digest": other.digest}
        for bad, why in ((edited, "digest"), (elsewhere, "hash"), ({"seq": 1}, "decode")):
            log.set_meta(SNAPSHOT_KEY, orjson.dumps(bad).decode())
            caplog.clear()
            models = ReadModels()
            models.incidents.keep_resolved = None
            assert models.restore(log) == len(events)  # the whole log, from the start
            assert comparable(models) == rebuilt
            assert "read-model snapshot refused" in caplog.text and why in caplog.text
    finally:
        log.close()


def test_a_service_restarts_from_its_read_model_snapshot(
    history: tuple[Path, Config], tmp_path: Path
) -> None:
    path, config = history
    copy = tmp_path / "log.db"
    shutil.copy(path, copy)
    first = prepared(copy, config, KEPT)
    expected = comparable(first.read)
    assert first.log is not None
    first.read.save(first.log)  # what a graceful stop does
    first.log.close()
    second = prepared(copy, config, KEPT)
    try:
        assert second.log is not None and second.read.seq == second.log.head()[0]
        assert comparable(second.read) == expected
    finally:
        assert second.log is not None
        second.log.close()
    # restored in place: the API's routes hold the read models they were built with (the
    # approvals' desk), before the service restores them
    third = Service(config, str(copy), actuators=ActuatorRegistry(), clock=second.clock)
    third.read.incidents.keep_resolved = KEPT
    held, api = third.read.incidents, client(third)
    third.prepare()
    try:
        assert third.read.incidents is held and comparable(third.read) == expected
        pending = sorted(held.approvals.values(), key=lambda approval: approval.expires_at)
        assert [a["id"] for a in api.get("/api/v1/approvals").json()] == [
            approval.approval_id for approval in pending
        ]
    finally:
        assert third.log is not None
        third.log.close()
