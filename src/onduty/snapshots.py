"""Snapshots of the core's state, written off the thread that owns the state.

The core thread pays for one encoding of the state to JSON bytes (`State.encode`: one pass in
C that makes no Python objects), and once more with keys sorted, as the canonical JSON the
digest is taken over has them; a writer thread hashes the one and stores the other. A
snapshot is only ever of events already durable, and a backend stores it in one transaction: a
crash while writing leaves the previous snapshots, never a partial one that start-up would
take (and one whose content does not match its digest is refused anyway).
"""

from __future__ import annotations

import hashlib
import logging
import threading

import orjson

from onduty.log import EventLog, Snapshot
from onduty.state import State

logger = logging.getLogger("onduty.snapshots")


def bind(seq: int, event_hash: str, encoded: bytes, canonical: bytes | None) -> Snapshot:
    """The snapshot of the state `encoded` (`State.encode`) after the event at `seq`, bound to
    the chain as `Snapshot.bound` binds it. With the state's canonical JSON at hand
    (`State.encode_canonical`), the digest is taken over it (hashing releases the GIL) and
    `encoded` is stored as it is; otherwise the content is decoded and bound the ordinary
    way."""
    if canonical is None:
        return Snapshot.bound(seq, event_hash, State.snapshot_of(encoded))
    digest = hashlib.sha256(b'{"event_hash":' + orjson.dumps(event_hash) + b',"seq":')
    digest.update(b"%d" % seq + b',"state":')
    digest.update(canonical)
    digest.update(b"}")
    return Snapshot(seq, {}, event_hash, digest.hexdigest(), encoded=encoded)


def save(log: EventLog, seq: int, event_hash: str, state: State) -> None:
    """Store a snapshot of `state` after the event at `seq`, here and now."""
    log.save_snapshot(bind(seq, event_hash, state.encode(), state.encode_canonical()))


class SnapshotWriter:
    """Saves snapshots on a thread of its own, started when there is one to write and ended
    when there is none. While one is being written, a newer one replaces any still waiting:
    only the newest is worth writing."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._cond = threading.Condition()
        self._waiting: tuple[int, str, bytes, bytes | None] | None = None
        self._running = False

    def submit(self, seq: int, event_hash: str, state: State) -> None:
        """Snapshot `state` after the event at `seq`: encoded now, on the caller's thread (that
        owns the state), bound and stored on the writer's."""
        job = (seq, event_hash, state.encode(), state.encode_canonical())
        with self._cond:
            self._waiting = job
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="onduty-snapshots", daemon=True).start()

    def wait(self) -> None:
        """Return once every snapshot submitted is written (or failed)."""
        with self._cond:
            while self._running:
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                job, self._waiting = self._waiting, None
                if job is None:
                    self._running = False
                    self._cond.notify_all()
                    return
            try:
                self._log.save_snapshot(bind(*job))
            except Exception:  # the log still holds every event: the next snapshot may succeed
                logger.exception("the snapshot at seq %s could not be saved", job[0])
