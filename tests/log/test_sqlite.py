"""The SQLite backend: the shared contract, then tampering, files, group commit and more."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onduty.events import (
    GENESIS_HASH,
    Event,
    SignalReceived,
    canonical_body,
    chain_hash,
    make_event,
    seal,
)
from onduty.log import open_log, repeats, snapshot_rows, wal
from onduty.log.base import (
    ChainBreak,
    EventLog,
    Snapshot,
    SnapshotProblem,
    StoreError,
    check_snapshot,
    trusted_snapshot,
    verify_snapshots,
)
from onduty.log.sqlite import SQLiteEventLog
from tests.log.contract import EventLogContract, resent, sealed_chain, signal, signals

Tamper = Callable[[sqlite3.Connection], object]


def log_path(folder: Path) -> Path:
    return folder / "events.db"


class TestSQLiteEventLog(EventLogContract):
    commit_error = sqlite3.Error

    def make_log(self, tmp_path: Path) -> EventLog:
        return SQLiteEventLog(str(log_path(tmp_path)))

    @contextmanager
    def failing_commits(self, log: EventLog, tmp_path: Path) -> Iterator[None]:
        tables = ("events", "repeats")  # a re-sent signal is stored in `repeats`
        with raw(log_path(tmp_path)) as db:
            for table in tables:
                db.execute(
                    f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table}"
                    " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                )
        try:
            yield
        finally:
            with raw(log_path(tmp_path)) as db:
                for table in tables:
                    db.execute(f"DROP TRIGGER fail_{table}")


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection in autocommit mode, as someone tampering with the file."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def build(path: Path, count: int) -> list[Event]:
    """`count` signals of distinct streams: each is stored in full, as a row of `events`."""
    with SQLiteEventLog(str(path)) as log:
        return log.append([signal(i, f"svc:s{i}") for i in range(count)])


def verify_after(path: Path, tamper: Tamper) -> ChainBreak | None:
    with raw(path) as db:
        tamper(db)
    with SQLiteEventLog(str(path)) as log:
        return log.verify()


def row(db: sqlite3.Connection, seq: int) -> tuple[Any, ...]:
    found = db.execute("SELECT id, type, stream, ts, body, hash FROM events WHERE seq = ?", (seq,))
    return tuple(found.fetchone())


def put(db: sqlite3.Connection, seq: int, values: tuple[Any, ...]) -> None:
    db.execute(
        "UPDATE events SET id = ?, type = ?, stream = ?, ts = ?, body = ?, hash = ? WHERE seq = ?",
        (*values, seq),
    )


def shift_up(db: sqlite3.Connection, start: int) -> None:
    """Renumber every row from `start` on one up, leaving `start` free."""
    db.execute("UPDATE events SET seq = -(seq + 1) WHERE seq >= ?", (start,))
    db.execute("UPDATE events SET seq = -seq WHERE seq < 0")


def insert(db: sqlite3.Connection, seq: int, event: Event, body: bytes, hash_: str) -> None:
    db.execute(
        "INSERT INTO events(seq, id, type, stream, ts, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, event.id, event.type, event.stream, orjson.loads(body)["ts"], body, hash_),
    )


# --------------------------------------------------------------------------- tampering


@settings(max_examples=50, deadline=None)
@given(data=st.data(), count=st.integers(1, 12), flip=st.integers(1, 255))
def test_one_changed_byte_is_found_at_its_seq(data: st.DataObject, count: int, flip: int) -> None:
    seq = data.draw(st.integers(1, count), label="seq")
    with tempfile.TemporaryDirectory() as folder:
        path = log_path(Path(folder))
        build(path, count)

        def change_one_byte(db: sqlite3.Connection) -> None:
            body = bytearray(row(db, seq)[4])
            body[data.draw(st.integers(0, len(body) - 1), label="byte")] ^= flip
            db.execute("UPDATE events SET body = ? WHERE seq = ?", (bytes(body), seq))

        broken = verify_after(path, change_one_byte)
    assert broken is not None
    assert broken.seq == seq


def test_deleted_row_is_reported_missing(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    build(path, 8)
    broken = verify_after(path, lambda db: db.execute("DELETE FROM events WHERE seq = 5"))
    assert broken == ChainBreak(5, "seq 5 is missing (found 6)")


def test_deleted_first_row_is_reported_missing(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    build(path, 3)
    broken = verify_after(path, lambda db: db.execute("DELETE FROM events WHERE seq = 1"))
    assert broken == ChainBreak(1, "seq 1 is missing (found 2)")


def test_swapped_rows_report_the_lower_seq(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    build(path, 8)

    def swap(db: sqlite3.Connection) -> None:
        third, sixth = row(db, 3), row(db, 6)
        put(db, 3, sixth)
        put(db, 6, third)

    broken = verify_after(path, swap)
    assert broken is not None
    assert broken.seq == 3


def test_row_inserted_at_the_end_with_a_made_up_hash(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    placed = build(path, 5)
    extra, _ = seal(signal(99), 6, placed[-1].hash)

    def append_row(db: sqlite3.Connection) -> None:
        insert(db, 6, extra, canonical_body(extra.model_copy(update={"hash": ""})), "f" * 64)

    broken = verify_after(path, append_row)
    assert broken == ChainBreak(6, "hash does not match the body")


def test_row_inserted_in_the_middle_with_renumbering(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    placed = build(path, 6)
    forged, body = seal(signal(99), 4, placed[2].hash)

    def insert_fake(db: sqlite3.Connection) -> None:
        shift_up(db, 4)
        insert(db, 4, forged, body, "0" * 64)

    broken = verify_after(path, insert_fake)
    assert broken is not None
    assert broken.seq == 4


def test_well_forged_insert_breaks_at_the_next_row(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    placed = build(path, 6)
    forged, body = seal(signal(99), 4, placed[2].hash)  # a correct hash for its place

    def insert_forged(db: sqlite3.Connection) -> None:
        shift_up(db, 4)
        insert(db, 4, forged, body, forged.hash)

    broken = verify_after(path, insert_forged)
    assert broken is not None
    assert broken.seq == 5
    assert "seq 4" in broken.reason


def test_changed_column_is_found(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    build(path, 4)
    broken = verify_after(
        path, lambda db: db.execute("UPDATE events SET stream = 'x' WHERE seq = 2")
    )
    assert broken is not None
    assert broken.seq == 2
    assert "stream" in broken.reason


# --------------------------------------------------------------------------- placement


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
events = st.builds(
    Event,
    id=st.text(min_size=1, max_size=12),
    type=st.sampled_from(["SignalReceived", "Tick", "IncidentOpened"]),
    v=st.integers(1, 3),
    ts=st.datetimes(
        min_value=datetime(1990, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7))]),
    ),
    stream=st.text(min_size=1, max_size=12),
    correlation_id=st.none() | st.text(max_size=6),
    causation_id=st.none() | st.text(max_size=6),
    actor=st.text(max_size=8),
    data=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)


@settings(max_examples=50, deadline=None)
@given(batches=st.lists(st.lists(events, min_size=1, max_size=4), min_size=1, max_size=3))
def test_placement_is_exactly_seal(batches: list[list[Event]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = log_path(Path(folder))
        with SQLiteEventLog(str(path), synchronous="NORMAL") as log:
            placed = [e for batch in batches for e in log.append(batch)]
            expected = sealed_chain([e for batch in batches for e in batch])
            assert placed == expected
            assert [e.model_fields_set for e in placed] == [e.model_fields_set for e in expected]
            assert list(log.read()) == expected
            assert log.verify() is None
        with raw(path) as db:
            stored = db.execute("SELECT seq, id, type, stream, body, hash FROM events ORDER BY seq")
            for seq, id_, type_, stream, body, hash_ in stored:
                event = expected[seq - 1]
                assert body == canonical_body(event.model_copy(update={"hash": ""}))
                assert hash_ == event.hash == chain_hash(event.prev_hash, body)
                assert (id_, type_, stream) == (event.id, event.type, event.stream)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Held(threading.Event):
    """Set once the writer has taken the group it is held in; `groups` are the sizes of the
    groups it commits from then on."""

    groups: list[int]


@contextmanager
def held_writer(log: SQLiteEventLog) -> Iterator[Held]:
    """Hold the writer inside its next commit until the context ends, so that the requests
    made meanwhile queue up together."""
    taken, gate = Held(), threading.Event()
    taken.groups = []
    commit = log._commit

    def held(group: list[Any]) -> list[Any]:
        taken.groups.append(len(group))
        taken.set()
        gate.wait()
        return commit(group)

    log._commit = held  # type: ignore[method-assign]
    try:
        yield taken
    finally:
        gate.set()


def test_group_shares_one_commit_and_isolates_a_bad_batch(tmp_path: Path) -> None:
    log = SQLiteEventLog(str(log_path(tmp_path)))
    bad = signal(50).model_copy(update={"data": {"labels": {1, 2}}})
    results: dict[str, Any] = {}

    def call(name: str, batch: list[Event]) -> None:
        try:
            results[name] = log.append(batch)
        except Exception as exc:
            results[name] = exc

    batches = {"a": signals(1, 3), "bad": [signal(4), bad], "b": signals(6, 2)}
    callers = [threading.Thread(target=call, args=item) for item in batches.items()]
    with held_writer(log) as taken:
        first = threading.Thread(target=call, args=("first", [signal(0)]))
        first.start()
        taken.wait()
        for caller in callers:
            caller.start()
        wait_until(lambda: len(log._queue) == 3)
    for thread in [first, *callers]:
        thread.join()
    assert taken.groups == [1, 3]  # the three queued requests shared one transaction
    assert isinstance(results["bad"], TypeError)
    assert [e.seq for e in results["first"]] == [1]
    for name in ("a", "b"):
        seqs = [e.seq for e in results[name]]
        assert seqs == list(range(seqs[0], seqs[0] + len(batches[name])))
    assert sorted(e.seq for name in ("a", "b") for e in results[name]) == [2, 3, 4, 5, 6]
    assert log.verify() is None
    log.close()


def test_failed_group_commit_fails_every_caller(tmp_path: Path) -> None:
    suite = TestSQLiteEventLog()
    log = suite.make_log(tmp_path)
    placed = log.append(signals(0, 1))
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            log.append(signals(10 * i, 2))
        except sqlite3.Error as exc:
            errors.append(exc)

    with suite.failing_commits(log, tmp_path):
        callers = [threading.Thread(target=call, args=(i,)) for i in range(1, 9)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        assert len(errors) == 8
        assert log.head() == (1, placed[0].hash)
    assert log.append(signals(100, 1))[0].seq == 2
    log.close()


def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    path = str(log_path(tmp_path))
    log = SQLiteEventLog(path)
    results: list[list[Event]] = []
    callers = [
        threading.Thread(target=lambda i=i: results.append(log.append([signal(i)])))
        for i in range(4)
    ]
    with held_writer(log) as taken:
        callers[0].start()
        taken.wait()
        for caller in callers[1:]:
            caller.start()
        wait_until(lambda: len(log._queue) == 3)
        closer = threading.Thread(target=log.close)
        closer.start()
        wait_until(lambda: log._closing)
    closer.join()
    for caller in callers:
        caller.join()
    assert sorted(batch[0].seq for batch in results) == [1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="closed"):
        log.append([signal(9)])
    log.close()  # closing twice is fine
    with SQLiteEventLog(path) as reopened:
        assert reopened.head()[0] == 4
        assert reopened.verify() is None


def test_append_async(tmp_path: Path) -> None:
    async def main(log: SQLiteEventLog) -> list[list[Event]]:
        return list(await asyncio.gather(*(log.append_async(signals(10 * i, 3)) for i in range(5))))

    with SQLiteEventLog(str(log_path(tmp_path))) as log:
        batches = asyncio.run(main(log))
        assert asyncio.run(log.append_async([])) == []
        for batch in batches:
            assert [e.seq for e in batch] == list(range(batch[0].seq, batch[0].seq + 3))
        assert sorted(e.seq for batch in batches for e in batch) == list(range(1, 16))
        assert list(log.read()) == sorted((e for b in batches for e in b), key=lambda e: e.seq)
        assert log.verify() is None


def test_cancelled_append_async_still_appends(tmp_path: Path) -> None:
    async def main(log: SQLiteEventLog) -> None:
        with held_writer(log) as taken:
            blocker = asyncio.ensure_future(log.append_async([signal(0)]))
            await asyncio.to_thread(taken.wait)
            task = asyncio.ensure_future(log.append_async(signals(1, 2)))
            await asyncio.sleep(0.01)
            task.cancel()
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await task

    with SQLiteEventLog(str(log_path(tmp_path))) as log:
        asyncio.run(main(log))
        wait_until(lambda: log.head()[0] == 3)  # the cancelled batch was queued: it commits
        assert log.append([signal(3)])[0].seq == 4
        assert log.verify() is None


def test_long_batches_and_paged_reads(tmp_path: Path) -> None:
    with SQLiteEventLog(str(log_path(tmp_path)), page=7, progress_every=40) as log:
        placed = log.append(signals(0, 100)) + log.append(signals(100, 3))
        assert placed == sealed_chain(signals(0, 103))
        assert list(log.read()) == placed
        assert list(log.read(after=5, limit=16)) == placed[5:21]
        assert list(log.read(after=95, limit=50)) == placed[95:]
        calls: list[tuple[int, int]] = []
        assert log.verify(lambda done, total: calls.append((done, total))) is None
        assert calls == [(40, 103), (80, 103), (103, 103)]


# --------------------------------------------------------------------------- files


def test_file_is_in_wal_mode_with_the_expected_tables(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    build(path, 2)
    with raw(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"events", "repeats", "snapshots", "snapshot_parts", "meta"}
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"events_type", "events_stream", "repeats_base"} <= indexes


def test_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "events.db"
    with SQLiteEventLog(str(path)) as log:
        log.append([signal(0)])
    assert path.exists()


def test_a_text_file_is_not_a_log(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the events you are looking for\n" * 20)
    with pytest.raises(ValueError, match=r"notes\.txt"):
        SQLiteEventLog(str(path))


def test_another_sqlite_database_is_not_a_log(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with raw(path) as db:
        db.execute("CREATE TABLE things(x)")
    with pytest.raises(ValueError, match=r"other\.db is not an onduty event log"):
        SQLiteEventLog(str(path))


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteEventLog(str(log_path(tmp_path)), synchronous="OFF")
    with pytest.raises(ValueError, match="snapshot_keep"):
        SQLiteEventLog(str(log_path(tmp_path)), snapshot_keep=0)
    with pytest.raises(ValueError, match="page and progress_every"):
        SQLiteEventLog(str(log_path(tmp_path)), page=0)


def test_snapshots_are_pruned(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    with SQLiteEventLog(str(path), snapshot_keep=2) as log:
        for seq in (5, 1, 9, 7):
            log.save_snapshot(Snapshot(seq, {"seq": seq}))
        assert log.latest_snapshot() == Snapshot(9, {"seq": 9})
    with raw(path) as db:
        kept = [r[0] for r in db.execute("SELECT seq FROM snapshots ORDER BY seq")]
        assert kept == [7, 9]
        assert orjson.loads(db.execute("SELECT state FROM snapshots WHERE seq = 9").fetchone()[0])


def test_a_large_snapshot_is_written_a_part_at_a_time_and_reads_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state larger than a part goes in several short transactions (appends commit between
    them), becomes visible only whole, and its parts go with it; an edited part is caught by
    the snapshot's digest like an edited state."""
    monkeypatch.setattr(snapshot_rows, "PART", 64)
    path = log_path(tmp_path)
    state = {"alerts": [f"alert-{n}" for n in range(40)]}
    with SQLiteEventLog(str(path), snapshot_keep=1) as log:
        placed = log.append(signals(0, 3))
        writes: list[int] = []
        original = log._write

        def counting(*statements: Any) -> None:
            writes.append(len(statements))
            original(*statements)

        monkeypatch.setattr(log, "_write", counting)
        log.save_snapshot(Snapshot.bound(3, placed[-1].hash, state))
        assert len(writes) > 5  # one per part, then the row
        assert log.latest_snapshot() == Snapshot.bound(3, placed[-1].hash, state)
        assert check_snapshot(log, log.snapshots()[0]) is None
        with raw(path) as db:
            db.execute("UPDATE snapshot_parts SET data = replace(data, 'alert-7', 'alert-8')")
            db.execute("INSERT INTO snapshot_parts VALUES (99, 0, x'00')")  # left by a crash
        assert check_snapshot(log, log.snapshots()[0]) is not None
        log.save_snapshot(Snapshot.bound(3, placed[-1].hash, {"small": True}))
        log.save_snapshot(Snapshot.bound(2, placed[1].hash, {"small": True}))
    with raw(path) as db:
        assert db.execute("SELECT count(*) FROM snapshot_parts").fetchone()[0] == 0


def test_in_memory_log() -> None:
    with SQLiteEventLog(":memory:", synchronous="NORMAL") as log:
        placed = log.append(signals(0, 4))
        threads = [
            threading.Thread(target=log.append, args=(signals(10 * i, 2),)) for i in range(1, 5)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert list(log.read(limit=4)) == placed
        assert log.head()[0] == 12
        assert log.verify() is None
        log.save_snapshot(Snapshot(12, {"ok": True}))
        assert log.latest_snapshot() == Snapshot(12, {"ok": True})
        log.set_meta("k", "v")
        assert log.get_meta("k") == "v"


def test_open_log_urls(tmp_path: Path) -> None:
    log = open_log(f"sqlite:///{tmp_path}/by-url.db")
    try:
        assert isinstance(log, SQLiteEventLog)
        assert log.head() == (0, GENESIS_HASH)
    finally:
        log.close()
    assert (tmp_path / "by-url.db").exists()


# --------------------------------------------------------------------------- snapshot binding


def test_a_log_written_before_snapshots_were_bound_opens_and_its_snapshot_is_untrusted(
    tmp_path: Path,
) -> None:
    path = log_path(tmp_path)
    build(path, 3)
    with raw(path) as db:  # the snapshots table as older versions made it, with one snapshot
        db.execute("DROP TABLE snapshots")
        db.execute("CREATE TABLE snapshots(seq INTEGER PRIMARY KEY, state BLOB)")
        db.execute("INSERT INTO snapshots VALUES (3, ?)", (orjson.dumps({"seq": 3}),))
    with SQLiteEventLog(str(path)) as log:
        assert log.latest_snapshot() == Snapshot(3, {"seq": 3})
        snapshot, discarded = trusted_snapshot(log)
        assert snapshot is None
        assert discarded == [SnapshotProblem(3, discarded[0].reason)]
        assert "older version" in discarded[0].reason
        head_seq, head_hash = log.head()
        log.save_snapshot(Snapshot.bound(head_seq, head_hash, {"seq": 3}))  # the new columns
        assert trusted_snapshot(log)[0] == Snapshot.bound(head_seq, head_hash, {"seq": 3})


@pytest.mark.parametrize(
    ("stored", "reason"),
    [(b"{not json", "does not decode"), (b"[1, 2]", "not a JSON object")],
)
def test_a_snapshot_that_does_not_decode_is_untrusted(
    tmp_path: Path, stored: bytes, reason: str
) -> None:
    path = log_path(tmp_path)
    with SQLiteEventLog(str(path)) as log:
        placed = log.append(signals(0, 2))
        log.save_snapshot(Snapshot.bound(2, placed[-1].hash, {"seq": 2}))
    with raw(path) as db:
        db.execute("UPDATE snapshots SET state = ? WHERE seq = 2", (stored,))
    with SQLiteEventLog(str(path)) as log:
        problems = verify_snapshots(log)
        assert [p.seq for p in problems] == [2]
        assert reason in problems[0].reason


def test_a_store_that_cannot_be_opened_names_the_file_and_why(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"cannot create its folder .*a-file"):
        open_log(str(blocker / "events.db"))
    with pytest.raises(StoreError, match="cannot open the event log"):
        open_log(str(tmp_path))  # a folder
    with pytest.raises(StoreError, match="unsupported scheme 'mysql'"):
        open_log("mysql://db/onduty")


# --------------------------------------------------------------------------- re-sent signals


def alert(i: int, instance: str = "api-1") -> Event:
    """A firing alert as Alertmanager delivers it (~1 KB of labels and annotations), its `i`th
    delivery: a new id and time, the same content."""
    labels = {
        "alertname": "HighLatency", "service": "api", "instance": instance, "job": "api",
        "severity": "critical", "team": "team-api", "env": "production", "region": "eu-west-1",
        "cluster": "prod-eu-west-1", "namespace": "api-prod", "pod": f"{instance}-5f7c9d8b6d",
        "prometheus": "monitoring/k8s",
    }  # fmt: skip
    body = SignalReceived(
        source="alertmanager",
        fingerprint=f"fp-{instance}",
        status="firing",
        labels=labels,
        annotations={
            "summary": f"HighLatency on {instance}",
            "description": f"HighLatency has been active on {instance} (api, eu-west-1) for "
            "more than 5 minutes; current value 0.953.",
            "runbook_url": "https://runbooks.example.com/api/HighLatency",
            "dashboard": f"https://grafana.example.com/d/api?var-instance={instance}",
        },
        starts_at=datetime(2024, 5, 1, 11, 0, tzinfo=UTC),
        generator_url="http://prometheus:9090/graph?g0.expr=latency%7Bjob%3D%22api%22%7D",
    )
    ts = datetime(2024, 5, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=i, microseconds=7 * i)
    return make_event(body, id=f"3f2a9c1b7d4e-{i}", ts=ts, stream=f"signal:fp-{instance}")


def file_bytes(path: Path) -> int:
    with raw(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(db.execute("PRAGMA page_count").fetchone()[0]) * int(
            db.execute("PRAGMA page_size").fetchone()[0]
        )


def test_a_resent_alert_costs_a_tenth_of_a_new_one(tmp_path: Path) -> None:
    """Bytes on disk per alert: 50 alerts re-sent 40 times against 2,000 distinct ones."""
    sizes = {}
    for name, instances in (("new", lambda r, k: f"api-{r}-{k}"), ("resent", lambda r, k: k)):
        path = tmp_path / f"{name}.db"
        with SQLiteEventLog(str(path)) as log:
            log.append([alert(k, f"api-{k}") for k in range(50)])
            start = file_bytes(path)
            for r in range(40):
                log.append([alert(100 + 50 * r + k, f"api-{instances(r, k)}") for k in range(50)])
            assert log.verify() is None
        sizes[name] = (file_bytes(path) - start) / 2_000
    assert sizes["new"] > 1_000
    assert sizes["resent"] <= sizes["new"] / 10


def test_a_changed_repeat_is_found_at_its_seq(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    with SQLiteEventLog(str(path)) as log:
        placed = log.append([alert(i) for i in range(6)])
    with raw(path) as db:
        assert [r[0] for r in db.execute("SELECT seq FROM repeats ORDER BY seq")] == [2, 3, 4, 5, 6]
        assert list(db.execute("SELECT seq FROM events")) == [(1,)]
    changes = {
        "id": "UPDATE repeats SET id = 'forged' WHERE seq = 4",
        "ts": "UPDATE repeats SET ts = ts + 1 WHERE seq = 4",
        "delta": """UPDATE repeats SET delta = '{"status":"resolved"}' WHERE seq = 4""",
        "hash": "UPDATE repeats SET hash = zeroblob(32) WHERE seq = 4",
        "base": "UPDATE repeats SET base = 5 WHERE seq = 4",
    }
    for column, statement in changes.items():
        copy = tmp_path / f"{column}.db"
        with raw(path) as db:
            db.execute(f"VACUUM INTO '{copy}'")
        broken = verify_after(copy, lambda db, sql=statement: db.execute(sql))
        assert broken is not None and broken.seq == 4, column
    with SQLiteEventLog(str(path)) as log:
        assert list(log.read()) == placed


def test_a_log_of_the_first_format_is_read_and_upgraded(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    placed = build(path, 3)
    with raw(path) as db:
        db.executescript(
            "DROP TABLE repeats; UPDATE meta SET value = 'onduty-eventlog/1' WHERE key = 'format'"
        )
    with SQLiteEventLog(str(path)) as log:
        assert list(log.read()) == placed
        more = log.append([alert(1), alert(2)])
        assert list(log.read()) == placed + more
        assert log.verify() is None
    with raw(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() == (
            "onduty-eventlog/2",
        )
        assert db.execute("SELECT count(*) FROM repeats").fetchone() == (1,)


def test_only_the_same_alert_again_is_stored_as_a_repeat(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    first = alert(0)
    relabelled = first.data["labels"] | {"severity": "warning"}
    later = first.model_copy(update={"id": "e-2", "data": first.data | {"labels": relabelled}})
    ended = first.model_copy(
        update={"id": "e-3", "data": first.data | {"ends_at": "2024-05-01T13:00:00Z"}}
    )
    with SQLiteEventLog(str(path)) as log:
        placed = log.append([first, alert(1), ended, later])
        assert list(log.read()) == placed
        assert log.verify() is None
    with raw(path) as db:
        assert [r[0] for r in db.execute("SELECT seq FROM events ORDER BY seq")] == [1, 4]
        assert list(db.execute("SELECT seq, base, delta FROM repeats ORDER BY seq")) == [
            (2, 1, None),
            (3, 1, b'{"ends_at":"2024-05-01T13:00:00Z"}'),
        ]


def test_repeats_read_back_when_their_bases_outgrow_the_readers_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page that needs a base parsed for an earlier page, and more new bases than the cache
    has room for, still rebuilds every repeat (the cache once dropped the old base and read
    said "its base event … is not stored in full")."""
    monkeypatch.setattr(repeats, "BASE_CACHE", 4)
    streams = [f"signal:s{n}" for n in range(6)]
    events = [resent(n, stream) for n, stream in enumerate(streams)]  # the bases, in full
    events += [resent(10 + k, streams[k % 6 if k % 3 else 0]) for k in range(60)]
    path = tmp_path / "onduty.db"
    with SQLiteEventLog(str(path), page=5) as log:
        placed = log.append(events)
        assert [e.model_dump() for e in log.read()] == [e.model_dump() for e in placed]
        assert log.verify() is None
    with raw(path) as db:
        assert db.execute("SELECT count(*) FROM repeats").fetchone()[0] == 60


def test_the_wal_is_checkpointed_by_a_thread_of_its_own_not_by_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append never copies the WAL back into the database (that stalled ingest); the log's
    own thread does, once the WAL passes its threshold."""
    monkeypatch.setattr(wal, "THRESHOLD", 64 << 10)
    monkeypatch.setattr(wal, "EVERY_S", 0.02)
    path = log_path(tmp_path)
    with SQLiteEventLog(str(path)) as log:
        assert log._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        before = path.stat().st_size
        log.append(signals(0, 2_000))
        deadline = time.monotonic() + 10
        while path.stat().st_size <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.stat().st_size > before  # the events reached the database file
        assert len(list(log.read())) == 2_000
