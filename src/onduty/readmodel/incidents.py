"""Incidents as people see them: title, status, what was done, and a bounded timeline.

What the projection holds is bounded over months: a view keeps seqs, never events (the events
stay in the log); with `keep_resolved`, only that many resolved incidents stay in memory, and
older ones are read back from the log when asked for (`archive`), their place in the history
kept as one seq each (`resolved`) and, for the shift overview, a small `Fact` for a week."""

from __future__ import annotations

import sys
from array import array
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from onduty.correlate.titles import MEMBER_LABELS, counted_title, member_noun
from onduty.events import Event
from onduty.readmodel.approvals import ApprovalBook, PendingApproval
from onduty.readmodel.timeline import (
    DECISIONS_FIRST,
    DECISIONS_RECENT,
    SIGNALS_FIRST,
    SIGNALS_RECENT,
    Window,
    incident_of,
    is_signal_event,
    learn_follow_ups,
)

if TYPE_CHECKING:
    from onduty.log import EventLog

LIST_KEPT = 100
"""The most recent escalation reasons, actions and denials an incident keeps."""
RESOLVED_KEPT = 2_000
"""Resolved incidents the service keeps in memory (the most recently resolved): at least the
most the incident list returns at once, so that its answers are the same."""
FACTS_KEPT = 100_000
FACTS_AGE = timedelta(days=8)
"""How long (after the latest resolution) the shift overview's facts about resolved incidents
that left memory are kept: longer than its widest window (7 days)."""


def _shared(name: str | None) -> str | None:
    """One string object for a service name, however many incidents name it."""
    return None if name is None else sys.intern(name)


class Fact(NamedTuple):
    """What the shift overview needs of a resolved incident that left memory."""

    service: str | None
    opened_at: datetime
    resolved_at: datetime
    escalated: bool
    acted: bool


Members = tuple[str, ...]
"""A signal's values of the `MEMBER_LABELS`, in their order ("" where it has none)."""


def member_labels(labels: Mapping[str, str]) -> Members | None:
    """The labels that tell a group's members apart (all `differing` compares), or None when
    the signal has no labels at all; a tuple costs less than a dict, per open incident."""
    if not labels:
        return None
    return tuple(str(labels.get(name, "")) for name, _ in MEMBER_LABELS)


def differing(first: Members, other: Members) -> set[str]:
    """The member labels whose values differ (`correlate.titles.differing`)."""
    return {name for (name, _), a, b in zip(MEMBER_LABELS, first, other, strict=True) if a != b}


def _pushed(items: Sequence[str], item: str, kept: int = LIST_KEPT) -> list[str]:
    """`items` with `item` appended, at most `kept` of the most recent; a view starts with
    empty tuples (shared, free) and holds a list only once something happened."""
    found = items if isinstance(items, list) else list(items)
    found.append(item)
    if len(found) > kept:
        del found[0]
    return found


def _without(items: Sequence[str], item: str) -> Sequence[str]:
    if item not in items:
        return items
    found = list(items)
    found.remove(item)
    return found


_NO_SIGNALS = (Window(0, 0), Window(SIGNALS_FIRST, SIGNALS_RECENT))
"""Shared, never added to: the signal events of the many incidents that have only the one
that opened them (`keep_timeline` False, True)."""


@dataclass(slots=True)
class IncidentView:
    incident_id: str
    title: str
    service: str | None
    opened_at: datetime
    status: str = "open"
    resolved_at: datetime | None = None
    resolution: str = ""
    signals: int = 1
    flapping: bool = False
    escalations: Sequence[str] = ()
    """The most recent `LIST_KEPT` escalation reasons (likewise `actions` and `denied`)."""
    actions: Sequence[str] = ()
    denied: Sequence[str] = ()
    awaiting_approval: Sequence[str] = ()
    """Its approval requests waiting for an answer (ids)."""
    muted: bool = False
    acknowledged: bool = False
    acting: Sequence[str] = ()
    """Actions and undos started and not finished (command ids)."""
    verifying: Sequence[str] = ()
    """Actions that succeeded and wait for their verification (command ids)."""
    decisions: Window = field(default_factory=Window, repr=False)
    signal_events: Window = field(default_factory=Window, repr=False)
    """Its signal events (`SIGNAL_CHANGES`): how many, and the first and most recent ones."""
    shared_title: str = ""
    """The title the core recorded (what its signals share); `title` adds their count."""
    first_labels: Members | None = field(default=None, repr=False)
    """Its first signal's member labels, to tell which of them its members differ in (None
    when unknown); dropped once it is resolved."""
    varying: tuple[str, ...] = field(default=(), repr=False)
    """The member labels (pod, instance, …) its signals differ in: "60 pods"."""
    commands: list[str] | None = field(default=None, repr=False)
    """The command and approval ids that lead to it, forgotten when it leaves memory."""

    def retitle(self) -> None:
        """The title people read: the shared title and, for a group, how many and of what."""
        if not self.shared_title:
            self.shared_title = self.title
        self.title = counted_title(self.shared_title, self.signals, member_noun(self.varying))

    @property
    def escalated(self) -> bool:
        return bool(self.escalations)

    def timeline(self, log: EventLog | None) -> list[Event]:
        """The events this view keeps, read back from `log`, in log order: its decisions (all
        but the middle of a very long incident's) and its first and most recent signal events."""
        seqs = [*self.decisions.kept(), *self.signal_events.kept()]
        if not seqs:
            return []
        if log is None:
            raise RuntimeError("the event log is not open")
        return log.read_seqs(seqs)

    def note(self, event: Event) -> None:
        """Keep `event`'s seq (within the bounds) and follow the state the console shows."""
        if is_signal_event(event):
            if self.signal_events in _NO_SIGNALS:  # its first: a window of its own
                self.signal_events = self.signal_events.copy()
            self.signal_events.add(event.seq)
            return
        self.decisions.add(event.seq)
        data, kind = event.data, event.type
        command = str(data.get("command_id", ""))
        if kind == "IncidentUpdated":
            change = data.get("change")
            if change in ("muted", "unmuted"):
                self.muted = change == "muted"
            elif change == "acknowledged":
                self.acknowledged = True
        elif kind == "Acknowledged":
            self.acknowledged = True
        elif kind in ("ActionStarted", "UndoStarted"):
            if command not in self.acting:
                self.acting = _pushed(self.acting, command, kept=1 << 30)
        elif kind == "ActionSucceeded":
            self.acting = _without(self.acting, command)
            if command not in self.verifying:
                self.verifying = _pushed(self.verifying, command, kept=1 << 30)
        elif kind in ("ActionFailed", "ActionOutcomeUnknown", "UndoFinished"):
            self.acting = _without(self.acting, command)
        elif kind in ("VerificationPassed", "VerificationFailed"):
            self.verifying = _without(self.verifying, command)

    def awaiting(self) -> list[str]:
        """`awaiting_approval` as a list the approval book may change."""
        if not isinstance(self.awaiting_approval, list):
            self.awaiting_approval = list(self.awaiting_approval)
        return self.awaiting_approval


class IncidentProjection:
    """Incidents with their timelines; feed it events in log order.

    `keep_timeline`: each view keeps the seqs of its first and latest decisions and signal
    events. `keep_resolved`: how many resolved incidents stay in memory (None: all of them);
    the ones that leave are in `resolved` (their resolution's seq) and `facts`."""

    def __init__(self, keep_timeline: bool = False, keep_resolved: int | None = None) -> None:
        self.incidents: dict[str, IncidentView] = {}
        self._book = ApprovalBook()
        self.approvals: dict[str, PendingApproval] = self._book.pending
        """Approval requests waiting for an answer, by id."""
        self.answered = self._book.answered
        """Approvals decided lately (granted in full, denied, expired, moot), oldest first."""
        self._keep_timeline = keep_timeline
        self.keep_resolved = keep_resolved
        self._command_incident: dict[str, str] = {}
        self.resolved: array[int] = array("q")
        """The seq of each incident's resolution, in the order they resolved (oldest first):
        the console's history pages through it from the end."""
        self.kept_resolved: deque[str] = deque()
        """The ids of the resolved incidents still in memory, in the order they resolved: the
        last entries of `resolved`."""
        self.facts: deque[Fact] = deque(maxlen=FACTS_KEPT)
        """Resolved incidents that left memory lately, in the order they did."""
        self._signal: tuple[str, Members | None] | None = None
        """The last signal fed (its event id and member labels): the one an incident note
        that follows it, caused by it, is about."""

    def feed_all(self, events: Iterable[Event]) -> IncidentProjection:
        for event in events:
            self.feed(event)
        return self

    def feed(self, event: Event) -> None:
        data = event.data
        if event.type == "SignalReceived":
            self._signal = (event.id, member_labels(data.get("labels") or {}))
            return
        if event.type == "IncidentOpened":
            self.incidents[data["incident_id"]] = self._opened(event)
        incident_id = incident_of(data, self._command_incident)
        view = self.incidents.get(incident_id or "")
        if view is None:
            return
        learnt = learn_follow_ups(data, view.incident_id, self._command_incident)
        if learnt:
            if view.commands is None:
                view.commands = []
            view.commands.extend(learnt)
        view.note(event)
        if event.type == "IncidentUpdated":
            self._updated(view, event)
        elif event.type == "IncidentResolved":
            self._resolved(view, event)
        elif event.type == "Escalated":
            view.escalations = _pushed(view.escalations, data["reason"])
        elif event.type == "ActionStarted":
            view.actions = _pushed(view.actions, f"{data['action']} {data['target']}")
        elif event.type == "PolicyEvaluated" and data["verdict"] == "deny":
            view.denied = _pushed(view.denied, data["reason"])
        elif event.type == "ApprovalRequested":
            self._book.requested(view.incident_id, view.awaiting(), event)
        elif event.type in ("ApprovalGranted", "ApprovalDenied"):
            self._book.answer(view.awaiting(), event)
        elif event.type == "ApprovalExpired":
            self._book.decide(view.awaiting(), data["approval_id"], "expired")

    def _opened(self, event: Event) -> IncidentView:
        data, keep = event.data, self._keep_timeline
        return IncidentView(
            incident_id=data["incident_id"],
            title=data["title"],
            shared_title=data["title"],
            first_labels=self._labels_behind(event),
            service=_shared(data.get("service")),
            opened_at=event.ts,
            decisions=Window(*((DECISIONS_FIRST, DECISIONS_RECENT) if keep else (0, 0))),
            signal_events=_NO_SIGNALS[keep],
        )

    def _updated(self, view: IncidentView, event: Event) -> None:
        data = event.data
        if data["change"] == "signal_added":
            view.signals += 1
            labels = self._labels_behind(event)
            if view.first_labels is not None and labels is not None:
                more = differing(view.first_labels, labels).difference(view.varying)
                if more:
                    view.varying = tuple(sorted({*view.varying, *more}))
            view.retitle()
        elif data["change"] == "retitled":
            view.shared_title = data.get("detail") or view.shared_title
            view.retitle()
        elif data["change"] == "flapping":
            view.flapping = True
        elif data["change"] == "approval_refused":
            self._book.refused(view.awaiting(), event)

    def _resolved(self, view: IncidentView, event: Event) -> None:
        first = view.status != "resolved"
        view.status, view.resolved_at, view.resolution = "resolved", event.ts, event.data["reason"]
        view.first_labels = None  # no signal joins a resolved incident
        for approval_id in list(view.awaiting_approval):  # moot: the core forgets them too
            self._book.decide(view.awaiting(), approval_id, "moot")
        if not first:
            return
        self.resolved.append(event.seq)
        self.kept_resolved.append(view.incident_id)
        if self.keep_resolved is None:
            return
        while len(self.kept_resolved) > self.keep_resolved:
            self._forget(self.kept_resolved.popleft(), event.ts)

    def _forget(self, incident_id: str, now: datetime) -> None:
        """A resolved incident leaves memory: the log has it (`archive` reads it back)."""
        view = self.incidents.pop(incident_id, None)
        if view is None or view.resolved_at is None:
            return
        for key in view.commands or ():
            if self._command_incident.get(key) == incident_id:
                del self._command_incident[key]
        facts = self.facts
        facts.append(
            Fact(view.service, view.opened_at, view.resolved_at, view.escalated, bool(view.actions))
        )
        while facts and facts[0].resolved_at < now - FACTS_AGE:
            facts.popleft()

    def _labels_behind(self, event: Event) -> Members | None:
        """The member labels of the signal that caused `event` (None when it is not the last
        fed, or has no labels)."""
        if self._signal is not None and self._signal[0] == event.causation_id:
            return self._signal[1]
        return None

    def resolved_id(self, position: int) -> str | None:
        """The id of the `position`th incident resolved (from 0) while it is in memory; None
        when it has left (read it back from the log by its seq, `resolved[position]`)."""
        offset = len(self.resolved) - len(self.kept_resolved)
        return self.kept_resolved[position - offset] if position >= offset else None

    def approval(self, approval_id: str) -> PendingApproval | None:
        """A pending approval, or one decided lately."""
        return self._book.get(approval_id)

    def ordered(self) -> list[IncidentView]:
        return sorted(self.incidents.values(), key=lambda view: view.opened_at)
