"""The PostgreSQL side of a fleet's signed checkpoints: the store's identity, every partition's
head read at one instant, the table the store keeps its checkpoints in, and what `audit
verify` asks of the store to hold it against them.

Tables and rows, in the store's schema:

* `checkpoints (id, signed_at, signer, key_id, checkpoint)`: each checkpoint a node signed,
  `checkpoint` being its witness line (canonical JSON, the signature included); the other
  columns are for people querying it. The record in the store's own database: someone who can
  rewrite the store can delete rows here too, which is why each checkpoint also goes to a
  witness outside it first.
* `meta` at partition -1 (the store's own): `log_id`, the store's identity, random, made once
  by the first signer; `checkpoint_key`, the key id of the first signing key made for the
  store, so that a second node missing the key file refuses instead of making another.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from onduty.events import GENESIS_HASH
from onduty.log.base import StoreError
from onduty.log.checkpoints import Finding
from onduty.log.fleet_checkpoints import (
    LOG_ID_KEY,
    FleetCheckpoint,
    Sourced,
    StoreState,
    parse,
)
from onduty.log.pg import redact
from onduty.log.postgres import PostgresURL, connect, prepare_schema

KEY_ID_KEY = "checkpoint_key"
STORE_PARTITION = -1  # meta rows of the whole store (the log writes its format there)
CHUNK = 5_000  # (partition, seq) pairs asked for in one statement


class CheckpointStore:
    """The checkpoints' view of the PostgreSQL store at `url` (its schema, every partition),
    on a connection of its own, made again after one breaks (a restarted server)."""

    def __init__(self, url: str) -> None:
        where = PostgresURL.parse(url)
        self.url, self.schema, self._conninfo = redact(url), where.schema, where.conninfo
        self._conn: psycopg.Connection[Any] | None = None
        s = sql.Identifier(where.schema)

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(s=s)

        self._create = q(
            "CREATE TABLE IF NOT EXISTS {s}.checkpoints (id bigserial PRIMARY KEY, signed_at "
            "text NOT NULL, signer text NOT NULL, key_id text NOT NULL, checkpoint bytea NOT NULL)"
        )
        self._insert = q(
            "INSERT INTO {s}.checkpoints (signed_at, signer, key_id, checkpoint) "
            "VALUES (%s, %s, %s, %s)"
        )
        self._rows = q("SELECT id, checkpoint FROM {s}.checkpoints ORDER BY id")
        self._newest = q("SELECT id, checkpoint FROM {s}.checkpoints ORDER BY id DESC LIMIT 1")
        self._get_meta = q("SELECT value FROM {s}.meta WHERE partition = %s AND key = %s")
        self._add_meta = q("INSERT INTO {s}.meta VALUES (%s, %s, %s) ON CONFLICT DO NOTHING")
        # One statement reads every head, with the event each names: a statement sees one
        # snapshot, and an append changes its events and its head in one transaction, so a
        # mismatch here is an edit, not a race.
        self._heads = q(
            "SELECT h.partition, h.seq, h.hash, e.hash FROM {s}.heads h LEFT JOIN {s}.events e "
            "ON e.partition = h.partition AND e.seq = h.seq ORDER BY h.partition"
        )
        self._head_seqs = q("SELECT partition, seq FROM {s}.heads")
        self._ends = q(
            "SELECT p, (SELECT max(seq) FROM {s}.events WHERE partition = p) "
            "FROM unnest(%s::int[]) AS p"
        )
        self._hashes = q(
            "SELECT e.partition, e.seq, e.hash FROM {s}.events e JOIN unnest(%s::int[], "
            "%s::bigint[]) AS wanted(p, q) ON e.partition = wanted.p AND e.seq = wanted.q"
        )

    # ------------------------------------------------------------------ connection

    @contextmanager
    def _using(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection, made when there is none or it broke; a database error becomes a
        `StoreError` naming the store."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                if self._conn is not None:
                    self._conn.close()
                self._conn = connect(self._conninfo, autocommit=True)
            yield self._conn
        except psycopg.Error as error:
            text = str(error).strip().splitlines()
            raise StoreError(
                f"the checkpoints of {self.url}: {text[0] if text else type(error).__name__}"
            ) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ signing side

    def prepare(self) -> None:
        """Create the store (when absent) and its `checkpoints` table: what a signer needs."""
        with self._using() as conn:
            prepare_schema(conn, self.schema)
            with conn.transaction():
                lock = "SELECT pg_advisory_xact_lock(hashtext(%s))"
                conn.execute(lock, (f"onduty-store:{self.schema}",))
                conn.execute(self._create)

    def identity(self, *, create: bool = False) -> str:
        """The store's identity ("" when it has none); made once, by the first to `create`."""
        with self._using() as conn:
            if create:
                made = os.urandom(16).hex()
                conn.execute(self._add_meta, (STORE_PARTITION, LOG_ID_KEY, made))
            row = conn.execute(self._get_meta, (STORE_PARTITION, LOG_ID_KEY)).fetchone()
        return "" if row is None else str(row[0])

    def heads(self) -> tuple[dict[int, tuple[int, str]], list[str]]:
        """Every partition's head (seq, hash) at one instant, and what contradicts itself: a
        head row whose event is missing or has another hash (the store was edited; nothing
        that contradicts itself is signed)."""
        with self._using() as conn:
            rows = conn.execute(self._heads).fetchall()
        heads: dict[int, tuple[int, str]] = {}
        problems: list[str] = []
        for partition, seq, hash_, event_hash in rows:
            p, at = int(partition), int(seq)
            expected = GENESIS_HASH if at == 0 else event_hash
            if expected != hash_:
                said = "no event" if event_hash is None else f"hash {str(event_hash)[:12]}…"
                problems.append(
                    f"partition {p}'s head row says seq {at} with hash {str(hash_)[:12]}…, "
                    f"but its event there has {said}"
                )
            heads[p] = (at, str(hash_))
        return heads, problems

    def record(self, checkpoint: FleetCheckpoint) -> None:
        """Keep `checkpoint` in the store's table."""
        c = checkpoint
        with self._using() as conn:
            conn.execute(self._insert, (c.signed_at, c.signer, c.key_id, c.line()))

    def newest(self) -> FleetCheckpoint | None:
        """The checkpoint recorded last (None when there is none, or it is unreadable)."""
        if not self._has_table():
            return None
        with self._using() as conn:
            row = conn.execute(self._newest).fetchone()
        if row is None:
            return None
        try:
            return parse(bytes(row[1]), f"row {row[0]}", in_witness=False).checkpoint
        except ValueError:
            return None

    def key_registered(self) -> str | None:
        """The key id of the first signing key made for this store, when one was."""
        with self._using() as conn:
            row = conn.execute(self._get_meta, (STORE_PARTITION, KEY_ID_KEY)).fetchone()
        return None if row is None else str(row[0])

    def register_key(self, key_id: str) -> None:
        with self._using() as conn:
            conn.execute(self._add_meta, (STORE_PARTITION, KEY_ID_KEY, key_id))

    def first_key(self, make: Callable[[], str]) -> str | None:
        """Make the store's first signing key with `make` (which returns its key id) unless
        one was made already, for this store, on any node: then its key id, and `make` is not
        called. Nodes starting at once take turns, so only one of them makes a key."""
        with self._using() as conn, conn.transaction():
            lock = "SELECT pg_advisory_xact_lock(hashtext(%s))"
            conn.execute(lock, (f"onduty-checkpoint-key:{self.schema}",))
            row = conn.execute(self._get_meta, (STORE_PARTITION, KEY_ID_KEY)).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute(self._add_meta, (STORE_PARTITION, KEY_ID_KEY, make()))
        return None

    # ------------------------------------------------------------------ auditing side

    def _has_table(self) -> bool:
        with self._using() as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'checkpoints'",
                (self.schema,),
            ).fetchone()
        return found is not None

    def recorded(self) -> tuple[list[Sourced], list[Finding]]:
        """The checkpoints the store's table holds, in the order recorded, and a finding for
        each row that is not one."""
        if not self._has_table():
            return [], []
        with self._using() as conn:
            rows = conn.execute(self._rows).fetchall()
        found: list[Sourced] = []
        problems: list[Finding] = []
        for row_id, body in rows:
            where = f"the store's checkpoints table, row {row_id}"
            try:
                found.append(parse(bytes(body), where, in_witness=False))
            except ValueError as error:
                problems.append(Finding("unrecorded", 0, f"{error} (the row was edited)"))
        return found, problems

    def state(self, covered: Collection[tuple[int, int]]) -> StoreState:
        """What the store holds now for the (partition, seq) the checkpoints cover, read in
        one REPEATABLE READ transaction (appends going on meanwhile are not half seen)."""
        pairs = sorted(covered)
        partitions = sorted({p for p, _ in pairs})
        hashes: dict[tuple[int, int], str] = {}
        with self._using() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = conn.execute(self._get_meta, (STORE_PARTITION, LOG_ID_KEY)).fetchone()
            heads = {int(p): int(seq) for p, seq in conn.execute(self._head_seqs).fetchall()}
            ends = {
                int(p): int(end or 0)
                for p, end in conn.execute(self._ends, (partitions,)).fetchall()
            }
            for start in range(0, len(pairs), CHUNK):
                chunk = pairs[start : start + CHUNK]
                args = ([p for p, _ in chunk], [seq for _, seq in chunk])
                for p, seq, hash_ in conn.execute(self._hashes, args).fetchall():
                    hashes[(int(p), int(seq))] = str(hash_)
        log_id = "" if row is None else str(row[0])
        return StoreState(log_id=log_id, heads=heads, ends=ends, hashes=hashes)
