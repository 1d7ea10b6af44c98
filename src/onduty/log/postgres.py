"""The PostgreSQL event log: one hash chain per partition, appends grouped and copied in bulk.

A store is a schema of one database (`postgresql://…/db?schema=onduty`, the default schema
`onduty`); it holds any number of partitions, each an `EventLog` of its own with its own
sequence numbers, hash chain, snapshots and metadata. An append locks only its partition's
head row, so managers appending to different partitions never wait for each other; one
partition is written by the one manager that holds its lease, which a `fence` checks in the
appending transaction itself.

Like the SQLite log, `append` hands its batch to a writer thread that places everything queued
so far after the head and commits it in one transaction (group commit); the rows go in by one
binary `COPY`. Readers use connections of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from onduty.events import GENESIS_HASH, Event, event_from_body
from onduty.log.base import ChainBreak, Snapshot, StoreError, stored_snapshot, walk_chain
from onduty.log.pg import StoreURLError, parse_store_url, redact
from onduty.log.placing import Request, Row
from onduty.log.repeats import Bases, RepeatRow

FORMAT = "onduty-eventlog-pg/1"
PAGE = 2_000  # rows fetched at a time by `read` and `verify`
STREAM_PAGE = 128  # rows `read_stream` fetches first (then twice as many, up to PAGE)
SEQS_CHUNK = 1_000  # seqs `read_seqs` asks for in one query
PROGRESS_EVERY = 10_000
CONNECT_TIMEOUT_S = 5
_STORE_KEY = -1  # the `partition` of what belongs to the whole store (its format)

Fence = Callable[[psycopg.Connection[Any]], str | None]
"""Run inside an appending transaction, before its commit: why this writer may no longer
append to the partition (its lease was taken over), or None when it may."""


class Fenced(StoreError):
    """An append refused because its writer no longer owns the partition."""


@dataclass(frozen=True)
class PostgresURL:
    """A store URL taken apart: the connection string libpq reads, the schema, the partition."""

    conninfo: str
    schema: str
    partition: int

    @classmethod
    def parse(cls, url: str) -> PostgresURL:
        """`postgresql://user@host:port/db?schema=NAME&partition=N` (both optional; other
        query parameters go to libpq). Raises `StoreError` naming what is wrong."""
        try:
            parsed = parse_store_url(url, own=("partition",))
        except StoreURLError as error:
            raise StoreError(str(error)) from None
        raw_partition = parsed.options.get("partition", "0")
        if not raw_partition.isdigit():
            raise StoreError(
                f"store {redact(url)}: partition {raw_partition!r} must be a whole number >= 0"
            )
        return cls(parsed.conninfo, parsed.schema, int(raw_partition))


def connect(conninfo: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    """A connection to the store's database, bounded in how long it may take to open."""
    return psycopg.connect(
        conninfo,
        autocommit=autocommit,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="onduty",
    )


def _schema_statements(schema: str) -> list[sql.Composed]:
    s = sql.Identifier(schema)
    ddl = [
        "CREATE SCHEMA IF NOT EXISTS {s}",
        "CREATE TABLE IF NOT EXISTS {s}.events (partition integer NOT NULL, seq bigint NOT NULL,"
        " id text NOT NULL, type text NOT NULL, stream text NOT NULL, ts text NOT NULL,"
        " body bytea NOT NULL, hash text NOT NULL, PRIMARY KEY (partition, seq))",
        # one stream lives in one partition; the fleet's view reads a stream without knowing
        # which, in position order (seq, partition)
        "CREATE INDEX IF NOT EXISTS events_stream ON {s}.events (stream, seq, partition)",
        "CREATE INDEX IF NOT EXISTS events_position ON {s}.events (seq, partition)",
        "CREATE TABLE IF NOT EXISTS {s}.heads (partition integer PRIMARY KEY,"
        " seq bigint NOT NULL, hash text NOT NULL)",
        "CREATE TABLE IF NOT EXISTS {s}.snapshots (partition integer NOT NULL,"
        " seq bigint NOT NULL, state bytea NOT NULL, event_hash text, digest text,"
        " PRIMARY KEY (partition, seq))",
        "CREATE TABLE IF NOT EXISTS {s}.meta (partition integer NOT NULL, key text NOT NULL,"
        " value text NOT NULL, PRIMARY KEY (partition, key))",
    ]
    return [sql.SQL(statement).format(s=s) for statement in ddl]


def prepare_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the store's tables in `schema` when absent; refuse a schema holding something
    else. Several processes may open one store at once: one of them creates it."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"onduty-store:{schema}",))
        for statement in _schema_statements(schema):
            conn.execute(statement)
        meta = sql.SQL("INSERT INTO {s}.meta VALUES (%s, 'format', %s) ON CONFLICT DO NOTHING")
        conn.execute(meta.format(s=sql.Identifier(schema)), (_STORE_KEY, FORMAT))
        found = conn.execute(
            sql.SQL("SELECT value FROM {s}.meta WHERE partition = %s AND key = 'format'").format(
                s=sql.Identifier(schema)
            ),
            (_STORE_KEY,),
        ).fetchone()
    if found is None or found[0] != FORMAT:
        raise StoreError(
            f"schema {schema} holds a store of format {found[0] if found else None!r}, "
            f"not {FORMAT!r}"
        )


class _FullRows(Bases):
    """Every event is stored in full: PostgreSQL compresses large bodies by itself (TOAST)."""

    def repeat(self, event: Event, seq: int, data: bytes) -> tuple[int, bytes | None] | None:
        return None


class _Queries:
    """The statements of one schema, composed once."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema)

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(s=s)

        columns = "seq, id, type, stream, body, hash"
        self.head = q("SELECT seq, hash FROM {s}.heads WHERE partition = %s")
        self.lock_head = q("SELECT seq, hash FROM {s}.heads WHERE partition = %s FOR UPDATE")
        self.new_head = q("INSERT INTO {s}.heads VALUES (%s, 0, %s) ON CONFLICT DO NOTHING")
        self.set_head = q("UPDATE {s}.heads SET seq = %s, hash = %s WHERE partition = %s")
        self.copy = q(
            "COPY {s}.events (partition, seq, id, type, stream, ts, body, hash) "
            "FROM STDIN (FORMAT BINARY)"
        )
        self.read = q(
            f"SELECT {columns} FROM {{s}}.events WHERE partition = %s AND seq > %s "
            "ORDER BY seq LIMIT %s"
        )
        self.read_range = q(
            f"SELECT {columns}, ts FROM {{s}}.events WHERE partition = %s AND seq > %s "
            "ORDER BY seq LIMIT %s"
        )
        self.read_stream = {
            order: q(
                f"SELECT {columns} FROM {{s}}.events WHERE partition = %s AND stream = %s "
                f"AND seq > %s AND seq < %s ORDER BY seq {order} LIMIT %s"
            )
            for order in ("ASC", "DESC")
        }
        self.read_seqs = q(
            f"SELECT {columns} FROM {{s}}.events WHERE partition = %s AND seq = ANY(%s) "
            "ORDER BY seq"
        )
        self.count = q("SELECT count(*) FROM {s}.events WHERE partition = %s")
        self.save_snapshot = q(
            "INSERT INTO {s}.snapshots VALUES (%s, %s, %s, %s, %s) ON CONFLICT (partition, seq) "
            "DO UPDATE SET state = EXCLUDED.state, event_hash = EXCLUDED.event_hash, "
            "digest = EXCLUDED.digest"
        )
        self.trim_snapshots = q(
            "DELETE FROM {s}.snapshots WHERE partition = %s AND seq NOT IN (SELECT seq FROM "
            "{s}.snapshots WHERE partition = %s ORDER BY seq DESC LIMIT %s)"
        )
        self.snapshots = q(
            "SELECT seq, state, event_hash, digest FROM {s}.snapshots WHERE partition = %s "
            "ORDER BY seq DESC LIMIT %s"
        )
        self.discard_snapshot = q("DELETE FROM {s}.snapshots WHERE partition = %s AND seq = %s")
        self.get_meta = q("SELECT value FROM {s}.meta WHERE partition = %s AND key = %s")
        self.set_meta = q(
            "INSERT INTO {s}.meta VALUES (%s, %s, %s) "
            "ON CONFLICT (partition, key) DO UPDATE SET value = EXCLUDED.value"
        )
        self.partitions = q("SELECT partition, seq, hash FROM {s}.heads ORDER BY partition")


class PostgresEventLog:
    """An `EventLog`: one partition of a PostgreSQL store.

    `fence`, when given, is asked inside every appending transaction whether this writer still
    owns the partition; a refusal fails the append with `Fenced` and nothing is written.
    `snapshot_keep` is how many snapshots are kept; `page` how many rows a read fetches at a
    time; `verify` reports progress every `progress_every` rows.
    """

    def __init__(
        self,
        url: str,
        partition: int | None = None,
        *,
        fence: Fence | None = None,
        snapshot_keep: int = 3,
        page: int = PAGE,
        progress_every: int = PROGRESS_EVERY,
    ) -> None:
        if snapshot_keep < 1 or page < 1 or progress_every < 1:
            raise ValueError("snapshot_keep, page and progress_every must be at least 1")
        where = PostgresURL.parse(url)
        self.url, self.schema = redact(url), where.schema
        self.partition = where.partition if partition is None else partition
        if self.partition < 0:
            raise ValueError(f"partition must be >= 0, not {self.partition}")
        self.path = f"{self.url} (partition {self.partition})"  # what messages name
        self.snapshot_keep, self.page, self.progress_every = snapshot_keep, page, progress_every
        self._conninfo, self._fence, self._given_url = where.conninfo, fence, url
        self._q = _Queries(self.schema)
        try:
            self._conn = connect(self._conninfo, autocommit=True)
        except psycopg.OperationalError as error:
            raise StoreError(self._cannot_open(error)) from None
        try:
            prepare_schema(self._conn, self.schema)
            self._conn.execute(self._q.new_head, (self.partition, GENESIS_HASH))
            row = self._conn.execute(self._q.head, (self.partition,)).fetchone()
            assert row is not None  # made just above when absent
        except psycopg.Error as error:
            self._conn.close()
            raise StoreError(self._cannot_open(error)) from None
        except BaseException:
            self._conn.close()
            raise
        self._head: tuple[int, str] = (int(row[0]), str(row[1]))
        self._conn_lock = threading.Lock()  # the writer's connection
        self._readers: list[psycopg.Connection[Any]] = []
        self._readers_lock = threading.Lock()
        self._queue: list[Request] = []
        self._cond = threading.Condition(threading.Lock())
        self._closing = self._closed = False
        name = f"onduty-log-writer-p{self.partition}"
        self._writer = threading.Thread(target=self._run, name=name, daemon=True)
        self._writer.start()

    def sibling(self, partition: int, *, fence: Fence | None = None) -> PostgresEventLog:
        """Another partition of the same store, opened with this one's settings."""
        return PostgresEventLog(
            self._given_url,
            partition,
            fence=fence,
            snapshot_keep=self.snapshot_keep,
            page=self.page,
            progress_every=self.progress_every,
        )

    def _cannot_open(self, error: psycopg.Error) -> str:
        return f"cannot open the event log {self.url}: {_first_line(error)}"

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise RuntimeError(f"the event log {self.path} is closed")
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = connect(self._conninfo, autocommit=True)
        try:
            yield conn
        except psycopg.OperationalError:
            conn.close()  # a broken connection is not handed out again
            raise
        finally:
            with self._readers_lock:
                if self._closed or conn.closed:
                    conn.close()
                else:
                    self._readers.append(conn)

    # ------------------------------------------------------------------ appending

    def append(self, batch: Sequence[Event]) -> list[Event]:
        """Place `batch` at the head of this partition atomically; return the placed events
        once the transaction holding them is committed."""
        events = list(batch)
        if not events:
            return []
        request = Request(events)
        with self._cond:
            if self._closing:
                raise RuntimeError(f"the event log {self.path} is closed")
            self._queue.append(request)
            self._cond.notify()
        if request.sealed is not None:
            request.sealed.acquire()
        request.durable.acquire()
        if request.error is not None:
            raise request.error
        return request.placed()

    def _run(self) -> None:
        """Commit whatever is queued, again and again, until closed and drained."""
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                group, self._queue = self._queue, []
            for request in self._commit(group):
                request.finish()

    def _commit(self, group: list[Request]) -> list[Request]:
        """Place the requests of `group` after the partition's head, as the database holds it
        (locked until the commit), and commit them in one transaction. A request that cannot
        be serialized fails alone; a failed commit fails the whole group."""
        placed: list[Request] = []
        failed: list[Request] = []
        try:
            with self._conn_lock:
                self._reconnect_if_broken()
            with self._conn_lock, self._conn.transaction():
                row = self._conn.execute(self._q.lock_head, (self.partition,)).fetchone()
                if row is None:  # the head row is made when the partition is opened
                    raise StoreError(f"the event log {self.path} has no head row")
                seq, prev = int(row[0]), str(row[1])
                rows: list[Row] = []
                for request in group:
                    kept, unused = len(rows), list[RepeatRow]()
                    try:
                        seq, prev = request.seal(seq, prev, rows, unused, _FullRows())
                    except Exception as exc:  # fails its own batch only
                        seq, prev = request.first - 1, request.prev
                        del rows[kept:]
                        request.finish(exc)
                        failed.append(request)
                    else:
                        placed.append(request)
                if not placed:
                    return []
                self._copy(rows)
                for request in placed:
                    request.release_sealed()
                if self._fence is not None:
                    refused = self._fence(self._conn)
                    if refused is not None:
                        raise Fenced(f"append to {self.path} refused: {refused}")
                self._conn.execute(self._q.set_head, (seq, prev, self.partition))
        except BaseException as exc:  # every request not failed alone fails with the commit
            for request in group:
                if not any(request is alone for alone in failed):
                    request.finish(exc)
            return []
        self._head = (seq, prev)
        return placed

    def _reconnect_if_broken(self) -> None:
        """A connection lost with the server (a restart, a network cut) is replaced: the
        commit that saw it break failed, the next one gets a fresh connection."""
        if self._conn.broken or self._conn.closed:
            self._conn.close()
            self._conn = connect(self._conninfo, autocommit=True)

    def _copy(self, rows: list[Row]) -> None:
        partition = self.partition
        with self._conn.cursor() as cursor, cursor.copy(self._q.copy) as copy:
            copy.set_types(["int4", "int8", "text", "text", "text", "text", "bytea", "text"])
            for row in rows:
                copy.write_row((partition, *row))

    # ------------------------------------------------------------------ reading

    def head(self) -> tuple[int, str]:
        """(last seq, its hash) of this partition as this handle last saw it committed."""
        return self._head

    def origin(self) -> tuple[int, str]:
        """Nothing is sealed out of a PostgreSQL store: its chain starts at the genesis."""
        return (0, GENESIS_HASH)

    def _pages(self, after: int, limit: int | None) -> Iterator[tuple[Any, ...]]:
        """The stored rows with seq > `after`, in order (at most `limit`), page by page, as
        (seq, id, type, stream, body, hash, ts)."""
        while limit is None or limit > 0:
            size = self.page if limit is None else min(self.page, limit)
            with self._reading() as conn:
                rows = conn.execute(self._q.read_range, (self.partition, after, size)).fetchall()
            yield from rows
            if len(rows) < size:
                return
            after = rows[-1][0]
            limit = None if limit is None else limit - size

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Event]:
        """The events with seq > `after`, in order (at most `limit`), streamed page by page."""
        for row in self._pages(after, limit):
            yield event_from_body(bytes(row[4]), row[5])

    def read_stream(
        self, stream: str, after: int = 0, before: int | None = None, *, newest_first: bool = False
    ) -> Iterator[Event]:
        """The events of one `stream` with `after` < seq < `before`, in seq order (or newest
        first), through the stream index; pages grow from a few rows."""
        low, high = after, (1 << 62) if before is None else before
        query = self._q.read_stream["DESC" if newest_first else "ASC"]
        size = min(STREAM_PAGE, self.page)
        while low < high - 1:
            with self._reading() as conn:
                rows = conn.execute(query, (self.partition, stream, low, high, size)).fetchall()
            for row in rows:
                yield event_from_body(bytes(row[4]), row[5])
            if len(rows) < size:
                return
            if newest_first:
                high = rows[-1][0]
            else:
                low = rows[-1][0]
            size = min(size * 2, self.page)

    def read_seqs(self, seqs: Iterable[int]) -> list[Event]:
        """The events at `seqs`, in seq order, each once (missing seqs skipped)."""
        wanted = sorted(set(seqs))
        found: list[Event] = []
        for start in range(0, len(wanted), SEQS_CHUNK):
            chunk = wanted[start : start + SEQS_CHUNK]
            with self._reading() as conn:
                rows = conn.execute(self._q.read_seqs, (self.partition, chunk)).fetchall()
            found.extend(event_from_body(bytes(row[4]), row[5]) for row in rows)
        return found

    def verify(self, progress: Callable[[int, int], Any] | None = None) -> ChainBreak | None:
        """Walk this partition's chain; None when intact, else the first place where it
        breaks, or the first event whose `ts` column is not the time its hashed body says, or
        the end when events are missing below the head the partition recorded."""
        with self._reading() as conn:
            counted = conn.execute(self._q.count, (self.partition,)).fetchone()
            head = conn.execute(self._q.head, (self.partition,)).fetchone()
        total = int(counted[0]) if counted else 0
        recorded = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
        bad_ts: list[ChainBreak] = []
        last = [(0, GENESIS_HASH)]

        def rows() -> Iterator[tuple[int, str, str, str, bytes, str]]:
            for seq, id_, type_, stream, stored, hash_, ts in self._pages(0, None):
                last[0] = (seq, hash_)
                body = bytes(stored)
                if not bad_ts:
                    said = _body_ts(body)
                    if said is not None and said != ts:
                        bad_ts.append(
                            ChainBreak(seq, f"ts column {ts!r} does not match the body's {said!r}")
                        )
                yield seq, id_, type_, stream, body, hash_

        broken = walk_chain(rows(), total, progress, self.progress_every)
        if bad_ts and (broken is None or bad_ts[0].seq < broken.seq):
            return bad_ts[0]
        if broken is None and last[0][0] < recorded[0]:  # appends after `head` was read go on
            return ChainBreak(
                last[0][0] + 1,
                f"the partition's head is seq {recorded[0]}, but its events end at seq "
                f"{last[0][0]} (events were cut from the end)",
            )
        if broken is None and last[0][0] == recorded[0] and last[0][1] != recorded[1]:
            return ChainBreak(recorded[0], "the last event's hash is not the head's")
        return broken

    # ------------------------------------------------------------------ snapshots, meta

    def _write(self, *statements: tuple[sql.Composed, tuple[Any, ...]]) -> None:
        if self._closed:
            raise RuntimeError(f"the event log {self.path} is closed")
        with self._reading() as conn, conn.transaction():
            for statement, args in statements:
                conn.execute(statement, args)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store `snapshot` with its binding, keeping only the newest `snapshot_keep`."""
        state = snapshot.encoded or orjson.dumps(snapshot.state)
        p = self.partition
        self._write(
            (
                self._q.save_snapshot,
                (p, snapshot.seq, state, snapshot.event_hash or None, snapshot.digest or None),
            ),
            (self._q.trim_snapshots, (p, p, self.snapshot_keep)),
        )

    def _snapshots(self, limit: int | None) -> list[Snapshot]:
        with self._reading() as conn:
            rows = conn.execute(self._q.snapshots, (self.partition, limit)).fetchall()
        return [stored_snapshot(seq, bytes(state), *rest) for seq, state, *rest in rows]

    def latest_snapshot(self) -> Snapshot | None:
        found = self._snapshots(1)
        return found[0] if found else None

    def snapshots(self) -> list[Snapshot]:
        return self._snapshots(None)

    def discard_snapshot(self, seq: int) -> None:
        self._write((self._q.discard_snapshot, (self.partition, seq)))

    def get_meta(self, key: str) -> str | None:
        with self._reading() as conn:
            row = conn.execute(self._q.get_meta, (self.partition, key)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._write((self._q.set_meta, (self.partition, key, value)))

    def get_store_meta(self, key: str) -> str | None:
        """Metadata of the whole store (every partition's), not of this partition."""
        with self._reading() as conn:
            row = conn.execute(self._q.get_meta, (_STORE_KEY, key)).fetchone()
        return None if row is None else str(row[0])

    def set_store_meta(self, key: str, value: str) -> None:
        self._write((self._q.set_meta, (_STORE_KEY, key, value)))

    def partitions(self) -> dict[int, tuple[int, str]]:
        """Every partition of this store with its head (seq, hash), the empty ones included."""
        with self._reading() as conn:
            rows = conn.execute(self._q.partitions).fetchall()
        return {int(p): (int(seq), str(hash_)) for p, seq, hash_ in rows}

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

    def __enter__(self) -> PostgresEventLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _body_ts(body: bytes) -> str | None:
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # the chain walk reports the body itself
    said = fields.get("ts") if isinstance(fields, dict) else None
    return said if isinstance(said, str) else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
