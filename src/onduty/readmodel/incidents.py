"""Incidents as people see them: title, status, what was done, and a bounded timeline."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from onduty.correlate.titles import counted_title, differing, member_noun
from onduty.events import Event
from onduty.readmodel.approvals import ApprovalBook, PendingApproval
from onduty.readmodel.timeline import (
    DECISIONS_FIRST,
    DECISIONS_RECENT,
    SIGNALS_FIRST,
    SIGNALS_RECENT,
    Window,
    is_signal_event,
)

LIST_KEPT = 100
"""The most recent escalation reasons, actions and denials an incident keeps."""


@dataclass
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
    escalations: deque[str] = field(default_factory=lambda: deque(maxlen=LIST_KEPT))
    actions: deque[str] = field(default_factory=lambda: deque(maxlen=LIST_KEPT))
    denied: deque[str] = field(default_factory=lambda: deque(maxlen=LIST_KEPT))
    awaiting_approval: list[str] = field(default_factory=list)
    muted: bool = False
    acknowledged: bool = False
    acting: set[str] = field(default_factory=set)
    """Actions and undos started and not finished (command ids)."""
    verifying: set[str] = field(default_factory=set)
    """Actions that succeeded and wait for their verification (command ids)."""
    decisions: Window = field(default_factory=Window, repr=False)
    signal_events: Window = field(default_factory=Window, repr=False)
    """Its signal events (`SIGNAL_CHANGES`): how many, and the first and most recent ones."""
    shared_title: str = ""
    """The title the core recorded (what its signals share); `title` adds their count."""
    first_labels: dict[str, str] = field(default_factory=dict, repr=False)
    """Its first signal's labels, to tell which labels its members differ in."""
    varying: set[str] = field(default_factory=set, repr=False)
    """The member labels (pod, instance, …) its signals differ in: "60 pods"."""

    def retitle(self) -> None:
        """The title people read: the shared title and, for a group, how many and of what."""
        if not self.shared_title:
            self.shared_title = self.title
        self.title = counted_title(self.shared_title, self.signals, member_noun(self.varying))

    @property
    def escalated(self) -> bool:
        return bool(self.escalations)

    @property
    def timeline(self) -> list[Event]:
        """The events this view keeps, in log order: its decisions (all but the middle of a
        very long incident's) and its first and most recent signal events."""
        merged = heapq.merge(
            self.decisions.kept(), self.signal_events.kept(), key=lambda item: item[0]
        )
        return [event for _, event in merged]

    def note(self, order: int, event: Event) -> None:
        """Keep `event` (within the bounds) and follow the state the console shows."""
        if is_signal_event(event):
            self.signal_events.add(order, event)
            return
        self.decisions.add(order, event)
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
            self.acting.add(command)
        elif kind == "ActionSucceeded":
            self.acting.discard(command)
            self.verifying.add(command)
        elif kind in ("ActionFailed", "ActionOutcomeUnknown", "UndoFinished"):
            self.acting.discard(command)
        elif kind in ("VerificationPassed", "VerificationFailed"):
            self.verifying.discard(command)


class IncidentProjection:
    """Incidents with their timelines; feed it events in log order."""

    def __init__(self, keep_timeline: bool = False) -> None:
        self.incidents: dict[str, IncidentView] = {}
        self._book = ApprovalBook()
        self.approvals: dict[str, PendingApproval] = self._book.pending
        """Approval requests waiting for an answer, by id."""
        self.answered = self._book.answered
        """Approvals decided lately (granted in full, denied, expired, moot), oldest first."""
        self._keep_timeline = keep_timeline
        self._command_incident: dict[str, str] = {}
        self._fed = 0
        self.resolved: list[str] = []
        """Resolved incidents' ids in the order they resolved (oldest first): the console's
        history pages through it from the end."""
        self._signal: tuple[str, dict[str, str]] | None = None
        """The last signal fed (its event id and labels): the one an incident note that
        follows it, caused by it, is about."""

    def feed_all(self, events: Iterable[Event]) -> IncidentProjection:
        for event in events:
            self.feed(event)
        return self

    def feed(self, event: Event) -> None:
        data = event.data
        if event.type == "SignalReceived":
            self._signal = (event.id, dict(data.get("labels") or {}))
            return
        if event.type == "IncidentOpened":
            keep = self._keep_timeline
            self.incidents[data["incident_id"]] = IncidentView(
                incident_id=data["incident_id"],
                title=data["title"],
                shared_title=data["title"],
                first_labels=self._labels_behind(event),
                service=data.get("service"),
                opened_at=event.ts,
                decisions=Window(*((DECISIONS_FIRST, DECISIONS_RECENT) if keep else (0, 0))),
                signal_events=Window(*((SIGNALS_FIRST, SIGNALS_RECENT) if keep else (0, 0))),
            )
        incident_id = (
            data.get("incident_id")
            or self._command_incident.get(data.get("command_id", ""))
            or self._command_incident.get(data.get("of_command_id", ""))
            or self._command_incident.get(data.get("approval_id", ""))
        )
        view = self.incidents.get(incident_id or "")
        if view is None:
            return
        for key in ("command_id", "approval_id"):
            if key in data:
                self._command_incident[data[key]] = view.incident_id
        self._fed += 1
        view.note(self._fed, event)
        if event.type == "IncidentUpdated":
            if data["change"] == "signal_added":
                view.signals += 1
                labels = self._labels_behind(event)
                if view.first_labels and labels:
                    view.varying |= differing(view.first_labels, labels)
                view.retitle()
            elif data["change"] == "retitled":
                view.shared_title = data.get("detail") or view.shared_title
                view.retitle()
            elif data["change"] == "flapping":
                view.flapping = True
            elif data["change"] == "approval_refused":
                self._book.refused(view.awaiting_approval, event)
        elif event.type == "IncidentResolved":
            if view.status != "resolved":
                self.resolved.append(view.incident_id)
            view.status, view.resolved_at, view.resolution = "resolved", event.ts, data["reason"]
            for approval_id in list(view.awaiting_approval):  # moot: the core forgets them too
                self._book.decide(view.awaiting_approval, approval_id, "moot")
        elif event.type == "Escalated":
            view.escalations.append(data["reason"])
        elif event.type == "ActionStarted":
            view.actions.append(f"{data['action']} {data['target']}")
        elif event.type == "PolicyEvaluated" and data["verdict"] == "deny":
            view.denied.append(data["reason"])
        elif event.type == "ApprovalRequested":
            self._book.requested(view.incident_id, view.awaiting_approval, event)
        elif event.type in ("ApprovalGranted", "ApprovalDenied"):
            self._book.answer(view.awaiting_approval, event)
        elif event.type == "ApprovalExpired":
            self._book.decide(view.awaiting_approval, data["approval_id"], "expired")

    def _labels_behind(self, event: Event) -> dict[str, str]:
        """The labels of the signal that caused `event` (empty when it is not the last fed)."""
        if self._signal is not None and self._signal[0] == event.causation_id:
            return self._signal[1]
        return {}

    def approval(self, approval_id: str) -> PendingApproval | None:
        """A pending approval, or one decided lately."""
        return self._book.get(approval_id)

    def ordered(self) -> list[IncidentView]:
        return sorted(self.incidents.values(), key=lambda view: view.opened_at)
