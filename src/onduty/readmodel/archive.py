"""Incidents that left the read model's memory, read back from the log when someone asks.

The core records what it decides about an incident in the stream named by its id, so its view
is rebuilt by feeding that stream to a fresh projection, with the inputs from other streams that
caused those decisions: the signals that opened it or joined it (for the title's "60 pods") and
the answers to its approvals. Each input sits just before the decisions it caused, at the seq
their ids say. A few rebuilt views are cached; a resolved incident no longer changes."""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING

from onduty.events import Event
from onduty.readmodel.incidents import IncidentProjection, IncidentView

if TYPE_CHECKING:
    from onduty.log import EventLog

APPROVALS = "approvals"
"""The stream approval answers are recorded in (`onduty.approvals.STREAM`)."""
CACHED = 256
"""Rebuilt views kept for the next request (a history page shows 25)."""


def _cause_seq(event: Event) -> int | None:
    """Where the input that caused `event` is: the core places an input and then its
    decisions, the n-th of them with id `<input id>:<n>`, so the input is n + 1 seqs earlier."""
    cause = event.causation_id
    if not cause or not event.id.startswith(cause + ":"):
        return None
    index = event.id[len(cause) + 1 :]
    return event.seq - int(index) - 1 if index.isdigit() else None


def _answers(log: EventLog, mine: list[Event], known: set[int]) -> list[Event]:
    """The answers to the incident's approvals: recorded in the approvals' stream from its
    first request until the last one expires (an answer may come after the incident resolved,
    and a granted one is not always followed by a decision of the core)."""
    asked = [event for event in mine if event.type == "ApprovalRequested"]
    if not asked:
        return []
    ids = {event.data.get("approval_id") for event in asked}
    until = max(datetime.fromisoformat(event.data["expires_at"]) for event in asked)
    found = []
    for event in log.read_stream(APPROVALS, after=asked[0].seq):
        if event.ts > until:
            break
        if event.data.get("approval_id") in ids and event.seq not in known:
            found.append(event)
    return found


def rebuild(log: EventLog, incident_id: str) -> IncidentView | None:
    """The incident's view as the service's projection holds it, from the log alone; None
    when the log has no such incident."""
    stream = log.read_stream(incident_id)
    first = next(stream, None)  # another stream ("timers", a signal's) is not read through
    if first is None or first.type != "IncidentOpened":
        return None
    if first.data.get("incident_id") != incident_id:
        return None
    mine = [first, *stream]
    own = {event.seq for event in mine}
    wanted: dict[int, str | None] = {}
    for event in mine:
        seq = _cause_seq(event)
        if seq is not None and seq not in own:
            wanted[seq] = event.causation_id
    causes = [event for event in log.read_seqs(wanted) if wanted.get(event.seq) == event.id]
    causes = sorted([*causes, *_answers(log, mine, own | wanted.keys())], key=lambda e: e.seq)
    projection = IncidentProjection(keep_timeline=True)
    projection.feed_all(heapq.merge(causes, mine, key=lambda event: event.seq))
    return projection.incidents.get(incident_id)


class Archive:
    """Rebuilt views of incidents that left memory, the most recently asked for cached."""

    def __init__(self, cached: int = CACHED) -> None:
        self._cached = cached
        self._views: OrderedDict[str, IncidentView] = OrderedDict()
        self._lock = threading.Lock()

    def view(self, log: EventLog | None, incident_id: str) -> IncidentView | None:
        """The incident's view, read from `log` unless cached; None when there is none (or no
        log). Only resolved incidents are cached: nothing more happens to them."""
        with self._lock:
            view = self._views.get(incident_id)
            if view is not None:
                self._views.move_to_end(incident_id)
                return view
        if log is None:
            return None
        view = rebuild(log, incident_id)
        if view is not None and view.status == "resolved":
            with self._lock:
                self._views[incident_id] = view
                while len(self._views) > self._cached:
                    self._views.popitem(last=False)
        return view

    def resolved(self, log: EventLog | None, seqs: list[int]) -> list[IncidentView | None]:
        """The views of the incidents resolved at `seqs` (their `IncidentResolved` events)."""
        if log is None:
            return [None] * len(seqs)
        ids = {event.seq: event.data.get("incident_id") for event in log.read_seqs(seqs)}
        found = []
        for seq in seqs:
            incident_id = ids.get(seq)
            found.append(self.view(log, incident_id) if isinstance(incident_id, str) else None)
        return found
