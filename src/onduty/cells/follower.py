"""Following every partition of the store, for the read models, the console's live view and
the metrics of a fleet node: whichever manager wrote an event, every node shows it.

The follower keeps one cursor per partition (positions order partitions only roughly by
time, so one cursor for all would skip events a slow partition commits late) and polls the
partitions' heads, reading only the partitions that moved.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from onduty.events import Event
from onduty.log.fleet_view import FleetView, place_of

logger = logging.getLogger("onduty.cells")

POLL_S = 0.1
PAGE = 2_000


Cursors = dict[int, tuple[int, str]]


class Follower:
    def __init__(
        self,
        view: FleetView,
        feed: Callable[[Event], None],
        *,
        cursors: Cursors | None = None,
        fed: Callable[[Cursors, int], None] | None = None,
        poll: float = POLL_S,
    ):
        self._view, self._feed, self._poll = view, feed, poll
        self._fed = fed
        self.cursors: Cursors = dict(cursors or {})
        """The seq and hash of the last event fed, by partition."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.caught_up = threading.Event()
        """Set once every partition was read up to the head it had when following began."""
        self.failure: str | None = None

    def catch_up(self) -> int:
        """Feed every event past the cursors, up to the heads as they are now; how many."""
        fed = 0
        for partition, (head, _) in sorted(self._view.partitions().items()):
            after = self.cursors.get(partition, (0, ""))[0]
            while after < head:
                events = self._view.tail(partition, after, PAGE)
                if not events:
                    break
                for event in events:
                    self._feed(event)
                fed += len(events)
                after = place_of(events[-1].seq)[1]
                self.cursors[partition] = (after, events[-1].hash)
                if self._fed is not None:  # the read models are as of the cursors here
                    self._fed(self.cursors, len(events))
        return fed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="onduty-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.catch_up()
            except Exception as error:  # the database away: try again, say so once
                if self.failure is None:
                    logger.warning("following the store failed: %s", error)
                self.failure = str(error)
            else:
                self.failure = None
                self.caught_up.set()
            self._stop.wait(self._poll)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
