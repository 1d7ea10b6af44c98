"""What every `EventLog` backend promises, as a suite a backend's test class inherits.

A backend's tests subclass `EventLogContract` and implement `make_log` (which must open the same
log every time it is given the same folder) and `failing_commits`: tests/log/test_sqlite.py and
tests/log/test_memory.py do. Another backend (PostgreSQL, say) adds its own subclass, and every
test below runs against it too; what is only true of one backend stays in that backend's file.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from onduty.events import GENESIS_HASH, Event, SignalReceived, make_event, seal
from onduty.log.base import (
    EventLog,
    Snapshot,
    SnapshotProblem,
    check_snapshot,
    snapshot_digest,
    trusted_snapshot,
    verify_snapshots,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def signal(i: int, stream: str = "svc:api") -> Event:
    """A small, distinct, unplaced event."""
    body = SignalReceived(
        source="prometheus",
        fingerprint=f"fp-{i % 7}",
        status="firing",
        labels={"alertname": "HighLatency", "service": stream.rsplit(":", 1)[-1], "n": str(i)},
    )
    return make_event(body, id=f"ev-{i:06d}", ts=T0 + timedelta(seconds=i), stream=stream)


def resent(
    i: int, stream: str = "signal:a", ends_at: datetime | None = None, actor: str = "onduty"
) -> Event:
    """The same firing alert again, as its `i`th delivery (a new id and time)."""
    body = SignalReceived(
        source="alertmanager",
        fingerprint=stream.removeprefix("signal:"),
        status="firing",
        labels={"alertname": "HighLatency", "service": "api", "instance": "api-1"},
        annotations={"summary": "p99 latency above 500 ms", "runbook_url": "https://rb/api"},
        starts_at=T0 - timedelta(hours=1),
        ends_at=ends_at,
    )
    when = T0 + timedelta(seconds=30 * i, microseconds=i)
    return make_event(body, id=f"re-{i:04d}", ts=when, stream=stream, actor=actor)


def signals(start: int, count: int) -> list[Event]:
    return [signal(i) for i in range(start, start + count)]


def sealed_chain(events: list[Event], seq: int = 0, prev: str = GENESIS_HASH) -> list[Event]:
    """What the log must return for `events` appended after (`seq`, `prev`)."""
    out = []
    for event in events:
        seq += 1
        placed, _ = seal(event, seq, prev)
        out.append(placed)
        prev = placed.hash
    return out


class EventLogContract:
    """The behaviour every backend must show. Collected only through a subclass."""

    commit_error: type[BaseException] = Exception  # what a failed commit raises

    def make_log(self, tmp_path: Path) -> EventLog:
        raise NotImplementedError

    def failing_commits(self, log: EventLog, tmp_path: Path) -> AbstractContextManager[None]:
        """A context in which every commit of `log` fails."""
        raise NotImplementedError

    @pytest.fixture
    def log(self, tmp_path: Path) -> Iterator[EventLog]:
        log = self.make_log(tmp_path)
        yield log
        log.close()

    def test_empty_log(self, log: EventLog) -> None:
        assert log.head() == (0, GENESIS_HASH)
        assert log.origin() == (0, GENESIS_HASH)  # nothing sealed: the chain starts at genesis
        assert list(log.read()) == []
        assert log.verify() is None
        assert log.latest_snapshot() is None
        assert log.get_meta("anything") is None

    def test_empty_batch_appends_nothing(self, log: EventLog) -> None:
        assert log.append([]) == []
        assert log.head() == (0, GENESIS_HASH)

    def test_append_assigns_contiguous_seqs_and_chained_hashes(self, log: EventLog) -> None:
        first = log.append(signals(0, 3))
        second = log.append(signals(3, 1))
        third = log.append(signals(4, 5))
        placed = first + second + third
        assert [e.seq for e in placed] == list(range(1, 10))
        assert placed == sealed_chain(signals(0, 9))
        assert placed[0].prev_hash == GENESIS_HASH
        for before, after in itertools.pairwise(placed):
            assert after.prev_hash == before.hash
        assert list(log.read()) == placed
        assert log.verify() is None

    def test_resent_signals_read_back_exactly(self, log: EventLog, tmp_path: Path) -> None:
        # Alertmanager re-sends a firing alert until it resolves: the same signal with a new
        # id and time, sometimes a new `ends_at`, sometimes from another sender
        placed = log.append([resent(0), resent(1, stream="signal:b"), resent(2)])
        placed += log.append([resent(3), resent(4, ends_at=T0), resent(5, stream="signal:b")])
        placed += log.append([resent(6, actor="prometheus"), resent(7), resent(8, ends_at=T0)])
        expected = sealed_chain([resent(0), resent(1, stream="signal:b"), resent(2), resent(3)])
        assert placed[:4] == expected
        assert placed[4].data["ends_at"] == "2024-05-01T12:00:00Z"
        assert log.verify() is None
        assert list(log.read()) == placed
        assert list(log.read(after=4, limit=3)) == placed[4:7]
        assert list(log.read_stream("signal:b")) == [placed[1], placed[5]]
        assert list(log.read_stream("signal:a", newest_first=True)) == [
            e for e in reversed(placed) if e.stream == "signal:a"
        ]
        assert log.read_seqs([9, 3, 5]) == [placed[2], placed[4], placed[8]]
        log.close()
        reopened = self.make_log(tmp_path)
        try:
            assert reopened.head() == (9, placed[-1].hash)
            more = reopened.append([resent(9), resent(10, stream="signal:b")])
            assert more == sealed_chain(
                [resent(9), resent(10, stream="signal:b")], 9, placed[-1].hash
            )
            assert list(reopened.read()) == placed + more
            assert reopened.verify() is None
        finally:
            reopened.close()

    def test_head_is_the_last_event(self, log: EventLog) -> None:
        placed = log.append(signals(0, 4))
        assert log.head() == (4, placed[-1].hash)

    def test_read_after_and_limit(self, log: EventLog) -> None:
        placed = log.append(signals(0, 10))
        assert list(log.read(after=4)) == placed[4:]
        assert list(log.read(after=4, limit=3)) == placed[4:7]
        assert list(log.read(limit=0)) == []
        assert list(log.read(after=10)) == []
        assert list(log.read(after=99)) == []

    def test_read_stream_pages_one_stream_both_ways(self, log: EventLog) -> None:
        # 700 events, every third one in "inc:a": more than one page of any backend's reads
        placed = log.append([signal(i, "inc:a" if i % 3 == 0 else "svc:api") for i in range(700)])
        mine = [event for event in placed if event.stream == "inc:a"]
        assert len(mine) == 234
        assert list(log.read_stream("inc:a")) == mine
        assert list(log.read_stream("inc:a", newest_first=True)) == mine[::-1]
        middle = [event for event in mine if 100 < event.seq < 600]
        assert list(log.read_stream("inc:a", after=100, before=600)) == middle
        assert list(log.read_stream("inc:a", 100, 600, newest_first=True)) == middle[::-1]
        assert list(log.read_stream("inc:a", after=mine[-1].seq)) == []
        assert list(log.read_stream("inc:a", before=mine[0].seq)) == []
        assert list(log.read_stream("nobody")) == []
        early = log.read_stream("inc:a", newest_first=True)
        assert [next(early).seq for _ in range(3)] == [e.seq for e in mine[::-1][:3]]

    def test_read_seqs_reads_the_events_at_those_seqs(self, log: EventLog) -> None:
        # more seqs than one query of any backend asks for, unordered and repeated
        placed = log.append(signals(0, 1_200))
        wanted = [1_200, 3, 3, 700, *range(1_000, 0, -2), 99_999]
        found = log.read_seqs(wanted)
        assert found == [placed[seq - 1] for seq in sorted(set(wanted) - {99_999})]
        assert log.read_seqs([]) == [] and log.read_seqs([0, 5_000]) == []

    def test_appended_events_are_durable(self, log: EventLog, tmp_path: Path) -> None:
        placed = log.append(signals(0, 5))
        other = self.make_log(tmp_path)  # a second handle on the same storage
        try:
            assert list(other.read()) == placed
            assert other.head() == log.head()
        finally:
            other.close()

    def test_reopening_resumes_the_chain(self, log: EventLog, tmp_path: Path) -> None:
        before = log.append(signals(0, 3))
        log.close()
        reopened = self.make_log(tmp_path)
        try:
            assert reopened.head() == (3, before[-1].hash)
            after = reopened.append(signals(3, 2))
            assert after == sealed_chain(signals(3, 2), 3, before[-1].hash)
            assert list(reopened.read()) == before + after
            assert reopened.verify() is None
        finally:
            reopened.close()

    def test_concurrent_appends_keep_batches_contiguous(self, log: EventLog) -> None:
        threads, rounds = 8, 12
        results: list[list[list[Event]]] = [[] for _ in range(threads)]
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for r in range(rounds):
                    size = 1 + (t + r) % 4
                    start = 10_000 * t + 100 * r
                    results[t].append(log.append(signals(start, size)))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        batches = [batch for per_thread in results for batch in per_thread]
        for batch in batches:
            seqs = [e.seq for e in batch]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        total = sum(len(b) for b in batches)
        assert total == sum(1 + (t + r) % 4 for t in range(threads) for r in range(rounds))
        assert sorted(e.seq for b in batches for e in b) == list(range(1, total + 1))
        stored = list(log.read())
        assert stored == sorted((e for b in batches for e in b), key=lambda e: e.seq)
        assert log.head() == (total, stored[-1].hash)
        assert log.verify() is None

    def test_failed_commit_does_not_advance_the_head(self, log: EventLog, tmp_path: Path) -> None:
        placed = log.append(signals(0, 2))
        with self.failing_commits(log, tmp_path):
            with pytest.raises(self.commit_error):
                log.append(signals(2, 3))
            assert log.head() == (2, placed[-1].hash)
        assert list(log.read()) == placed
        after = log.append(signals(5, 1))
        assert after == sealed_chain(signals(5, 1), 2, placed[-1].hash)
        assert log.verify() is None

    def test_snapshots_keep_the_newest(self, log: EventLog) -> None:
        for seq in (10, 20, 30, 40, 50):
            log.save_snapshot(Snapshot(seq, {"seq": seq, "open": [f"inc-{seq}"]}))
        assert log.latest_snapshot() == Snapshot(50, {"seq": 50, "open": ["inc-50"]})

    def test_meta_roundtrip(self, log: EventLog) -> None:
        assert log.get_meta("policy") is None
        log.set_meta("policy", "v1")
        assert log.get_meta("policy") == "v1"
        log.set_meta("policy", "v2")
        assert log.get_meta("policy") == "v2"
        assert log.get_meta("other") is None

    def test_verify_reports_progress(self, log: EventLog) -> None:
        log.append(signals(0, 5))
        calls: list[tuple[int, int]] = []
        assert log.verify(progress=lambda done, total: calls.append((done, total))) is None
        assert calls[-1] == (5, 5)

    def test_events_read_back_can_be_appended_again(self, log: EventLog, tmp_path: Path) -> None:
        log.append(signals(0, 3))
        read_back = list(log.read())
        log.close()
        second = self.make_log(tmp_path / "second")
        try:
            before = second.append(signals(10, 1))[-1]
            placed = second.append(read_back)
            assert placed == sealed_chain(read_back, 1, before.hash)
            assert placed[0].model_copy(update={"actor": "someone"}).actor == "someone"
            assert second.verify() is None
        finally:
            second.close()

    def test_unserializable_event_fails_only_its_own_batch(self, log: EventLog) -> None:
        bad = signal(50).model_copy(update={"data": {"labels": {1, 2}}})
        placed = log.append(signals(0, 2))
        with pytest.raises(TypeError):
            log.append([signal(2), bad])
        assert log.head() == (2, placed[-1].hash)
        later = log.append([signal(3)])
        assert later == sealed_chain([signal(3)], 2, placed[-1].hash)
        assert log.verify() is None

    # ---------------------------------------------------------- snapshots bound to the chain

    def _bound_snapshots(self, log: EventLog) -> list[Event]:
        """Ten events with a bound snapshot at seq 4 and one at seq 8."""
        placed = log.append(signals(0, 10))
        for seq in (4, 8):
            log.save_snapshot(Snapshot.bound(seq, placed[seq - 1].hash, {"seq": seq}))
        return placed

    def test_a_bound_snapshot_keeps_its_binding(self, log: EventLog, tmp_path: Path) -> None:
        placed = self._bound_snapshots(log)
        expected = Snapshot(
            8, {"seq": 8}, placed[7].hash, snapshot_digest(8, placed[7].hash, {"seq": 8})
        )
        log.close()
        reopened = self.make_log(tmp_path)
        try:
            assert reopened.latest_snapshot() == expected
            assert [s.seq for s in reopened.snapshots()] == [8, 4]
            assert check_snapshot(reopened, expected) is None
            assert trusted_snapshot(reopened) == (expected, [])
            assert verify_snapshots(reopened) == []
        finally:
            reopened.close()

    def test_an_edited_snapshot_is_not_trusted(self, log: EventLog) -> None:
        self._bound_snapshots(log)
        good = log.latest_snapshot()
        assert good is not None
        log.save_snapshot(
            Snapshot(good.seq, {"seq": 8, "autonomy": "act"}, good.event_hash, good.digest)
        )
        snapshot, discarded = trusted_snapshot(log)
        assert snapshot is not None and snapshot.seq == 4  # the older one still holds
        assert [p.seq for p in discarded] == [8]
        assert "does not match its digest" in discarded[0].reason
        assert verify_snapshots(log) == discarded

    def test_a_snapshot_bound_to_another_hash_is_not_trusted(self, log: EventLog) -> None:
        self._bound_snapshots(log)
        forged = "f" * 64  # as if the event at seq 8 had been rewritten, digest recomputed
        log.save_snapshot(Snapshot.bound(8, forged, {"seq": 8}))
        problems = verify_snapshots(log)
        assert [p.seq for p in problems] == [8]
        assert "the event at seq 8 has hash" in problems[0].reason

    def test_a_snapshot_beyond_the_head_is_not_trusted(self, log: EventLog) -> None:
        placed = self._bound_snapshots(log)
        log.save_snapshot(Snapshot.bound(99, placed[-1].hash, {"seq": 99}))
        snapshot, discarded = trusted_snapshot(log)
        assert snapshot is not None and snapshot.seq == 8
        assert discarded == [SnapshotProblem(99, discarded[0].reason)]
        assert "beyond the head" in discarded[0].reason

    def test_an_unbound_snapshot_is_not_trusted(self, log: EventLog) -> None:
        log.append(signals(0, 3))
        log.save_snapshot(Snapshot(3, {"seq": 3}))  # as older versions wrote them
        snapshot, discarded = trusted_snapshot(log)
        assert snapshot is None
        assert [p.seq for p in discarded] == [3]
        assert "older version" in discarded[0].reason

    def test_discarding_a_snapshot(self, log: EventLog) -> None:
        self._bound_snapshots(log)
        log.discard_snapshot(8)
        log.discard_snapshot(77)  # none there: nothing happens
        assert [s.seq for s in log.snapshots()] == [4]
