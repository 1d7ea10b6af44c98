"""What the incident read model keeps of one incident is bounded, however many signals join it,
and a page of its signal events is the same whether it comes from memory or from the log."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from onduty.events import (
    ActionStarted,
    ActionSucceeded,
    Escalated,
    Event,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Payload,
    SignalReceived,
    make_event,
)
from onduty.log.memory import MemoryEventLog
from onduty.log.sqlite import SQLiteEventLog
from onduty.readmodel import (
    DECISIONS_FIRST,
    DECISIONS_RECENT,
    SIGNALS_FIRST,
    SIGNALS_RECENT,
    IncidentProjection,
    SignalCursor,
    signal_page,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
INCIDENT = "inc-huge"
BOUND = DECISIONS_FIRST + DECISIONS_RECENT + SIGNALS_FIRST + SIGNALS_RECENT


class Events:
    """Events as the core records them for one incident, placed at consecutive seqs."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, body: Payload, stream: str = INCIDENT) -> Event:
        self.seq += 1
        event = make_event(
            body, id=f"ev-{self.seq}", ts=T0 + timedelta(seconds=self.seq), stream=stream
        )
        return event.model_copy(update={"seq": self.seq})


def opened(make: Events) -> Event:
    return make(
        IncidentOpened(
            incident_id=INCIDENT,
            group_key={"service": "web", "alertname": "Flood"},
            service="web",
            title="Flood on web",
            fingerprint="fp-0",
        )
    )


def joined(make: Events, n: int) -> Event:
    return make(IncidentUpdated(incident_id=INCIDENT, change="signal_added", fingerprint=f"fp-{n}"))


def flood(make: Events, count: int) -> Iterator[Event]:
    """`count` signals joining the incident, each received (its own stream) and then noted."""
    for n in range(1, count + 1):
        received = SignalReceived(
            source="load", fingerprint=f"fp-{n}", status="firing", labels={"service": "web"}
        )
        yield make(received, stream=f"signal:fp-{n}")
        yield joined(make, n)


def test_forty_thousand_signals_keep_a_bounded_timeline() -> None:
    make = Events()
    log = MemoryEventLog()
    events = [opened(make), make(Escalated(incident_id=INCIDENT, reason="no runbook", tier=0))]
    events += [*flood(make, 40_000)]
    events.append(make(IncidentResolved(incident_id=INCIDENT, reason="all signals resolved")))
    projection = IncidentProjection(keep_timeline=True).feed_all(log.append(events))

    view = projection.incidents[INCIDENT]
    timeline = view.timeline(log)
    assert len(timeline) <= BOUND
    assert view.signals == 40_001  # the one that opened it, and every one that joined
    assert view.signal_events.total == 40_000
    assert view.signal_events.retained == SIGNALS_FIRST + SIGNALS_RECENT
    assert view.signal_events.omitted == 40_000 - SIGNALS_FIRST - SIGNALS_RECENT
    # every decision is kept, in order, with the first and the most recent signals between
    kinds = [event.type for event in timeline]
    assert kinds[:2] == ["IncidentOpened", "Escalated"] and kinds[-1] == "IncidentResolved"
    seqs = [event.seq for event in timeline]
    assert seqs == sorted(seqs)
    fingerprints = [e.data["fingerprint"] for e in timeline if e.type == "IncidentUpdated"]
    first = [f"fp-{n}" for n in range(1, SIGNALS_FIRST + 1)]
    last = [f"fp-{n}" for n in range(40_001 - SIGNALS_RECENT, 40_001)]
    assert fingerprints == first + last
    assert view.status == "resolved"


def test_a_long_incidents_decisions_keep_the_first_and_the_latest() -> None:
    make = Events()
    log = MemoryEventLog()
    events = [opened(make)]
    events.append(make(IncidentUpdated(incident_id=INCIDENT, change="muted", detail="silence")))
    for n in range(1_000):
        events.append(make(Escalated(incident_id=INCIDENT, reason=f"repeat {n}", tier=0)))
    events.append(make(IncidentUpdated(incident_id=INCIDENT, change="unmuted")))
    events.append(
        make(ActionStarted(command_id="cmd-1", incident_id=INCIDENT, action="restart", target="w1"))
    )
    projection = IncidentProjection(keep_timeline=True).feed_all(log.append(events))
    view = projection.incidents[INCIDENT]
    decisions = view.decisions
    assert decisions.total == 1_004
    assert decisions.retained == DECISIONS_FIRST + DECISIONS_RECENT
    assert decisions.omitted == 1_004 - DECISIONS_FIRST - DECISIONS_RECENT
    kept = decisions.events(log)
    assert kept[0].type == "IncidentOpened" and kept[-1].type == "ActionStarted"
    # what the console shows of it follows every event, kept or not
    assert not view.muted
    assert view.acting == ["cmd-1"]
    assert len(view.escalations) == 100 and view.escalations[-1] == "repeat 999"
    projection.feed(make(ActionSucceeded(command_id="cmd-1")))
    assert view.acting == [] and view.verifying == ["cmd-1"]


def test_without_a_timeline_nothing_is_kept_but_the_counts() -> None:
    make = Events()
    projection = IncidentProjection()
    projection.feed(opened(make))
    projection.feed_all(flood(make, 500))
    view = projection.incidents[INCIDENT]
    assert view.timeline(None) == [] and view.signal_events.total == 500


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SQLiteEventLog]:
    with SQLiteEventLog(str(tmp_path / "log.db")) as log:
        yield log


def logged(log: SQLiteEventLog, count: int) -> tuple[IncidentProjection, list[Event]]:
    """`count` signals joined to one incident, appended to `log` and fed to a projection;
    the placed signal events."""
    make = Events()
    unplaced = [opened(make), *flood(make, count)]
    unplaced.insert(count, make(Escalated(incident_id=INCIDENT, reason="halfway", tier=0)))
    placed = log.append(unplaced)
    projection = IncidentProjection(keep_timeline=True).feed_all(placed)
    signals = [e for e in placed if e.type == "IncidentUpdated"]
    return projection, signals


def walk(cursor: SignalCursor, log: SQLiteEventLog, limit: int) -> list[list[Event]]:
    pages, after = [], 0
    while True:
        page = signal_page(cursor, log, after=after, limit=limit)
        pages.append(page.events)
        if not page.later:
            return pages
        after = page.events[-1].seq


@pytest.mark.parametrize("count", [150, 1_500])
def test_pages_visit_every_signal_event_once_in_order(log: SQLiteEventLog, count: int) -> None:
    projection, signals = logged(log, count)
    cursor = SignalCursor.of(projection.incidents[INCIDENT])
    # 150 are all held in memory (100 first + 100 recent); 1,500 are read from the log
    assert (cursor.kept is not None) == (count <= SIGNALS_FIRST + SIGNALS_RECENT)
    assert cursor.total == count
    pages = walk(cursor, log, limit=64)
    assert [len(page) for page in pages[:-1]] == [64] * (len(pages) - 1)
    assert list(itertools.chain(*pages)) == signals

    # backwards from the latest, the same events
    backwards, before = [], signals[-1].seq + 1
    while True:
        page = signal_page(cursor, log, before=before, limit=100)
        backwards[:0] = page.events
        if not page.earlier:
            break
        before = page.events[0].seq
    assert backwards == signals

    middle = signal_page(cursor, log, after=signals[9].seq, before=signals[15].seq, limit=100)
    assert middle.events == signals[10:15] and middle.earlier and middle.later
    beyond = signal_page(cursor, log, after=signals[-1].seq)
    assert beyond.events == [] and beyond.earlier and not beyond.later
    capped = signal_page(cursor, log, limit=100_000)
    assert len(capped.events) == min(count, 1_000)


def test_a_page_from_the_log_needs_the_log(log: SQLiteEventLog) -> None:
    projection, _ = logged(log, 300)
    cursor = SignalCursor.of(projection.incidents[INCIDENT])
    with pytest.raises(RuntimeError, match="not open"):
        signal_page(cursor, None)
