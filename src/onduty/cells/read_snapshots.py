"""Snapshots of a fleet node's read models: what the console shows, as of a cursor per
partition, so that a node starts by reading the partitions' tails rather than every event.

Any node may save one (they follow the same store, so their read models agree as of their
cursors); a node starting uses the one saved last when every cursor still names the event it
was taken at (seq and hash), else it folds every partition from the start.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson

from onduty.log.fleet_view import FleetView, position
from onduty.readmodel.models import ReadModels

logger = logging.getLogger("onduty.cells")

KEY = "readmodels.fleet"
EVERY = 50_000
"""Events followed between two snapshots (also saved when the node stops)."""

Cursors = dict[int, tuple[int, str]]
"""The last event fed, by partition: (seq, hash)."""


def save(view: FleetView, state: dict[str, Any], cursors: Cursors) -> int:
    """Store a snapshot of the read models `state` as of `cursors`; its size in bytes."""
    body = orjson.dumps(
        {"cursors": {str(p): list(at) for p, at in sorted(cursors.items())}, "state": state}
    )
    view.set_meta(KEY, body.decode())
    return len(body)


def restore(view: FleetView, read: ReadModels) -> Cursors:
    """Fill `read` from the saved snapshot when it still holds; the cursors it is as of (none:
    fold every partition from the start)."""
    raw = view.get_meta(KEY)
    if raw is None:
        return {}
    try:
        found = orjson.loads(raw)
        cursors = {int(p): (int(at[0]), str(at[1])) for p, at in found["cursors"].items()}
        state = found["state"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as error:
        logger.warning("read-model snapshot refused: it does not decode (%s)", error)
        return {}
    stale = _stale(view, cursors)
    why = stale or read.load(state)
    if why:
        logger.warning("read-model snapshot refused: %s; rebuilding from the store", why)
        return {}
    return cursors


def _stale(view: FleetView, cursors: Cursors) -> str:
    """Why the cursors no longer name the events they were taken at ("" when they do)."""
    wanted = [position(p, seq) for p, (seq, _) in cursors.items() if seq]
    hashes = {event.seq: event.hash for event in view.read_seqs(wanted)}
    for partition, (seq, event_hash) in sorted(cursors.items()):
        if seq and hashes.get(position(partition, seq)) != event_hash:
            return f"partition {partition} has another event at seq {seq} (rewritten or cut)"
    return ""


class Saver:
    """Saves a snapshot on a thread of its own when asked (one at a time)."""

    def __init__(self, view: FleetView) -> None:
        self._view = view
        self._thread: threading.Thread | None = None

    def save_soon(self, state: dict[str, Any], cursors: Cursors) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(
            target=self._save, args=(state, cursors), name="onduty-readmodel-snapshot"
        )
        self._thread.start()

    def _save(self, state: dict[str, Any], cursors: Cursors) -> None:
        try:
            save(self._view, state, cursors)
        except Exception as error:  # the store away: the next one, or a longer start
            logger.warning("read-model snapshot not saved: %s", error)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
