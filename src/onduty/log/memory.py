"""An event log held in memory: the same contract as the SQLite log, without a file.

It keeps what a store keeps — each event's canonical body and hash, snapshots as JSON, meta —
in a `MemoryStore`, so `read` rebuilds events from stored bytes and `verify` walks the stored
chain exactly as a durable backend does. Several `MemoryEventLog`s opened on one store see
the same log (as several handles on one file do); closing a log leaves its store intact.
For tests, simulations and benchmarks: nothing survives the process.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from onduty.events import GENESIS_HASH, Event, event_from_body, seal
from onduty.log.base import ChainBreak, Snapshot, stored_snapshot, walk_chain

PROGRESS_EVERY = 10_000


@dataclass(frozen=True)
class _Row:
    seq: int
    id: str
    type: str
    stream: str
    body: bytes
    hash: str


@dataclass
class MemoryStore:
    """What a `MemoryEventLog` stores; share one between logs to open the same log twice.

    `before_commit`, when set, is called with the rows about to be committed; an exception it
    raises fails that append and nothing of it is stored (a hook for tests of failed commits).
    """

    rows: list[_Row] = field(default_factory=list)
    snapshots: dict[int, tuple[bytes, str, str]] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    before_commit: Callable[[Sequence[_Row]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class MemoryEventLog:
    """An `EventLog` in memory. `snapshot_keep` is how many snapshots are kept."""

    def __init__(self, store: MemoryStore | None = None, *, snapshot_keep: int = 3) -> None:
        if snapshot_keep < 1:
            raise ValueError("snapshot_keep must be at least 1")
        self.store = MemoryStore() if store is None else store
        self.snapshot_keep = snapshot_keep
        self._closed = False

    def _open_store(self) -> MemoryStore:
        if self._closed:
            raise RuntimeError("the in-memory event log is closed")
        return self.store

    # ------------------------------------------------------------------ appending

    def append(self, batch: Sequence[Event]) -> list[Event]:
        """Place `batch` at the head atomically and return the placed events."""
        store = self._open_store()
        if not batch:
            return []
        with store.lock:
            seq, prev = (
                (store.rows[-1].seq, store.rows[-1].hash) if store.rows else (0, GENESIS_HASH)
            )
            rows: list[_Row] = []
            for event in batch:
                seq += 1
                sealed, body = seal(event, seq, prev)
                prev = sealed.hash
                rows.append(_Row(seq, sealed.id, sealed.type, sealed.stream, body, sealed.hash))
            if store.before_commit is not None:
                store.before_commit(rows)
            store.rows.extend(rows)
        return [event_from_body(row.body, row.hash) for row in rows]

    async def append_async(self, batch: Sequence[Event]) -> list[Event]:
        """`append` for the event loop (it never blocks for long)."""
        return self.append(batch)

    # ------------------------------------------------------------------ reading

    def head(self) -> tuple[int, str]:
        store = self._open_store()
        with store.lock:
            if not store.rows:
                return 0, GENESIS_HASH
            last = store.rows[-1]
            return last.seq, last.hash

    def origin(self) -> tuple[int, str]:
        """Nothing is ever sealed out of a log in memory."""
        return 0, GENESIS_HASH

    def _snapshot_rows(self) -> list[_Row]:
        store = self._open_store()
        with store.lock:
            return list(store.rows)

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Event]:
        rows = self._snapshot_rows()
        start = bisect.bisect_right(rows, after, key=lambda row: row.seq)
        end = len(rows) if limit is None else min(len(rows), start + max(limit, 0))
        for row in rows[start:end]:
            yield event_from_body(row.body, row.hash)

    def read_stream(
        self, stream: str, after: int = 0, before: int | None = None, *, newest_first: bool = False
    ) -> Iterator[Event]:
        rows = self._snapshot_rows()
        high = (1 << 62) if before is None else before
        mine = [row for row in rows if row.stream == stream and after < row.seq < high]
        for row in reversed(mine) if newest_first else mine:
            yield event_from_body(row.body, row.hash)

    def read_seqs(self, seqs: Iterable[int]) -> list[Event]:
        rows = self._snapshot_rows()
        found = []
        for seq in sorted(set(seqs)):
            at = bisect.bisect_left(rows, seq, key=lambda row: row.seq)
            if at < len(rows) and rows[at].seq == seq:
                found.append(event_from_body(rows[at].body, rows[at].hash))
        return found

    def verify(self, progress: Callable[[int, int], Any] | None = None) -> ChainBreak | None:
        rows = self._snapshot_rows()
        chain = ((r.seq, r.id, r.type, r.stream, r.body, r.hash) for r in rows)
        return walk_chain(chain, len(rows), progress, PROGRESS_EVERY)

    # ------------------------------------------------------------------ snapshots, meta

    def save_snapshot(self, snapshot: Snapshot) -> None:
        store = self._open_store()
        state = snapshot.encoded or orjson.dumps(snapshot.state)
        with store.lock:
            store.snapshots[snapshot.seq] = (state, snapshot.event_hash, snapshot.digest)
            for seq in sorted(store.snapshots, reverse=True)[self.snapshot_keep :]:
                del store.snapshots[seq]

    def snapshots(self) -> list[Snapshot]:
        store = self._open_store()
        with store.lock:
            stored = sorted(store.snapshots.items(), reverse=True)
        return [
            stored_snapshot(seq, state, event_hash, digest)
            for seq, (state, event_hash, digest) in stored
        ]

    def latest_snapshot(self) -> Snapshot | None:
        found = self.snapshots()
        return found[0] if found else None

    def discard_snapshot(self, seq: int) -> None:
        store = self._open_store()
        with store.lock:
            store.snapshots.pop(seq, None)

    def get_meta(self, key: str) -> str | None:
        store = self._open_store()
        with store.lock:
            return store.meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        store = self._open_store()
        with store.lock:
            store.meta[key] = value

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> MemoryEventLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
