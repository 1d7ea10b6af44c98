"""Checkpointing the SQLite log's write-ahead log off the writer's path.

SQLite copies the WAL back into the database (a checkpoint) by default in whichever commit
finds it over 1,000 pages: an append then waits for megabytes to be copied and synced, and
after a snapshot (tens of megabytes through the WAL) ingest stalled for a quarter of a second.
The writer's connection therefore never checkpoints (`wal_autocheckpoint=0`); this thread
does, on a connection of its own, once the WAL has grown past `threshold` bytes. A PASSIVE
checkpoint takes no lock the writer needs, so appends go on while it copies.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

logger = logging.getLogger("onduty.log")

THRESHOLD = 4 << 20  # bytes of WAL that call for a checkpoint (SQLite's default is ~4 MB)
EVERY_S = 0.2


class WalCheckpointer:
    """Checkpoints the WAL of the database at `path` in a thread of its own until `stop`."""

    def __init__(
        self, path: str, *, threshold: int | None = None, every_s: float | None = None
    ) -> None:
        self.path = path
        self.threshold = THRESHOLD if threshold is None else threshold
        self.every_s = EVERY_S if every_s is None else every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onduty-log-wal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            while not self._stop.wait(self.every_s):
                if self._wal_size() >= self.threshold:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as error:  # the log goes on; its WAL grows until the next start
            logger.warning("checkpointing the write-ahead log of %s failed: %s", self.path, error)
        finally:
            conn.close()

    def _wal_size(self) -> int:
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
