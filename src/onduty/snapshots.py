"""Snapshots of the core's state, written off the thread that owns the state.

The core thread pays for one encoding of the state to JSON bytes (`State.encode`: one pass in
C that makes no Python objects); a writer thread turns them into the snapshot's content, binds
it to the chain (`Snapshot.bound`: the digest) and stores it. A snapshot is only ever of events
already durable, and a backend stores it in one transaction: a crash while writing leaves the
previous snapshots, never a partial one that start-up would take (and one whose content does
not match its digest is refused anyway).
"""

from __future__ import annotations

import logging
import threading

from onduty.log import EventLog, Snapshot
from onduty.state import State

logger = logging.getLogger("onduty.snapshots")


def save(log: EventLog, seq: int, event_hash: str, encoded: bytes) -> None:
    """Store the snapshot of the state `encoded` (`State.encode`) after the event at `seq`."""
    log.save_snapshot(Snapshot.bound(seq, event_hash, State.snapshot_of(encoded)))


class SnapshotWriter:
    """Saves snapshots on a thread of its own, started when there is one to write and ended
    when there is none. While one is being written, a newer one replaces any still waiting:
    only the newest is worth writing."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._cond = threading.Condition()
        self._waiting: tuple[int, str, bytes] | None = None
        self._running = False

    def submit(self, seq: int, event_hash: str, encoded: bytes) -> None:
        with self._cond:
            self._waiting = (seq, event_hash, encoded)
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
                save(self._log, *job)
            except Exception:  # the log still holds every event: the next snapshot may succeed
                logger.exception("the snapshot at seq %s could not be saved", job[0])
