"""The SQLite event log: one WAL-mode file, one writer thread, group commit.

`append` hands its batch to the writer thread, which drains everything queued so far, places the
batches one after the other at the head of the chain and commits them in ONE transaction, then
wakes each caller. Readers page through their own connections, so `read` and `verify` never
block the writer. One process writes a file at a time; others may read it. A re-sent signal
that repeats the last one of its stream is stored compactly (`onduty.log.repeats`).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from hashlib import sha256
from typing import Any

import orjson

from onduty.events import GENESIS_HASH, Event, encode_body, event_from_body
from onduty.log import repeats
from onduty.log.base import ChainBreak, Snapshot, StoreError, stored_snapshot, walk_chain
from onduty.log.repeats import COMPACT_TYPES, Bases, BrokenRepeat, Expander, RepeatRow

FORMAT = "onduty-eventlog/2"
# Logs of format 1 (no `repeats` table) are read as they are and upgraded when opened.
_OLD_FORMATS = ("onduty-eventlog/1",)
PAGE = 2_000  # rows fetched at a time by `read` and `verify`
SEQS_CHUNK = 500  # seqs `read_seqs` asks for in one query (SQLite allows 32,766 parameters)
STREAM_PAGE = 128  # rows `read_stream` fetches first (then twice as many, up to PAGE)
PROGRESS_EVERY = 10_000
EARLY_BUILD = 64  # a batch this long is rebuilt as events while its commit is in flight
MAX_LINGER_S = 0.002

_OPT = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z
_PLACED = ("seq", "prev_hash", "hash")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL,
    stream TEXT NOT NULL, ts TEXT NOT NULL, body BLOB NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_type ON events(type);
CREATE INDEX IF NOT EXISTS events_stream ON events(stream);
CREATE TABLE IF NOT EXISTS snapshots(seq INTEGER PRIMARY KEY, state BLOB, event_hash TEXT,
    digest TEXT);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
INSERT OR IGNORE INTO meta(key, value) VALUES ('format', '{FORMAT}');
{repeats.SCHEMA}"""
_INSERT = "INSERT INTO events(seq, id, type, stream, ts, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
_SET_META = "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2"
_SAVE_SNAPSHOT = (
    "INSERT OR REPLACE INTO snapshots(seq, state, event_hash, digest) VALUES (?, ?, ?, ?)"
)
# Logs written before snapshots were bound to the chain lack these columns: they are added, and
# the old rows (NULL there) are never trusted.
_SNAPSHOT_BINDING = ("event_hash", "digest")
_PRUNE_SNAPSHOTS = (
    "DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)"
)

# the first stored event before seq ?1 whose `ts` column is not the time its (hashed) body says
_BAD_TS = (
    "SELECT seq, ts, json_extract(CAST(body AS TEXT), '$.ts') AS said FROM events "
    "WHERE seq < ?1 AND json_valid(CAST(body AS TEXT)) AND ts IS NOT said ORDER BY seq LIMIT 1"
)

_Row = tuple[int, str, str, str, str, bytes, str]


def _placed(event: Event, seq: int, prev_hash: str, hash_: str) -> Event:
    """Equal to `seal(event, seq, prev_hash)[0]` (fields set included), without the generic
    overhead of `model_copy`: the event is already valid and only the placement changes."""
    placed = object.__new__(type(event))
    fields = event.__dict__.copy()
    fields["seq"], fields["prev_hash"], fields["hash"] = seq, prev_hash, hash_
    object.__setattr__(placed, "__dict__", fields)
    object.__setattr__(placed, "__pydantic_fields_set__", {*event.model_fields_set, *_PLACED})
    object.__setattr__(placed, "__pydantic_extra__", event.__pydantic_extra__)
    object.__setattr__(placed, "__pydantic_private__", event.__pydantic_private__)
    return placed


def _checked(rows: list[repeats.FullRow | BrokenRepeat]) -> Iterator[repeats.FullRow]:
    for row in rows:
        if isinstance(row, BrokenRepeat):
            raise row
        yield row


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


class _Request:
    """One caller's batch on its way through the writer.

    `sealed` (long batches only) is released once the batch has its place and its rows are
    inserted, so the caller rebuilds the events while the commit is in flight; `durable` once
    the commit is done or failed (then `error` is set); `future` serves `append_async`.
    """

    __slots__ = ("durable", "error", "events", "first", "future", "hashes", "prev", "sealed")

    def __init__(self, events: list[Event], future: Future[None] | None = None) -> None:
        self.events, self.future = events, future
        self.durable = _held_lock()
        early = future is None and len(events) >= EARLY_BUILD
        self.sealed: threading.Lock | None = _held_lock() if early else None
        self.first, self.prev = 0, ""
        self.hashes: list[str] = []
        self.error: BaseException | None = None

    def seal(
        self, seq: int, prev: str, rows: list[_Row], reps: list[RepeatRow], bases: Bases
    ) -> tuple[int, str]:
        """Place the batch after (`seq`, `prev`) and add its rows (a signal that repeats its
        stream's base to `reps`); return the new head.

        The body is built exactly as `canonical_body` builds it (the tests hold it to `seal`).
        """
        self.first, self.prev, self.hashes = seq + 1, prev, []
        add_hash, add_row = self.hashes.append, rows.append
        for e in self.events:
            seq += 1
            body, data, ts = encode_body(e, seq, prev)
            digest = sha256(prev.encode() + body)
            prev = digest.hexdigest()
            add_hash(prev)
            repeat = bases.repeat(e, seq, data) if e.type in COMPACT_TYPES else None
            if repeat is not None:
                reps.append(
                    (seq, repeat[0], e.id, repeats.micros(e.ts), repeat[1], digest.digest())
                )
            else:
                add_row((seq, e.id, e.type, e.stream, ts, body, prev))
        return seq, prev

    def placed(self) -> list[Event]:
        prevs, first = [self.prev, *self.hashes], self.first
        return [_placed(e, first + i, prevs[i], prevs[i + 1]) for i, e in enumerate(self.events)]

    def release_sealed(self) -> None:
        if self.sealed is not None:
            self.sealed.release()
            self.sealed = None

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.release_sealed()
        self.durable.release()
        if self.future is not None:
            if error is None:
                self.future.set_result(None)
            else:
                self.future.set_exception(error)


class SQLiteEventLog:
    """An `EventLog` in one SQLite file in WAL mode, or in memory (path ":memory:").

    `synchronous="FULL"` (the default) syncs the write-ahead log at every commit: an appended
    event survives a power loss. `"NORMAL"` syncs only at checkpoints: appended events survive
    a crash of the process, but a power loss or OS crash can lose the last commits (the file
    stays consistent and the chain intact). `snapshot_keep` is how many snapshots are kept.
    `page` is how many rows a read fetches at a time, and `verify` reports progress every
    `progress_every` rows.
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        snapshot_keep: int = 3,
        page: int = PAGE,
        progress_every: int = PROGRESS_EVERY,
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        if snapshot_keep < 1:
            raise ValueError("snapshot_keep must be at least 1")
        if page < 1 or progress_every < 1:
            raise ValueError("page and progress_every must be at least 1")
        self.path, self.snapshot_keep = path, snapshot_keep
        self.page, self.progress_every = page, progress_every
        self._memory = path == ":memory:"
        if not self._memory and os.path.dirname(path):
            folder = os.path.dirname(path)
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise StoreError(
                    f"cannot open the event log {path}: cannot create its folder {folder} "
                    f"({reason})"
                ) from None
        try:
            self._conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the event log {path}: {exc}") from exc
        try:
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._init_schema()
            row = self._conn.execute(repeats.HEAD).fetchone()
        except sqlite3.OperationalError as exc:  # cannot open, read-only, locked, a folder …
            self._conn.close()
            raise StoreError(f"cannot open the event log {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"{path} is not an onduty event log: {exc}") from exc
        self._head: tuple[int, str] = (
            (row[0], repeats.hash_text(row[1])) if row else (0, GENESIS_HASH)
        )
        self._bases = Bases()  # the writer's: the last full signal of each stream
        self._conn_lock = threading.Lock()  # the writer connection, and all of ":memory:"
        self._readers: list[sqlite3.Connection] = []  # idle reader connections
        self._readers_lock = threading.Lock()
        self._queue: list[_Request] = []
        self._cond = threading.Condition(threading.Lock())
        self._expect = 1  # wake the writer once this many requests are queued
        self._closing = self._closed = False
        self._writer = threading.Thread(target=self._run, name="onduty-log-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _init_schema(self) -> None:
        """Create the tables in an empty database; refuse a database that is not a log."""
        if self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            self._conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
        found = None
        if {"events", "snapshots", "meta"} <= tables:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            found = row[0] if row else None
        if found in _OLD_FORMATS:
            self._conn.executescript(
                f"BEGIN IMMEDIATE;{repeats.SCHEMA}"
                f"UPDATE meta SET value = '{FORMAT}' WHERE key = 'format';COMMIT;"
            )
        elif found != FORMAT:
            raise sqlite3.DatabaseError(f"format is {found!r}, not {FORMAT!r}")
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(snapshots)")}
        missing = [name for name in _SNAPSHOT_BINDING if name not in columns]
        if missing:
            adding = "".join(f"ALTER TABLE snapshots ADD COLUMN {name} TEXT;" for name in missing)
            self._conn.executescript(f"BEGIN IMMEDIATE;{adding}COMMIT;")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection to read with: the only one of ":memory:", else an idle reader's."""
        if self._closed:
            raise RuntimeError(f"the event log {self.path} is closed")
        if self._memory:
            with self._conn_lock:
                yield self._conn
            return
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
        try:
            yield conn
        finally:
            with self._readers_lock:
                if self._closed:
                    conn.close()
                else:
                    self._readers.append(conn)

    # ------------------------------------------------------------------ appending

    def append(self, batch: Sequence[Event]) -> list[Event]:
        """Place `batch` at the head atomically; return the placed events once durable."""
        events = list(batch)
        if not events:
            return []
        request = _Request(events)
        sealed, placed = request.sealed, None
        self._submit(request)
        if sealed is not None:
            sealed.acquire()
            placed = request.placed() if request.error is None else None
        request.durable.acquire()
        if request.error is not None:
            raise request.error
        return request.placed() if placed is None else placed

    async def append_async(self, batch: Sequence[Event]) -> list[Event]:
        """`append` for the event loop: awaits the same durability without blocking the loop."""
        events = list(batch)
        if not events:
            return []
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()  # cancelling the await cannot cancel the append
        request = _Request(events, future)
        self._submit(request)
        await asyncio.wrap_future(future)
        return request.placed()

    def _submit(self, request: _Request) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError(f"the event log {self.path} is closed")
            self._queue.append(request)
            if len(self._queue) >= self._expect:
                self._cond.notify()

    def _run(self) -> None:
        """Commit whatever is queued, again and again, until closed and drained.

        The callers a commit releases usually come straight back with their next batch. Until
        that many requests are queued, the writer lingers (at most about as long as a commit
        takes) so that they share the next commit, rather than forming two smaller groups that
        take turns, each paying for its own sync.
        """
        expect, commit_s = 1, 0.0
        while True:
            with self._cond:
                self._expect = expect
                deadline = time.monotonic() + min(commit_s, MAX_LINGER_S)
                while len(self._queue) < expect and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._cond.wait(left):
                        break
                self._expect = 1
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                group, self._queue = self._queue, []
            started = time.perf_counter()
            committed = self._commit(group)
            commit_s = 0.8 * commit_s + 0.2 * (time.perf_counter() - started)
            with self._cond:
                expect = len(self._queue) + len(group)
            for request in committed:
                request.finish()

    def _commit(self, group: list[_Request]) -> list[_Request]:
        """Place the requests of `group` in turn and commit them in one transaction.

        A failed request is finished here with its error; the committed ones are returned. If
        the commit fails, every request of the group fails and the head stays where it was.
        """
        seq, prev = self._head
        rows: list[_Row] = []
        reps: list[RepeatRow] = []
        placed: list[_Request] = []
        bases = self._bases
        for request in group:
            kept = len(rows), len(reps)
            try:
                seq, prev = request.seal(seq, prev, rows, reps, bases)
            except Exception as exc:  # an event that cannot be serialized fails its batch only
                seq, prev = request.first - 1, request.prev
                del rows[kept[0] :], reps[kept[1] :]
                bases.undo_request()
                request.finish(exc)
            else:
                bases.request_done()
                placed.append(request)
        try:
            with self._conn_lock:
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.executemany(_INSERT, rows)
                    if reps:
                        self._conn.executemany(repeats.INSERT, reps)
                    for request in placed:
                        request.release_sealed()
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
        except BaseException as exc:
            bases.aborted()
            for request in placed:
                request.finish(exc)
            return []
        bases.committed()
        self._head = (seq, prev)
        return placed

    # ------------------------------------------------------------------ reading

    def head(self) -> tuple[int, str]:
        """(last seq, its hash); (0, GENESIS_HASH) when empty."""
        return self._head

    def _rows(self, after: int, limit: int | None) -> Iterator[repeats.FullRow]:
        """The stored events with seq > `after` in order (at most `limit`), a page at a time,
        as (seq, id, type, stream, canonical body, hash), repeats rebuilt; a repeat that
        cannot be rebuilt raises `BrokenRepeat` where it stands."""
        expander = Expander()
        while limit is None or limit > 0:
            size = self.page if limit is None else min(self.page, limit)
            with self._reading() as conn:
                rows = expander.expand(conn, conn.execute(repeats.READ, (after, size)).fetchall())
            yield from _checked(rows)
            if len(rows) < size:
                return
            after, limit = repeats.last_seq(rows), None if limit is None else limit - size

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Event]:
        """The events with seq > `after`, in order (at most `limit`), streamed page by page."""
        for row in self._rows(after, limit):
            yield event_from_body(row[4], row[5])

    def read_stream(
        self, stream: str, after: int = 0, before: int | None = None, *, newest_first: bool = False
    ) -> Iterator[Event]:
        """The events of one `stream` with `after` < seq < `before`, in seq order (or newest
        first), through the stream index; pages grow from a few rows, so a caller that stops
        after a page of results reads little more than that."""
        low, high = after, (1 << 62) if before is None else before
        query = repeats.READ_STREAM.format(order="DESC" if newest_first else "ASC")
        size = min(STREAM_PAGE, self.page)
        expander = Expander()
        while low < high - 1:
            with self._reading() as conn:
                raw = conn.execute(query, (stream, low, high, size)).fetchall()
                rows = expander.expand(conn, raw)
            for row in _checked(rows):
                yield event_from_body(row[4], row[5])
            if len(rows) < size:
                return
            if newest_first:
                high = repeats.last_seq(rows)
            else:
                low = repeats.last_seq(rows)
            size = min(size * 2, self.page)

    def read_seqs(self, seqs: Iterable[int]) -> list[Event]:
        """The events at `seqs`, in seq order, each once (missing seqs skipped), through the
        primary key a chunk of `SEQS_CHUNK` at a time."""
        wanted = sorted(set(seqs))
        found: list[Event] = []
        expander = Expander()
        for start in range(0, len(wanted), SEQS_CHUNK):
            chunk = wanted[start : start + SEQS_CHUNK]
            with self._reading() as conn:
                raw = conn.execute(repeats.read_seqs_query(len(chunk)), chunk + chunk).fetchall()
                rows = expander.expand(conn, raw)
            found.extend(event_from_body(row[4], row[5]) for row in _checked(rows))
        return found

    def verify(self, progress: Callable[[int, int], Any] | None = None) -> ChainBreak | None:
        """Walk the whole chain; None when intact, else the first place where it breaks.

        `progress(done, total)` is called every `progress_every` rows and at the end.
        """
        with self._reading() as conn:
            total = conn.execute(repeats.COUNT).fetchone()[0]
        try:
            broken = walk_chain(self._rows(0, None), total, progress, self.progress_every)
        except BrokenRepeat as error:
            broken = ChainBreak(error.seq, error.reason)
        with self._reading() as conn:  # the one column besides the body that a reader uses
            row = conn.execute(_BAD_TS, (1 << 62 if broken is None else broken.seq,)).fetchone()
        if row is not None:
            return ChainBreak(row[0], f"ts column {row[1]!r} does not match the body's {row[2]!r}")
        return broken

    # ------------------------------------------------------------------ snapshots, meta

    def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """Run `statements` on the writer connection in one transaction."""
        if self._closed:
            raise RuntimeError(f"the event log {self.path} is closed")
        with self._conn_lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._conn.execute(sql, args)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store `snapshot` (its state as JSON, with its binding), keeping only the newest
        `snapshot_keep`."""
        state = snapshot.encoded or orjson.dumps(snapshot.state)
        row = (snapshot.seq, state, snapshot.event_hash or None, snapshot.digest or None)
        self._write((_SAVE_SNAPSHOT, row), (_PRUNE_SNAPSHOTS, (self.snapshot_keep,)))

    def _snapshots(self, limit: int) -> list[Snapshot]:
        query = "SELECT seq, state, event_hash, digest FROM snapshots ORDER BY seq DESC LIMIT ?"
        with self._reading() as conn:
            rows = conn.execute(query, (limit,)).fetchall()
        return [stored_snapshot(*row) for row in rows]

    def latest_snapshot(self) -> Snapshot | None:
        found = self._snapshots(1)
        return found[0] if found else None

    def snapshots(self) -> list[Snapshot]:
        return self._snapshots(-1)

    def discard_snapshot(self, seq: int) -> None:
        self._write(("DELETE FROM snapshots WHERE seq = ?", (seq,)))

    def get_meta(self, key: str) -> str | None:
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write((_SET_META, (key, value)))

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Commit what is queued, stop the writer and close every connection."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._writer.join()
        with self._readers_lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        with self._conn_lock:
            self._conn.close()

    def __enter__(self) -> SQLiteEventLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
