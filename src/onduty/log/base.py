"""The `EventLog` protocol every backend implements, and what verification reports."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from onduty.events import GENESIS_HASH, Event, chain_hash, to_json


@dataclass(frozen=True)
class ChainBreak:
    """The first place the hash chain does not hold."""

    seq: int
    reason: str


@dataclass(frozen=True)
class Snapshot:
    """A folded state of the core as of `seq` (everything up to and including it).

    A snapshot is bound to the chain: `event_hash` is the hash of the event at `seq` (the last
    one it folds), and `digest` is `snapshot_digest(seq, event_hash, state)`, computed once when
    it is made (`Snapshot.bound`). Start-up uses a snapshot only when both still hold
    (`check_snapshot`); one written without them (by an older version) is never trusted.
    `problem` is set by a backend that could not decode what it stored."""

    seq: int
    state: dict[str, Any]
    event_hash: str = ""
    digest: str = ""
    problem: str = field(default="", compare=False)
    encoded: bytes = field(default=b"", compare=False, repr=False)
    """`state` as JSON when the snapshot was made from it (its `state` is then left empty): a
    backend stores these bytes as they are."""

    @classmethod
    def bound(cls, seq: int, event_hash: str, state: dict[str, Any]) -> Snapshot:
        """A snapshot of `state` after the event at `seq`, whose hash is `event_hash`."""
        return cls(seq, state, event_hash, snapshot_digest(seq, event_hash, state))


def snapshot_digest(seq: int, event_hash: str, state: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON (sorted keys, no spaces) of the snapshot's content."""
    body = to_json({"seq": seq, "event_hash": event_hash, "state": state})
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class SnapshotProblem:
    """A stored snapshot that cannot be trusted, and why."""

    seq: int
    reason: str


def _event_hash_at(log: EventLog, seq: int) -> str | None:
    origin = log.origin()
    if seq == origin[0]:  # the last sealed event: known without reading its archive
        return origin[1]
    try:
        for event in log.read(after=seq - 1, limit=1):
            return event.hash if event.seq == seq else None
    except StoreError:  # in an archive that cannot be read
        return None
    return None


def check_snapshot(log: EventLog, snapshot: Snapshot, head: int | None = None) -> str | None:
    """Why `snapshot` cannot be trusted as a fold of `log`, or None when it can: it must carry
    its binding, its content must match its digest, its seq must be within the log, and the
    event at its seq must have the hash it is bound to. Costs one encoding of the state and
    one read of one event."""
    if snapshot.problem:
        return snapshot.problem
    if not snapshot.event_hash or not snapshot.digest:
        return "not bound to the chain (written by an older version of onduty): untrusted"
    last = log.head()[0] if head is None else head
    if snapshot.seq > last:
        return f"its seq {snapshot.seq} is beyond the head of the log (seq {last})"
    if snapshot_digest(snapshot.seq, snapshot.event_hash, snapshot.state) != snapshot.digest:
        return "its content does not match its digest (the stored snapshot was changed)"
    actual = _event_hash_at(log, snapshot.seq)
    if actual is None:
        return f"the log has no event at seq {snapshot.seq}"
    if actual != snapshot.event_hash:
        return (
            f"it is bound to event hash {snapshot.event_hash[:12]}…, but the event at seq "
            f"{snapshot.seq} has hash {actual[:12]}… (the chain was rewritten)"
        )
    return None


def trusted_snapshot(log: EventLog) -> tuple[Snapshot | None, list[SnapshotProblem]]:
    """The newest stored snapshot that passes `check_snapshot`, and every newer one that did
    not (newest first). None when no snapshot can be trusted: fold from the start."""
    head = log.head()[0]
    discarded: list[SnapshotProblem] = []
    for snapshot in log.snapshots():
        reason = check_snapshot(log, snapshot, head)
        if reason is None:
            return snapshot, discarded
        discarded.append(SnapshotProblem(snapshot.seq, reason))
    return None, discarded


def verify_snapshots(log: EventLog) -> list[SnapshotProblem]:
    """Every stored snapshot that start-up would refuse, newest first."""
    head = log.head()[0]
    problems = []
    for snapshot in log.snapshots():
        reason = check_snapshot(log, snapshot, head)
        if reason is not None:
            problems.append(SnapshotProblem(snapshot.seq, reason))
    return problems


class EventLog(Protocol):
    """An append-only, hash-chained sequence of events.

    `append` places a batch at the head atomically, assigns `seq`, `prev_hash` and `hash`,
    and returns the placed events only once they are durable. Concurrent callers may share one
    transaction (group commit); each still returns only after its own events are durable.
    """

    def append(self, batch: Sequence[Event]) -> list[Event]: ...

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Event]: ...

    def read_stream(
        self, stream: str, after: int = 0, before: int | None = None, *, newest_first: bool = False
    ) -> Iterator[Event]:
        """The events of one `stream` with `after` < seq < `before` (no upper bound when None),
        in seq order or, with `newest_first`, the reverse; streamed page by page, so a caller
        that stops early reads little."""
        ...

    def read_seqs(self, seqs: Iterable[int]) -> list[Event]:
        """The events at `seqs`, in seq order, each once; a seq the log does not hold is
        skipped. What read models keep of an event is its seq: this reads them back."""
        ...

    def head(self) -> tuple[int, str]:
        """(last seq, its hash); (0, GENESIS_HASH) when empty."""
        ...

    def origin(self) -> tuple[int, str]:
        """(seq, hash) of the last event sealed out of this store into an archive, which its
        chain continues after; (0, GENESIS_HASH) when nothing was sealed."""
        ...

    def verify(self, progress: Any = None) -> ChainBreak | None:
        """Check the whole chain; None when intact, else the first bad sequence number."""
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store `snapshot` with its binding (`event_hash`, `digest`) as given."""
        ...

    def latest_snapshot(self) -> Snapshot | None:
        """The newest stored snapshot, as stored (unchecked: see `trusted_snapshot`)."""
        ...

    def snapshots(self) -> list[Snapshot]:
        """Every stored snapshot, newest first, as stored (unchecked)."""
        ...

    def discard_snapshot(self, seq: int) -> None:
        """Remove the snapshot at `seq` (nothing when there is none)."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


class StoreError(ValueError):
    """The store cannot be opened as an event log; the message names the store and why."""


def stored_snapshot(seq: int, state: Any, event_hash: Any, digest: Any) -> Snapshot:
    """A snapshot as a backend stored it (its state as JSON bytes, its binding or NULLs); one
    whose state does not decode carries the `problem`."""
    binding = (str(event_hash) if event_hash else "", str(digest) if digest else "")
    try:
        decoded = orjson.loads(state)
    except (orjson.JSONDecodeError, TypeError) as exc:
        return Snapshot(seq, {}, *binding, problem=f"its state does not decode: {exc}")
    if not isinstance(decoded, dict):
        return Snapshot(seq, {}, *binding, problem="its state is not a JSON object")
    return Snapshot(seq, decoded, *binding)


def check_row(
    seq: int, columns: tuple[str, str, str], body: bytes, hash_: str, prev: str
) -> str | None:
    """Why the stored event at `seq` (its id, type and stream `columns`, its canonical `body`
    and `hash_`) does not continue the chain after `prev`, or None if it does: what every
    backend's `verify` checks of each event."""
    if not isinstance(body, bytes):
        return f"body is a {type(body).__name__}, not a BLOB"
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return f"body does not parse: {exc}"
    if not isinstance(fields, dict):
        return "body is not a JSON object"
    if fields.get("seq") != seq:
        return f"body says seq {fields.get('seq')!r}, the row is seq {seq}"
    if fields.get("prev_hash") != prev:
        return "prev_hash is not the previous event's hash"
    if chain_hash(prev, body) != hash_:
        return "hash does not match the body"
    for name, value in zip(("id", "type", "stream"), columns, strict=True):
        if fields.get(name) != value:
            return f"{name} column {value!r} does not match the body's {fields.get(name)!r}"
    return None


def walk_chain(
    rows: Iterable[tuple[int, str, str, str, bytes, str]],
    total: int,
    progress: Callable[[int, int], Any] | None,
    every: int,
) -> ChainBreak | None:
    """Every backend's `verify`: walk the stored `rows` (seq, id, type, stream, body, hash) in
    seq order from the genesis; None when the chain is intact, else the first place where it
    breaks. `progress(done, total)` is called every `every` rows and at the end."""
    expected, prev = 1, GENESIS_HASH
    for seq, id_, type_, stream, body, hash_ in rows:
        if seq != expected:
            return ChainBreak(expected, f"seq {expected} is missing (found {seq})")
        reason = check_row(seq, (id_, type_, stream), body, hash_, prev)
        if reason is not None:
            return ChainBreak(seq, reason)
        if progress is not None and seq % every == 0:
            progress(seq, total)
        expected, prev = seq + 1, hash_
    if progress is not None:
        progress(expected - 1, total)
    return None


def open_log(url: str) -> EventLog:
    """Open a log by URL.

    `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (the SQLAlchemy convention),
    `sqlite:///:memory:`, a bare file path, or `postgresql://…/db?schema=NAME&partition=N` (one
    partition of a PostgreSQL store). Raises `StoreError` when it cannot be opened.
    """
    from onduty.log.sqlite import SQLiteEventLog

    if url.startswith(("postgresql://", "postgres://")):
        from onduty.log.postgres import PostgresEventLog

        return PostgresEventLog(url)
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(
            f"store {url}: unsupported scheme {scheme!r}; use sqlite:///PATH, a path or "
            "postgresql://HOST/DATABASE"
        )
    else:
        path = url
    if not path:
        raise StoreError(f"store {url!r}: no file path given")
    try:
        return SQLiteEventLog(path)
    except OSError as error:
        raise StoreError(
            f"cannot open the event log {path}: {error.strerror or type(error).__name__}"
        ) from None
