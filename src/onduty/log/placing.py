"""A caller's batch on its way through the SQLite log's writer: placed at the head of the
chain (seq, previous hash, hash), turned into rows, and its caller woken once durable."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from hashlib import sha256

from onduty.events import Event, encode_body
from onduty.log import repeats
from onduty.log.repeats import COMPACT_TYPES, Bases, RepeatRow

EARLY_BUILD = 64  # a batch this long is rebuilt as events while its commit is in flight
_PLACED = ("seq", "prev_hash", "hash")

Row = tuple[int, str, str, str, str, bytes, str]
"""A row of `events`: seq, id, type, stream, ts, canonical body, hash."""


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


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


class Request:
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
        self, seq: int, prev: str, rows: list[Row], reps: list[RepeatRow], bases: Bases
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
