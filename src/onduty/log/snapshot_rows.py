"""How the SQLite log stores snapshots: a row of `snapshots` each (seq, state, binding), and
a large state a part at a time.

A snapshot's state grows with what the core holds (tens of megabytes with 100,000 alerts).
Written in one transaction, it would hold SQLite's single write lock for as long as writing
and syncing all of it takes, and every append would wait behind it: ingest stalled for half
a second at each snapshot. So a state larger than `PART` is written as `snapshot_parts` rows,
one transaction per part (appends commit in between), and the snapshot becomes visible only
when its row (state NULL) is inserted last. Parts no snapshot row owns (left by a crash, or
of a snapshot pruned since) are removed after the next snapshot, a part per transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

PART = 1 << 20  # bytes of state written per transaction
PAUSE_S = 0.002  # between two transactions, so that the appends waiting commit in between

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots(seq INTEGER PRIMARY KEY, state BLOB, event_hash TEXT,
    digest TEXT);
CREATE TABLE IF NOT EXISTS snapshot_parts(seq INTEGER NOT NULL, part INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY(seq, part));
"""
PARTS_SCHEMA = SCHEMA.split(";")[1] + ";"
SAVE = "INSERT OR REPLACE INTO snapshots(seq, state, event_hash, digest) VALUES (?, ?, ?, ?)"
SAVE_PART = "INSERT OR REPLACE INTO snapshot_parts(seq, part, data) VALUES (?, ?, ?)"
# Logs written before snapshots were bound to the chain lack these columns: they are added, and
# the old rows (NULL there) are never trusted.
BINDING = ("event_hash", "digest")
# the newest ?1 snapshots are kept, and the one at the last sealed event (?2), which a store
# whose archives are elsewhere starts from (and the next seal folds from)
PRUNE = (
    "DELETE FROM snapshots WHERE seq != ?2 AND seq NOT IN "
    "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?1)"
)
# the parts no snapshot owns, except those of ?1 (the one being written): deleted one per
# transaction, as deleting megabytes at once holds the write lock as long as writing them
ORPHANS = (
    "SELECT seq, part FROM snapshot_parts WHERE seq != ?1 AND seq NOT IN "
    "(SELECT seq FROM snapshots WHERE state IS NULL)"
)
DROP_PART = "DELETE FROM snapshot_parts WHERE seq = ? AND part = ?"
DISCARD = ("DELETE FROM snapshots WHERE seq = ?1", "DELETE FROM snapshot_parts WHERE seq = ?1")
LIST = "SELECT seq, state, event_hash, digest FROM snapshots ORDER BY seq DESC LIMIT ?"

Statement = tuple[str, tuple[object, ...]]


def transactions(
    seq: int, state: bytes, event_hash: str | None, digest: str | None, keep: int, origin: int
) -> Iterator[tuple[Statement, ...]]:
    """The transactions that store a snapshot, in order: its parts (when large), then its
    row, pruned to the newest `keep` (and the one at `origin`); then drop the `ORPHANS`."""
    if len(state) > PART:
        for index, start in enumerate(range(0, len(state), PART)):
            yield ((SAVE_PART, (seq, index, state[start : start + PART])),)
    row = (seq, None if len(state) > PART else state, event_hash, digest)
    yield (SAVE, row), (PRUNE, (keep, origin))


def state_of(conn: sqlite3.Connection, seq: int, state: bytes | None) -> bytes | None:
    """A stored snapshot's state: its column, or its parts joined (None when it has none)."""
    if state is not None:
        return state
    parts = conn.execute(
        "SELECT data FROM snapshot_parts WHERE seq = ? ORDER BY part", (seq,)
    ).fetchall()
    # a part edited into TEXT is read as its bytes: the digest then says it was changed
    data = [part if isinstance(part, bytes) else str(part).encode() for (part,) in parts]
    return b"".join(data) if data else None
