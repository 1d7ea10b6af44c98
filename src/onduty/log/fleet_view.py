"""Every partition of a PostgreSQL store read as one log: what a fleet node's read models, API
and console read.

Each partition keeps its own sequence numbers and chain; the view gives every event a
*position* unique in the store, `seq * PARTITION_SPACE + partition`, and hands out copies of
the events with that position as their `seq` (their hashes stay those of their partition's
chain: the view is for reading, `verify` walks each partition's own chain). Positions order
events by (seq, partition): within a partition that is the log's order; across partitions it
is only roughly the order of time, so a reader that follows the store keeps one cursor per
partition (`tail`) rather than one position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from psycopg import sql

from onduty.events import GENESIS_HASH, Event, event_from_body
from onduty.log.base import ChainBreak, Snapshot, StoreError
from onduty.log.postgres import PostgresEventLog

PARTITION_SPACE = 4096
"""More than the most partitions a store may have (`fleet.partitions` is at most 4096)."""


def position(partition: int, seq: int) -> int:
    return seq * PARTITION_SPACE + partition


def place_of(position_: int) -> tuple[int, int]:
    """(partition, seq) of a position."""
    seq, partition = divmod(position_, PARTITION_SPACE)
    return partition, seq


def _at(event: Event, partition: int) -> Event:
    return event.model_copy(update={"seq": position(partition, event.seq)})


class FleetView:
    """The `EventLog` reading methods over every partition of the store at `url`, with events
    at their positions. It appends nothing and keeps no snapshots: each partition's manager
    writes its own log (`PostgresEventLog`)."""

    def __init__(self, url: str, *, page: int = 2_000) -> None:
        self._log = PostgresEventLog(url, 0, page=page)  # its readers, queries and schema
        self.url, self.schema, self.page = self._log.url, self._log.schema, page
        self.path = f"{self.url} (every partition)"
        s = sql.Identifier(self.schema)
        columns = "partition, seq, body, hash"
        self._read = sql.SQL(
            f"SELECT {columns} FROM {{s}}.events WHERE (seq, partition) > (%s, %s) "
            "ORDER BY seq, partition LIMIT %s"
        ).format(s=s)
        self._stream = {
            order: sql.SQL(
                f"SELECT {columns} FROM {{s}}.events WHERE stream = %s "
                "AND (seq, partition) > (%s, %s) AND (seq, partition) < (%s, %s) "
                f"ORDER BY seq {order}, partition {order} LIMIT %s"
            ).format(s=s)
            for order in ("ASC", "DESC")
        }
        self._at = sql.SQL(
            f"SELECT {columns} FROM {{s}}.events e JOIN unnest(%s::int[], %s::bigint[]) "
            "AS wanted(p, q) ON e.partition = wanted.p AND e.seq = wanted.q ORDER BY seq, partition"
        ).format(s=s)
        self._tail = sql.SQL(
            f"SELECT {columns} FROM {{s}}.events WHERE partition = %s AND seq > %s "
            "ORDER BY seq LIMIT %s"
        ).format(s=s)

    def _rows(self, query: sql.Composed, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._log._reading() as conn:
            return conn.execute(query, args).fetchall()

    @staticmethod
    def _event(row: tuple[Any, ...]) -> Event:
        partition, _, body, hash_ = row
        return _at(event_from_body(bytes(body), hash_), partition)

    # ------------------------------------------------------------------ reading

    def partitions(self) -> dict[int, tuple[int, str]]:
        """Every partition with its head (seq, hash)."""
        return self._log.partitions()

    def count(self) -> int:
        """How many events the partitions hold together (their heads' seqs summed)."""
        return sum(seq for seq, _ in self.partitions().values())

    def head(self) -> tuple[int, str]:
        """The highest position of any partition's head, and that event's hash."""
        heads = self.partitions()
        if not heads:
            return (0, GENESIS_HASH)
        partition, (seq, hash_) = max(heads.items(), key=lambda item: (item[1][0], item[0]))
        return (position(partition, seq), hash_) if seq else (0, GENESIS_HASH)

    def origin(self) -> tuple[int, str]:
        return (0, GENESIS_HASH)

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Event]:
        """The events after position `after`, in position order, page by page."""
        partition, seq = place_of(after)
        while limit is None or limit > 0:
            size = self.page if limit is None else min(self.page, limit)
            rows = self._rows(self._read, (seq, partition, size))
            for row in rows:
                yield self._event(row)
            if len(rows) < size:
                return
            partition, seq = rows[-1][0], rows[-1][1]
            limit = None if limit is None else limit - size

    def read_partition(self, partition: int) -> Iterator[Event]:
        """Every event of one partition, in its own order (at their positions): what one core
        folded, for a replay of that partition."""
        after = 0
        while True:
            events = self.tail(partition, after, self.page)
            yield from events
            if len(events) < self.page:
                return
            after = place_of(events[-1].seq)[1]

    def tail(self, partition: int, after: int, limit: int) -> list[Event]:
        """Up to `limit` events of one partition after its seq `after`, at their positions."""
        return [self._event(row) for row in self._rows(self._tail, (partition, after, limit))]

    def read_stream(
        self, stream: str, after: int = 0, before: int | None = None, *, newest_first: bool = False
    ) -> Iterator[Event]:
        low = place_of(after)
        high = place_of(before) if before is not None else (0, 1 << 50)
        query = self._stream["DESC" if newest_first else "ASC"]
        while True:
            rows = self._rows(query, (stream, low[1], low[0], high[1], high[0], self.page))
            for row in rows:
                yield self._event(row)
            if len(rows) < self.page:
                return
            last = (rows[-1][0], rows[-1][1])
            if newest_first:
                high = last
            else:
                low = last

    def read_seqs(self, seqs: Iterable[int]) -> list[Event]:
        """The events at these positions, in position order, each once."""
        places = sorted({place_of(at) for at in seqs})
        found: list[Event] = []
        for start in range(0, len(places), 1_000):
            chunk = places[start : start + 1_000]
            args = ([p for p, _ in chunk], [q for _, q in chunk])
            found.extend(self._event(row) for row in self._rows(self._at, args))
        return found

    def verify(self, progress: Callable[[int, int], Any] | None = None) -> ChainBreak | None:
        """Walk every partition's chain in turn; the first break found, named by partition
        (its `seq` is that event's position)."""
        for partition in sorted(self.partitions()):
            log = self._log.sibling(partition)
            try:
                broken = log.verify(progress)
            finally:
                log.close()
            if broken is not None:
                return ChainBreak(
                    position(partition, broken.seq),
                    f"partition {partition} seq {broken.seq}: {broken.reason}",
                )
        return None

    # ------------------------------------------------------------------ what the view lacks

    def append(self, batch: Sequence[Event]) -> list[Event]:
        """Nothing is appended through the view: each partition's cell appends to its own log."""
        if batch:
            raise StoreError(f"{self.path} is read-only: a partition's manager appends to it")
        return []

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """The view keeps no snapshots: each partition's manager keeps its own."""

    def latest_snapshot(self) -> Snapshot | None:
        return None

    def snapshots(self) -> list[Snapshot]:
        return []

    def discard_snapshot(self, seq: int) -> None:
        """Nothing is kept, so nothing is discarded."""

    def get_meta(self, key: str) -> str | None:
        """The store's own metadata (of every partition, not of one)."""
        return self._log.get_store_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self._log.set_store_meta(key, value)

    def close(self) -> None:
        self._log.close()
