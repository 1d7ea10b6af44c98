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
from pathlib import Path
from typing import Any

import orjson

from onduty.events import Event, event_from_body
from onduty.log import repeats, sealed, snapshot_rows
from onduty.log.base import ChainBreak, Snapshot, StoreError, stored_snapshot, walk_chain
from onduty.log.placing import Request, Row
from onduty.log.repeats import Bases, BrokenRepeat, Expander, RepeatRow
from onduty.log.sealed import ArchiveEntry, ArchiveError, Archives
from onduty.log.wal import WalCheckpointer

FORMAT = "onduty-eventlog/2"
# Logs of format 1 (no `repeats` table) are read as they are and upgraded when opened.
_OLD_FORMATS = ("onduty-eventlog/1",)
PAGE = 2_000  # rows fetched at a time by `read` and `verify`
SEQS_CHUNK = 500  # seqs `read_seqs` asks for in one query (SQLite allows 32,766 parameters)
STREAM_PAGE = 128  # rows `read_stream` fetches first (then twice as many, up to PAGE)
PROGRESS_EVERY = 10_000
MAX_LINGER_S = 0.002

_OPT = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL,
    stream TEXT NOT NULL, ts TEXT NOT NULL, body BLOB NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_type ON events(type);
CREATE INDEX IF NOT EXISTS events_stream ON events(stream);
{snapshot_rows.SCHEMA}
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
INSERT OR IGNORE INTO meta(key, value) VALUES ('format', '{FORMAT}');
{repeats.SCHEMA}"""
_INSERT = "INSERT INTO events(seq, id, type, stream, ts, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
_SET_META = "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2"

# the first stored event before seq ?1 whose `ts` column is not the time its (hashed) body says
_BAD_TS = (
    "SELECT seq, ts, json_extract(CAST(body AS TEXT), '$.ts') AS said FROM events "
    "WHERE seq < ?1 AND json_valid(CAST(body AS TEXT)) AND ts IS NOT said ORDER BY seq LIMIT 1"
)


def _checked(rows: list[repeats.FullRow | BrokenRepeat]) -> Iterator[repeats.FullRow]:
    for row in rows:
        if isinstance(row, BrokenRepeat):
            raise row
        yield row


class SQLiteEventLog:
    """An `EventLog` in one SQLite file in WAL mode, or in memory (path ":memory:").

    `synchronous="FULL"` (the default) syncs the write-ahead log at every commit: an appended
    event survives a power loss. `"NORMAL"` syncs only at checkpoints: appended events survive
    a crash of the process, but a power loss or OS crash can lose the last commits (the file
    stays consistent and the chain intact). `snapshot_keep` is how many snapshots are kept.
    `page` is how many rows a read fetches at a time, and `verify` reports progress every
    `progress_every` rows. Events sealed away (`seal`) are read back from the archive files in
    `archives` (default: the folder `<file>.archives` beside the file).
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        snapshot_keep: int = 3,
        page: int = PAGE,
        progress_every: int = PROGRESS_EVERY,
        archives: str | os.PathLike[str] | None = None,
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
            if not self._memory:  # checkpointed by a thread of its own (`onduty.log.wal`)
                self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._init_schema()
            row = self._conn.execute(repeats.HEAD).fetchone()
            recorded = self._conn.execute(
                "SELECT value FROM meta WHERE key = ?", (sealed.META_KEY,)
            ).fetchone()
        except sqlite3.OperationalError as exc:  # cannot open, read-only, locked, a folder …
            self._conn.close()
            raise StoreError(f"cannot open the event log {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"{path} is not an onduty event log: {exc}") from exc
        archive_dir = Path(archives) if archives else None
        if archive_dir is None and not self._memory:
            archive_dir = Path(f"{path}.archives")
        self._archives = Archives(
            archive_dir,
            sealed.entries_from_meta(recorded[0] if recorded else None),
        )
        # an empty live store continues after its last archive (or the genesis)
        self._head = (row[0], repeats.hash_text(row[1])) if row else self._archives.origin
        self._bases = Bases()  # the writer's: the last full signal of each stream
        self._sealed_through = 0  # the writer forgets its bases up to here
        self._conn_lock = threading.Lock()  # the writer connection, and all of ":memory:"
        self._readers: list[sqlite3.Connection] = []  # idle reader connections
        self._readers_lock = threading.Lock()
        self._queue: list[Request] = []
        self._cond = threading.Condition(threading.Lock())
        self._expect = 1  # wake the writer once this many requests are queued
        self._closing = self._closed = False
        self._writer = threading.Thread(target=self._run, name="onduty-log-writer", daemon=True)
        self._writer.start()
        self._wal = None if self._memory else WalCheckpointer(path)

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
        missing = [name for name in snapshot_rows.BINDING if name not in columns]
        adding = "".join(f"ALTER TABLE snapshots ADD COLUMN {name} TEXT;" for name in missing)
        if "snapshot_parts" not in tables:
            adding += snapshot_rows.PARTS_SCHEMA
        if adding:
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
        request = Request(events)
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
        request = Request(events, future)
        self._submit(request)
        await asyncio.wrap_future(future)
        return request.placed()

    def _submit(self, request: Request) -> None:
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

    def _commit(self, group: list[Request]) -> list[Request]:
        """Place the requests of `group` in turn and commit them in one transaction.

        A failed request is finished here with its error; the committed ones are returned. If
        the commit fails, every request of the group fails and the head stays where it was.
        """
        seq, prev = self._head
        rows: list[Row] = []
        reps: list[RepeatRow] = []
        placed: list[Request] = []
        bases = self._bases
        if self._sealed_through:
            bases.forget(self._sealed_through)
            self._sealed_through = 0
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

    def origin(self) -> tuple[int, str]:
        """(seq, hash) of the last event sealed into an archive; (0, GENESIS_HASH) if none."""
        return self._archives.origin

    def archives(self) -> list[ArchiveEntry]:
        """The archives this store sealed events into, oldest first."""
        return list(self._archives.entries)

    @property
    def archive_folder(self) -> Path | None:
        """Where its archives are written and looked for (None for a store in memory)."""
        return self._archives.directory

    def _expander(self) -> Expander:
        return Expander(self._archives.origin, self._archived_bodies)

    def _archived_bodies(self, seqs: list[int]) -> list[tuple[int, bytes]]:
        try:
            return [(row[0], row[4]) for row in self._archives.rows_at(seqs)]
        except ArchiveError:
            return []  # the repeat is reported as one whose base is not stored

    def _rows(self, after: int, limit: int | None) -> Iterator[repeats.FullRow]:
        """The stored events with seq > `after` in order (at most `limit`), a page at a time,
        as (seq, id, type, stream, canonical body, hash), repeats rebuilt; a repeat that
        cannot be rebuilt raises `BrokenRepeat` where it stands. Sealed events come from
        their archives (`ArchiveError` when one cannot be read)."""
        origin = self._archives.origin[0]
        if after < origin:
            for row in self._archives.rows(after, origin + 1):
                if limit is not None:
                    if limit <= 0:
                        return
                    limit -= 1
                yield row
            after = origin
        expander = self._expander()
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
        after a page of results reads little more than that. Sealed events are found by
        reading through their archives."""
        origin, high = self._archives.origin[0], (1 << 62) if before is None else before
        if after >= origin:
            yield from self._read_live_stream(stream, after, high, newest_first)
            return
        if newest_first:  # the archives are read only when the live store was not enough
            yield from self._read_live_stream(stream, origin, high, newest_first)
        rows = self._archives.rows(after, min(high, origin + 1))
        archived = (event_from_body(row[4], row[5]) for row in rows if row[3] == stream)
        yield from reversed(list(archived)) if newest_first else archived
        if not newest_first:
            yield from self._read_live_stream(stream, origin, high, newest_first)

    def _read_live_stream(
        self, stream: str, low: int, high: int, newest_first: bool
    ) -> Iterator[Event]:
        query = repeats.READ_STREAM.format(order="DESC" if newest_first else "ASC")
        size = min(STREAM_PAGE, self.page)
        expander = self._expander()
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
        origin = self._archives.origin[0]
        sealed_away = [seq for seq in wanted if seq <= origin]
        found = [event_from_body(r[4], r[5]) for r in self._archives.rows_at(sealed_away)]
        wanted = wanted[len(sealed_away) :]
        expander = self._expander()
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
        archived = self._archives.problems()
        if archived:
            return archived[0]
        with self._reading() as conn:
            total = conn.execute(repeats.COUNT).fetchone()[0] + self._archives.count
        try:
            broken = walk_chain(self._rows(0, None), total, progress, self.progress_every)
        except BrokenRepeat as error:
            broken = ChainBreak(error.seq, error.reason)
        except ArchiveError as error:  # readable by its digest, but not as an archive
            broken = ChainBreak(self._archives.entries[0].first, str(error))
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
        `snapshot_keep`; a large state a part at a time (`onduty.log.snapshot_rows`)."""
        state = snapshot.encoded or orjson.dumps(snapshot.state)
        binding = (snapshot.event_hash or None, snapshot.digest or None)
        keep = (self.snapshot_keep, self._archives.origin[0])
        for statements in snapshot_rows.transactions(snapshot.seq, state, *binding, *keep):
            self._paced_write(statements)
        with self._reading() as conn:
            orphans = conn.execute(snapshot_rows.ORPHANS, (snapshot.seq,)).fetchall()
        for key in orphans:
            self._paced_write(((snapshot_rows.DROP_PART, key),))

    def _paced_write(self, statements: tuple[tuple[str, tuple[Any, ...]], ...]) -> None:
        self._write(*statements)
        # a lock is not fair: without a pause this thread takes it again at once, and the
        # writer waiting with appends would wait for every one of a series of transactions
        time.sleep(snapshot_rows.PAUSE_S)

    def _snapshots(self, limit: int) -> list[Snapshot]:
        with self._reading() as conn:
            rows = conn.execute(snapshot_rows.LIST, (limit,)).fetchall()
            parts = snapshot_rows.state_of
            found = [(seq, parts(conn, seq, state), *rest) for seq, state, *rest in rows]
        return [stored_snapshot(*row) for row in found]

    def latest_snapshot(self) -> Snapshot | None:
        found = self._snapshots(1)
        return found[0] if found else None

    def snapshots(self) -> list[Snapshot]:
        return self._snapshots(-1)

    def discard_snapshot(self, seq: int) -> None:
        self._write(*((sql, (seq,)) for sql in snapshot_rows.DISCARD))

    def get_meta(self, key: str) -> str | None:
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write((_SET_META, (key, value)))

    # ------------------------------------------------------------------ sealing

    def seal(
        self,
        through: int,
        snapshot: Snapshot,
        manifest: dict[str, Any],
        advance: Callable[[int], Any] | None = None,
    ) -> ArchiveEntry:
        """Move the events up to seq `through` into a new archive, with `manifest` and the
        core's `snapshot` as of `through`, and out of this store. The archive is complete and
        synced before any event leaves; the snapshot is stored here too, so that this store
        starts without its archives. `advance(done)` is told how many are written."""
        origin, origin_hash = self._archives.origin
        folder = self._archives.directory
        if folder is None:
            raise StoreError(f"the event log {self.path} has no file to seal beside")
        if not origin < through <= self._head[0]:
            raise ValueError(
                f"cannot seal through seq {through}: this store holds seq {origin + 1}.."
                f"{self._head[0]}"
            )
        if snapshot.seq != through or not snapshot.digest:
            raise ValueError(f"the snapshot to seal with must be bound at seq {through}")
        folder.mkdir(parents=True, exist_ok=True)
        state = snapshot.encoded or orjson.dumps(snapshot.state)
        bound = {"seq": through, "event_hash": snapshot.event_hash, "digest": snapshot.digest}
        entry = sealed.write_archive(
            folder / sealed.archive_name(Path(self.path).name, origin + 1, through),
            sealed.counted(self._rows(origin, through - origin), advance, self.progress_every),
            first=origin + 1,
            prev_hash=origin_hash,
            manifest={**manifest, "snapshot": {**bound, "state": orjson.Fragment(state)}},
        )
        entries = sealed.entries_to_meta([*self._archives.entries, entry])
        row = (through, state, snapshot.event_hash, snapshot.digest)
        with self._conn_lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                repeats.store_in_full(self._conn, through, self._expander(), _INSERT)
                self._conn.execute("DELETE FROM repeats WHERE seq <= ?", (through,))
                self._conn.execute("DELETE FROM events WHERE seq <= ?", (through,))
                self._conn.execute(snapshot_rows.SAVE, row)
                self._conn.execute("DELETE FROM snapshots WHERE seq < ?", (through,))
                self._conn.execute(_SET_META, (sealed.META_KEY, entries))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        self._archives.added(entry)
        self._sealed_through = through
        return entry

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Commit what is queued, stop the writer and close every connection."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._writer.join()
        if self._wal is not None:
            self._wal.stop()
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
