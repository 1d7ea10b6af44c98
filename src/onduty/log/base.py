"""The `EventLog` protocol every backend implements, and what verification reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from onduty.events import Event


@dataclass(frozen=True)
class ChainBreak:
    """The first place the hash chain does not hold."""

    seq: int
    reason: str


@dataclass(frozen=True)
class Snapshot:
    """A folded state of the core as of `seq` (everything up to and including it)."""

    seq: int
    state: dict[str, Any]


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

    def head(self) -> tuple[int, str]:
        """(last seq, its hash); (0, GENESIS_HASH) when empty."""
        ...

    def verify(self, progress: Any = None) -> ChainBreak | None:
        """Check the whole chain; None when intact, else the first bad sequence number."""
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None: ...

    def latest_snapshot(self) -> Snapshot | None: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


def open_log(url: str) -> EventLog:
    """Open a log by URL.

    `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (the SQLAlchemy convention),
    `sqlite:///:memory:`, or a bare file path.
    """
    from onduty.log.sqlite import SQLiteEventLog

    if url.startswith("sqlite:///"):
        return SQLiteEventLog(url.removeprefix("sqlite:///"))
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise ValueError(f"unsupported store {scheme!r}: use sqlite:///PATH or a file path")
    return SQLiteEventLog(url)
