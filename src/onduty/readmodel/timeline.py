"""An incident's bounded timeline: the events a view keeps in memory, and signal pages read
from the log for the rest."""

from __future__ import annotations

import itertools
from array import array
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from onduty.events import Event

if TYPE_CHECKING:
    from onduty.log import EventLog
    from onduty.readmodel.incidents import IncidentView

SIGNAL_CHANGES = frozenset(
    {"signal_added", "signal_resolved", "signal_refired", "signal_timed_out"}
)
"""The incident notes that are one signal's comings and goings: an incident of 40,000 alerts has
that many of them. Everything else recorded about an incident is a decision (opened, verdicts,
approvals, actions, verification, undo, escalation, acknowledgement, other notes, resolved)."""

# What one incident keeps in memory, however long it runs and however many signals join it:
# the first and the most recent decisions, and the first and the most recent signal events.
# The rest stays in the log, where `signal_page` reads the signal events a page at a time.
DECISIONS_FIRST = 200
DECISIONS_RECENT = 200
SIGNALS_FIRST = 100
SIGNALS_RECENT = 100
SIGNAL_PAGE = 100
"""Signal events in a page, unless asked otherwise (at most `SIGNAL_PAGE_MAX`)."""
SIGNAL_PAGE_MAX = 1000


def is_signal_event(event: Event) -> bool:
    return event.type == "IncidentUpdated" and event.data.get("change") in SIGNAL_CHANGES


FOLLOW_UP_KEYS = ("command_id", "of_command_id", "approval_id")
"""What an event that names no incident follows up: a command (its outcome), the command an
undo reverses, an approval request (its answer)."""


def incident_of(data: Mapping[str, Any], follows: Mapping[str, str]) -> str | None:
    """The incident an event is about: the one it names, else the one of the command or
    approval it follows up (`follows`: command and approval ids → incident id, learnt from the
    incident's earlier events, which name both)."""
    named = data.get("incident_id")
    if named:
        return str(named)
    for key in FOLLOW_UP_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value in follows:
            return follows[value]
    return None


def learn_follow_ups(
    data: Mapping[str, Any], incident_id: str, follows: dict[str, str]
) -> list[str]:
    """Remember which incident the command and approval ids `data` names belong to (for
    `incident_of`), and return the ids seen here for the first time."""
    learnt: list[str] = []
    for key in ("command_id", "approval_id"):
        value = data.get(key)
        if isinstance(value, str) and value not in follows:
            follows[value] = incident_id
            learnt.append(value)
    return learnt


class Window:
    """A bounded view of a run of events: the seqs of the first `first` of them and of the most
    recent `recent`, and how many were seen in all (`omitted` fell between). Only seqs are kept
    (the events stay in the log: `events` reads them back), in compact arrays allocated when
    first needed, so that an incident with one decision costs a few dozen bytes here."""

    __slots__ = ("_first", "_recent", "first_seq", "last_seq", "recent", "start", "total")

    def __init__(self, first: int = 0, recent: int = 0) -> None:
        self._first, self._recent = first, recent
        self.start: array[int] | None = None
        self.recent: deque[int] | None = None
        self.total = 0
        self.first_seq = 0
        self.last_seq = 0

    def add(self, seq: int) -> None:
        self.total += 1
        if self.total == 1:
            self.first_seq = seq
        self.last_seq = seq
        if self.start is None and self._first:
            self.start = array("q")
        if self.start is not None and len(self.start) < self._first:
            self.start.append(seq)
        elif self._recent:
            if self.recent is None:
                self.recent = deque(maxlen=self._recent)
            self.recent.append(seq)

    @property
    def kept_first(self) -> int:
        """How many of the first seqs it keeps, at most."""
        return self._first

    def copy(self) -> Window:
        """A window of the same bounds holding the same seqs."""
        return Window.from_state(self.state())

    @property
    def split(self) -> int:
        """How many of the kept seqs are the first ones (the rest are the most recent)."""
        return len(self.start or ())

    @property
    def omitted(self) -> int:
        return self.total - self.retained

    @property
    def retained(self) -> int:
        return len(self.start or ()) + len(self.recent or ())

    def kept(self) -> list[int]:
        """The seqs kept, in log order."""
        return [*(self.start or ()), *(self.recent or ())]

    def events(self, log: EventLog | None) -> list[Event]:
        """The kept events, read back from `log`, in log order."""
        seqs = self.kept()
        if not seqs:
            return []
        if log is None:
            raise RuntimeError("the event log is not open")
        return log.read_seqs(seqs)

    def state(self) -> list[Any]:
        seqs = [list(self.start or ()), list(self.recent or ())]
        return [self._first, self._recent, self.total, self.first_seq, self.last_seq, *seqs]

    @classmethod
    def from_state(cls, state: list[Any]) -> Window:
        first, recent, total, first_seq, last_seq, start, latest = state
        window = cls(first, recent)
        window.total, window.first_seq, window.last_seq = total, first_seq, last_seq
        if start:
            window.start = array("q", start)
        if latest:
            window.recent = deque(latest, maxlen=recent)
        return window


@dataclass(frozen=True)
class SignalCursor:
    """What paging one incident's signal events needs from its view: taken while holding the
    read models' lock, so that the log is then read without holding it."""

    incident_id: str
    total: int
    first_seq: int
    last_seq: int
    kept: list[int] | None
    """The seqs of every signal event of the incident while the view holds them all; else
    None (the incident's stream in the log is paged instead)."""

    @classmethod
    def of(cls, view: IncidentView) -> SignalCursor:
        window = view.signal_events
        whole = window.retained == window.total
        return cls(
            view.incident_id,
            window.total,
            window.first_seq,
            window.last_seq,
            window.kept() if whole else None,
        )


@dataclass(frozen=True)
class SignalPage:
    """Signal events of an incident, in log order, and whether there are more either side."""

    events: list[Event]
    total: int
    earlier: bool
    later: bool


def signal_page(
    cursor: SignalCursor,
    log: EventLog | None,
    *,
    after: int = 0,
    before: int | None = None,
    limit: int = SIGNAL_PAGE,
) -> SignalPage:
    """The first `limit` signal events with seq > `after`; with `before`, the last `limit`
    with `after` < seq < `before`. By their seqs while the view holds them all, else from the
    incident's stream in the log (where the core records them), so that a page costs the same
    whether the incident has a hundred signals or millions."""
    limit = max(1, min(limit, SIGNAL_PAGE_MAX))
    backwards = before is not None
    if log is None:
        raise RuntimeError("the event log is not open")
    if cursor.kept is not None:
        chosen = [seq for seq in cursor.kept if seq > after and (before is None or seq < before)]
        events = log.read_seqs(chosen[-limit:] if backwards else chosen[:limit])
    else:
        stream = log.read_stream(cursor.incident_id, after, before, newest_first=backwards)
        mine = (
            event
            for event in stream
            if is_signal_event(event) and event.data.get("incident_id") == cursor.incident_id
        )
        events = list(itertools.islice(mine, limit))
        if backwards:
            events.reverse()
    if events:
        earlier, later = events[0].seq > cursor.first_seq, events[-1].seq < cursor.last_seq
    else:
        earlier = cursor.total > 0 and cursor.first_seq <= after
        later = before is not None and cursor.total > 0 and cursor.last_seq >= before
    return SignalPage(events, cursor.total, earlier, later)
