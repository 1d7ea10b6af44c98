"""Re-sent signals, stored compactly: a row that names the earlier event it repeats.

Alertmanager and Prometheus re-send every firing alert until it resolves, so most of a busy
log is the same `SignalReceived` again and again with only its envelope's id and time (and
sometimes a field such as `ends_at`) changed. The SQLite log stores such an event as a row of
`repeats` — its seq, id, time, the seq of its *base* (the last event of its stream stored in
full, in `events`), the fields of `data` that changed (as JSON, or NULL) and its hash (32
bytes) — about a tenth of a full row.

Nothing else changes: the event's hash is still `sha256(prev_hash + canonical body)` of the
whole event, so `read` rebuilds exactly the event that would have been stored in full, and
`verify` rebuilds its canonical body from the row and its base and checks that hash: every
stored byte is covered (a changed id, time, delta or base gives another body, hence another
hash).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from onduty.events import GENESIS_HASH, Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS repeats(seq INTEGER PRIMARY KEY, base INTEGER NOT NULL,
    id TEXT NOT NULL, ts INTEGER NOT NULL, delta BLOB, hash BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS repeats_base ON repeats(base);
"""
INSERT = "INSERT INTO repeats(seq, base, id, ts, delta, hash) VALUES (?, ?, ?, ?, ?, ?)"
COMPACT_TYPES = frozenset({"SignalReceived"})
MAX_BASES = 20_000  # streams whose base the writer remembers (a forgotten one is re-based)
MAX_DELTA = 3  # fields of `data` a repeat may change; more, and the event is stored in full
# a signal with other labels (or another fingerprint) is another alert, not a re-send of it
_SAME_ALERT = frozenset({"fingerprint", "labels"})
BASE_CACHE = 10_000  # parsed bases a reader keeps

# (seq, id, type, stream, body, hash, base, ts, delta): what the read queries return; a row
# of `events` has NULL base, ts and delta, a row of `repeats` NULL type, stream and body.
RawRow = tuple[Any, ...]
FullRow = tuple[int, str, str, str, bytes, str]  # (seq, id, type, stream, body, hash)
RepeatRow = tuple[int, int, str, int, bytes | None, bytes]

_OPT = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EVENT_COLUMNS = "seq, id, type, stream, body, hash, NULL, NULL, NULL"
_REPEAT_COLUMNS = "seq, id, NULL, NULL, NULL, hash, base, ts, delta"

# every stored event with seq > ?1, in seq order (SQLite merges the two primary-key scans)
READ = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ?1 UNION ALL "
    f"SELECT {_REPEAT_COLUMNS} FROM repeats WHERE seq > ?1 ORDER BY 1 LIMIT ?2"
)
# the events of stream ?1 with ?2 < seq < ?3: its full rows and the repeats of those
READ_STREAM = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream = ?1 AND seq > ?2 AND seq < ?3 "
    f"UNION ALL SELECT {_REPEAT_COLUMNS} FROM repeats "
    "WHERE base IN (SELECT seq FROM events WHERE stream = ?1) AND seq > ?2 AND seq < ?3 "
    "ORDER BY 1 {order} LIMIT ?4"
)
# the repeats after seq ?1 whose base is at ?1 or before (those a seal through ?1 must keep)
BASED_UP_TO = f"SELECT {_REPEAT_COLUMNS} FROM repeats WHERE seq > ?1 AND base <= ?1 ORDER BY seq"
HEAD = (
    "SELECT seq, hash FROM (SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1) "
    "UNION ALL SELECT seq, hash FROM (SELECT seq, hash FROM repeats ORDER BY seq DESC LIMIT 1) "
    "ORDER BY seq DESC LIMIT 1"
)
COUNT = "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM repeats)"


def read_seqs_query(count: int) -> str:
    marks = ",".join("?" * count)
    return (
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq IN ({marks}) UNION ALL "
        f"SELECT {_REPEAT_COLUMNS} FROM repeats WHERE seq IN ({marks}) ORDER BY 1"
    )


def hash_text(value: str | bytes) -> str:
    """A stored hash as hex: `events` keeps it as text, `repeats` as its 32 bytes."""
    return value.hex() if isinstance(value, bytes) else value


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def last_seq(rows: Sequence[FullRow | BrokenRepeat]) -> int:
    last = rows[-1]
    return last.seq if isinstance(last, BrokenRepeat) else last[0]


class BrokenRepeat(ValueError):
    """A stored repeat that cannot be rebuilt (its base is missing, its delta unreadable)."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"event {seq}: {reason}")
        self.seq, self.reason = seq, reason


# (seq, (type, v, actor, correlation_id, causation_id), canonical JSON of its data)
_Base = tuple[int, tuple[str, int, str, str | None, str | None], bytes]


class Bases:
    """The writer's memory of the last event of each stream stored in full.

    Bases noted while a group is being placed are staged, and kept only once the group is
    committed (`committed`); a request that fails to serialize undoes its own notes
    (`undo_request`), a failed commit all of the group's (`aborted`)."""

    def __init__(self, limit: int = MAX_BASES) -> None:
        self.limit = limit
        self._known: dict[str, _Base] = {}
        self._staged: dict[str, _Base] = {}
        self._undo: list[tuple[str, _Base | None]] = []

    def repeat(self, event: Event, seq: int, data: bytes) -> tuple[int, bytes | None] | None:
        """(base seq, delta) when `event` (placed at `seq`, `data` the canonical JSON of its
        data) can be stored as a repeat, else None, and then it is noted as its stream's new
        base."""
        stream = event.stream
        envelope = (event.type, event.v, event.actor, event.correlation_id, event.causation_id)
        found = self._staged.get(stream) or self._known.get(stream)
        if found is not None and found[1] == envelope:
            delta = _delta(found[2], event.data, data)
            if delta != _NOT_A_REPEAT:
                return found[0], delta
        self._undo.append((stream, self._staged.get(stream)))
        # kept as an exact-size copy: holding on to orjson's own output buffers makes every
        # later `orjson.dumps` several times slower (measured: ~4 -> ~13 us for 1 KB)
        self._staged[stream] = (seq, envelope, bytes(memoryview(data)))
        return None

    def request_done(self) -> None:
        self._undo.clear()

    def undo_request(self) -> None:
        for stream, before in reversed(self._undo):
            if before is None:
                self._staged.pop(stream, None)
            else:
                self._staged[stream] = before
        self._undo.clear()

    def committed(self) -> None:
        known = self._known
        for stream, base in self._staged.items():
            known.pop(stream, None)  # re-inserted last: the oldest bases go first
            known[stream] = base
        self._staged.clear()
        if len(known) > self.limit:
            for stream in list(known)[: len(known) - self.limit + self.limit // 10]:
                del known[stream]

    def aborted(self) -> None:
        self._staged.clear()
        self._undo.clear()

    def forget(self, through: int) -> None:
        """Forget the bases at seq `through` or before (sealed away): such a stream's next
        signal is stored in full."""
        for stream, base in list(self._known.items()):
            if base[0] <= through:
                del self._known[stream]


_NOT_A_REPEAT = b""


def _delta(was: bytes, new: dict[str, Any], data: bytes) -> bytes | None:
    """What a repeat stores of data `new` (`data` its canonical JSON) against its base's data
    (`was`, canonical JSON): None when they are the same, the changed fields as JSON when
    only a few changed, `_NOT_A_REPEAT` when it is not worth a repeat."""
    if data == was:
        return None
    old = orjson.loads(was)
    if old.keys() != new.keys():
        return _NOT_A_REPEAT
    changed = {key: value for key, value in new.items() if value != old[key]}
    if not changed or len(changed) > MAX_DELTA or not _SAME_ALERT.isdisjoint(changed):
        return _NOT_A_REPEAT
    # stored only when rebuilding gives back these very bytes (1 == 1.0 in Python, not JSON)
    if orjson.dumps({**old, **changed}, option=_OPT) != data:
        return _NOT_A_REPEAT
    return orjson.dumps(changed, option=_OPT)


ArchivedBodies = Callable[[list[int]], Iterable[tuple[int, bytes]]]


class Expander:
    """Turns the rows the read queries return into full rows, rebuilding each repeat's
    canonical body from its base (kept parsed, up to `BASE_CACHE` of them).

    In a store whose older events were sealed into archives, `origin` is the (seq, hash) its
    chain continues after, and `archived` reads a base that was sealed away (a repeat written
    by a writer that had not yet learnt of the seal)."""

    def __init__(
        self, origin: tuple[int, str] = (0, GENESIS_HASH), archived: ArchivedBodies | None = None
    ) -> None:
        # base seq -> (its fields, with its data as ready JSON; its data), or why it is no base
        self._bases: dict[int, tuple[dict[str, Any], dict[str, Any]] | str] = {}
        self._origin, self._archived = origin, archived

    def expand(
        self, conn: sqlite3.Connection, rows: Sequence[RawRow]
    ) -> list[FullRow | BrokenRepeat]:
        """Full rows for `rows`, in their order; a repeat that cannot be rebuilt is given as
        the `BrokenRepeat` saying why, in its place."""
        if all(row[6] is None for row in rows):
            return [row[:6] for row in rows]
        self._load(conn, {row[6] for row in rows if row[6] is not None})
        hashes = {row[0]: hash_text(row[5]) for row in rows}
        out: list[FullRow | BrokenRepeat] = []
        for row in rows:
            seq, id_, _type, _stream, _body, _hash, base, ts, delta = row
            if base is None:
                out.append(row[:6])
                continue
            prev = hashes.get(seq - 1) or _hash_at(conn, seq - 1, self._origin)
            try:
                fields = self._rebuild(seq, base, id_, ts, delta, prev)
            except BrokenRepeat as broken:
                out.append(broken)
                continue
            body = orjson.dumps(fields, option=_OPT)
            out.append((seq, id_, str(fields["type"]), str(fields["stream"]), body, hashes[seq]))
        return out

    def _rebuild(
        self, seq: int, base: int, id_: str, ts: int, delta: bytes | None, prev: str
    ) -> dict[str, Any]:
        found = self._bases.get(base)
        if not isinstance(found, tuple):
            raise BrokenRepeat(seq, found or f"its base event {base} is not stored in full")
        if base >= seq:
            raise BrokenRepeat(seq, f"its base event {base} does not come before it")
        fields, data = found
        ts_text = orjson.dumps(_EPOCH + ts * _US, option=_OPT)[1:-1].decode()
        rebuilt = {**fields, "seq": seq, "id": id_, "ts": ts_text, "prev_hash": prev}
        if delta is not None:
            try:
                changed = orjson.loads(delta)
            except orjson.JSONDecodeError as exc:
                raise BrokenRepeat(seq, f"its changed fields do not parse: {exc}") from None
            if not isinstance(changed, dict):
                raise BrokenRepeat(seq, "its changed fields are not a JSON object")
            rebuilt["data"] = {**data, **changed}
        return rebuilt

    def _load(self, conn: sqlite3.Connection, wanted: Iterable[int]) -> None:
        needed = set(wanted)
        missing = [seq for seq in needed if seq not in self._bases]
        if not missing:
            return
        if len(self._bases) + len(missing) > BASE_CACHE:
            # make room, but keep the bases these rows need that are already parsed
            self._bases = {seq: self._bases[seq] for seq in needed if seq in self._bases}
        for seq in missing:
            self._bases[seq] = f"its base event {seq} is not stored in full"
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT seq, body FROM events WHERE seq IN ({marks})"
            found = conn.execute(query, chunk).fetchall()
            sealed = [seq for seq in chunk if seq <= self._origin[0]]
            if sealed and self._archived is not None:
                found += self._archived(sealed)
            for seq, body in found:
                try:
                    fields = orjson.loads(body)
                except (orjson.JSONDecodeError, TypeError):
                    fields = None
                data = fields.get("data") if isinstance(fields, dict) else None
                if isinstance(data, dict) and fields.get("type") in COMPACT_TYPES:
                    # its data serialized once, not again for every repeat of it
                    ready = orjson.Fragment(orjson.dumps(data, option=_OPT))
                    self._bases[seq] = ({**fields, "data": ready}, data)
                else:
                    self._bases[seq] = f"its base event {seq} is not a readable signal"


def store_in_full(conn: sqlite3.Connection, through: int, expander: Expander, insert: str) -> None:
    """Store in full (with `insert` into `events`) each repeat after seq `through` whose base
    is at `through` or before: what a seal through `through` does before the bases go."""
    staying = conn.execute(BASED_UP_TO, (through,)).fetchall()
    if not staying:
        return
    full: list[FullRow] = []
    for row in expander.expand(conn, staying):
        if isinstance(row, BrokenRepeat):
            raise row
        full.append(row)
    conn.executemany(insert, [(*r[:4], orjson.loads(r[4])["ts"], r[4], r[5]) for r in full])
    conn.executemany("DELETE FROM repeats WHERE seq = ?", [(r[0],) for r in full])


def _hash_at(conn: sqlite3.Connection, seq: int, origin: tuple[int, str]) -> str:
    if seq == origin[0]:
        return origin[1]
    if seq == 0:
        return GENESIS_HASH
    row = conn.execute(
        "SELECT hash FROM events WHERE seq = ?1 UNION ALL SELECT hash FROM repeats WHERE seq = ?1",
        (seq,),
    ).fetchone()
    return hash_text(row[0]) if row else ""
