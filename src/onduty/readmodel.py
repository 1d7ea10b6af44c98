"""Read models: what humans and tools look at, projected from the log (never from the core's
private state), so they can be rebuilt at any time and agree with the audit trail."""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from onduty.correlate.titles import counted_title, differing, member_noun
from onduty.events import Event

if TYPE_CHECKING:
    from onduty.log import EventLog

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
LIST_KEPT = 100
"""The most recent escalation reasons, actions and denials an incident keeps."""
SIGNAL_PAGE = 100
"""Signal events in a page, unless asked otherwise (at most `SIGNAL_PAGE_MAX`)."""
SIGNAL_PAGE_MAX = 1000


def is_signal_event(event: Event) -> bool:
    return event.type == "IncidentUpdated" and event.data.get("change") in SIGNAL_CHANGES


class Window:
    """A bounded view of a run of events: the first `first` of them, the most recent `recent`,
    and how many were seen in all (`omitted` fell between). Each event is kept with its place
    in feed order, so that windows merge back into one timeline."""

    __slots__ = ("_first", "first_seq", "last_seq", "recent", "start", "total")

    def __init__(self, first: int = 0, recent: int = 0) -> None:
        self._first = first
        self.start: list[tuple[int, Event]] = []
        self.recent: deque[tuple[int, Event]] = deque(maxlen=recent)
        self.total = 0
        self.first_seq = 0
        self.last_seq = 0

    def add(self, order: int, event: Event) -> None:
        self.total += 1
        if self.total == 1:
            self.first_seq = event.seq
        self.last_seq = event.seq
        if len(self.start) < self._first:
            self.start.append((order, event))
        else:
            self.recent.append((order, event))

    @property
    def omitted(self) -> int:
        return self.total - len(self.start) - len(self.recent)

    @property
    def retained(self) -> int:
        return len(self.start) + len(self.recent)

    def kept(self) -> Iterator[tuple[int, Event]]:
        return itertools.chain(self.start, self.recent)

    def events(self) -> list[Event]:
        return [event for _, event in self.kept()]


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


def same_person(name: str, other: str) -> bool:
    """Identities are compared without regard to case: `alice` and `Alice` are one person."""
    return name.casefold() == other.casefold()


@dataclass
class PendingApproval:
    """An approval request as the core sees it: pending until granted in full (`required`
    different people approved), denied, expired, or moot (its incident resolved)."""

    approval_id: str
    incident_id: str
    command_id: str
    summary: str
    requested_at: datetime
    expires_at: datetime
    required: int = 1
    round: int = 0
    approved_by: list[str] = field(default_factory=list)
    """Who has approved so far, in order (each person once)."""
    outcome: str = ""
    """Once decided: "granted", "denied", "expired" or "moot"; empty while pending."""
    decided_by: str = ""
    refusals: dict[str, str] = field(default_factory=dict)
    """Answers the core recorded but did not obey, by person (folded case): why."""

    def has_approved(self, person: str) -> bool:
        return any(same_person(person, name) for name in self.approved_by)

    @property
    def waiting_for(self) -> int:
        """How many more different people must approve."""
        return max(self.required - len(self.approved_by), 0)

    @property
    def status(self) -> str:
        """One sentence for people: "1 of 2: approved by alice, waiting for another approver"."""
        if self.outcome == "granted":
            return f"approved by {' and '.join(self.approved_by)}"
        if self.outcome == "denied":
            return f"denied by {self.decided_by}"
        if self.outcome == "expired":
            return "expired unanswered: denied (the safe default)"
        if self.outcome == "moot":
            return "moot: the incident was resolved"
        count = f"{len(self.approved_by)} of {self.required}: " if self.required > 1 else ""
        done = f"approved by {', '.join(self.approved_by)}, " if self.approved_by else ""
        if not self.approved_by:
            wanted = "an approver" if self.required == 1 else f"{self.required} approvers"
        elif self.waiting_for == 1:
            wanted = "another approver"
        else:
            wanted = f"{self.waiting_for} more approvers"
        return f"{count}{done}waiting for {wanted}"


# Decided approvals kept for people who ask about one after the fact (an answer's reply).
ANSWERED_KEPT = 1000


@dataclass
class _Answer:
    """The last approval answer fed, until the core's notes on it have been seen: an answer the
    core refuses (`approval_refused`) is undone here as it is there."""

    event_id: str
    actor: str
    approval: PendingApproval
    approved_by: list[str]


class IncidentProjection:
    """Incidents with their timelines; feed it events in log order."""

    def __init__(self, keep_timeline: bool = False) -> None:
        self.incidents: dict[str, IncidentView] = {}
        self.approvals: dict[str, PendingApproval] = {}
        self.answered: OrderedDict[str, PendingApproval] = OrderedDict()
        """Approvals decided lately (granted in full, denied, expired, moot), oldest first."""
        self._answer: _Answer | None = None
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
                self._undo_answer(view, event)
        elif event.type == "IncidentResolved":
            if view.status != "resolved":
                self.resolved.append(view.incident_id)
            view.status, view.resolved_at, view.resolution = "resolved", event.ts, data["reason"]
            for approval_id in list(view.awaiting_approval):  # moot: the core forgets them too
                self._decide(view, approval_id, "moot")
        elif event.type == "Escalated":
            view.escalations.append(data["reason"])
        elif event.type == "ActionStarted":
            view.actions.append(f"{data['action']} {data['target']}")
        elif event.type == "PolicyEvaluated" and data["verdict"] == "deny":
            view.denied.append(data["reason"])
        elif event.type == "ApprovalRequested":
            self._requested(view, event)
        elif event.type in ("ApprovalGranted", "ApprovalDenied"):
            self._answered(view, event)
        elif event.type == "ApprovalExpired":
            self._decide(view, data["approval_id"], "expired")

    def _labels_behind(self, event: Event) -> dict[str, str]:
        """The labels of the signal that caused `event` (empty when it is not the last fed)."""
        if self._signal is not None and self._signal[0] == event.causation_id:
            return self._signal[1]
        return {}

    # The approvals mirror the core (lifecycle/actions.py): an answer counts unless the core
    # notes it as refused; a person approves once (names compared without regard to case); the
    # request leaves the inbox only when granted in full, denied, expired or moot.

    def _requested(self, view: IncidentView, event: Event) -> None:
        data = event.data
        expires_at = datetime.fromisoformat(data["expires_at"])
        known = self.approvals.get(data["approval_id"])
        if known is not None:  # asked again, of the next tier: same request, new deadline
            known.expires_at, known.round = expires_at, int(data.get("round", 0))
            return
        view.awaiting_approval.append(data["approval_id"])
        self.approvals[data["approval_id"]] = PendingApproval(
            approval_id=data["approval_id"],
            incident_id=view.incident_id,
            command_id=data["command_id"],
            summary=data.get("summary", ""),
            requested_at=event.ts,
            expires_at=expires_at,
            required=int(data.get("required", 1)),
            round=int(data.get("round", 0)),
        )

    def _answered(self, view: IncidentView, event: Event) -> None:
        approval = self.approvals.get(event.data["approval_id"])
        if approval is None:
            return  # unknown, already decided, expired or moot: the core ignores it too
        self._answer = _Answer(event.id, event.actor, approval, list(approval.approved_by))
        if event.type == "ApprovalDenied":
            approval.decided_by = event.actor
            self._decide(view, approval.approval_id, "denied")
        elif not approval.has_approved(event.actor):  # else: the core notes it as repeated
            approval.approved_by.append(event.actor)
            if not approval.waiting_for:
                self._decide(view, approval.approval_id, "granted")

    def _undo_answer(self, view: IncidentView, note: Event) -> None:
        """The core refused the last answer (the role may not answer approvals)."""
        answer = self._answer
        if answer is None or note.causation_id != answer.event_id:
            return
        self._answer = None
        approval = answer.approval
        approval.approved_by, approval.outcome, approval.decided_by = answer.approved_by, "", ""
        approval.refusals[answer.actor.casefold()] = str(note.data.get("detail", ""))
        if approval.approval_id not in self.approvals:
            self.answered.pop(approval.approval_id, None)
            self.approvals[approval.approval_id] = approval
            view.awaiting_approval.append(approval.approval_id)

    def _decide(self, view: IncidentView, approval_id: str, outcome: str) -> None:
        approval = self.approvals.pop(approval_id, None)
        if approval_id in view.awaiting_approval:
            view.awaiting_approval.remove(approval_id)
        if approval is None:
            return
        approval.outcome = outcome
        self.answered[approval_id] = approval
        while len(self.answered) > ANSWERED_KEPT:
            self.answered.popitem(last=False)

    def approval(self, approval_id: str) -> PendingApproval | None:
        """A pending approval, or one decided lately."""
        return self.approvals.get(approval_id) or self.answered.get(approval_id)

    def ordered(self) -> list[IncidentView]:
        return sorted(self.incidents.values(), key=lambda view: view.opened_at)


@dataclass(frozen=True)
class SignalCursor:
    """What paging one incident's signal events needs from its view: taken while holding the
    read models' lock, so that the log is then read without holding it."""

    incident_id: str
    total: int
    first_seq: int
    last_seq: int
    kept: list[Event] | None
    """Every signal event of the incident while the view still holds them all; else None."""

    @classmethod
    def of(cls, view: IncidentView) -> SignalCursor:
        window = view.signal_events
        whole = window.retained == window.total
        return cls(
            view.incident_id,
            window.total,
            window.first_seq,
            window.last_seq,
            window.events() if whole else None,
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
    with `after` < seq < `before`. From memory while the view holds them all, else from the
    incident's stream in the log (where the core records them), so that a page costs the same
    whether the incident has a hundred signals or millions."""
    limit = max(1, min(limit, SIGNAL_PAGE_MAX))
    backwards = before is not None
    if cursor.kept is not None:
        chosen = [e for e in cursor.kept if e.seq > after and (before is None or e.seq < before)]
        events = chosen[-limit:] if backwards else chosen[:limit]
    elif log is None:
        raise RuntimeError("the event log is not open")
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


@dataclass
class AutonomyRaise:
    """A request to make a service more autonomous, waiting for `required` different admins
    (the requester first); it ends applied, superseded (the autonomy changed otherwise
    meanwhile, a lowering say) or, unconfirmed at `expires_at`, expired."""

    request_id: str
    service: str
    level: str
    previous: str | None
    required: int
    requested_at: datetime
    expires_at: datetime
    confirmed_by: list[str] = field(default_factory=list)
    outcome: str = ""
    """"applied" or "superseded" once decided; empty while open."""

    def has_confirmed(self, person: str) -> bool:
        return any(same_person(person, name) for name in self.confirmed_by)

    def state(self, now: datetime) -> str:
        if self.outcome:
            return self.outcome
        return "expired" if now >= self.expires_at else "pending"

    def status(self, now: datetime) -> str:
        """One sentence: "1 of 2: asked by root, waiting for another admin"."""
        state = self.state(now)
        count = f"{len(self.confirmed_by)} of {self.required}"
        if state == "applied":
            return f"{self.service} raised to {self.level}: confirmed by " + " and ".join(
                self.confirmed_by
            )
        if state == "superseded":
            return f"superseded: the autonomy of {self.service} was changed meanwhile"
        if state == "expired":
            return f"expired with {count} confirmations; {self.service} stays {self.previous}"
        asked = f"asked by {self.confirmed_by[0]}" if self.confirmed_by else "asked"
        others = self.confirmed_by[1:]
        also = f", confirmed by {', '.join(others)}" if others else ""
        left = self.required - len(self.confirmed_by)
        wanted = "another admin" if left == 1 else f"{left} more admins"
        return f"{count}: {asked}{also}, waiting for {wanted}"


class AutonomyRaises:
    """Autonomy raises that need several admins, as requested and confirmed in the log."""

    def __init__(self, kept: int = ANSWERED_KEPT) -> None:
        self.requests: OrderedDict[str, AutonomyRaise] = OrderedDict()
        self._kept = kept

    def feed(self, event: Event) -> None:
        data = event.data
        if event.type == "AutonomyRaiseRequested":
            for other in self._open(data["service"]):  # one open request per service
                other.outcome = "superseded"
            self.requests[data["request_id"]] = AutonomyRaise(
                request_id=data["request_id"],
                service=data["service"],
                level=data["level"],
                previous=data.get("previous"),
                required=int(data.get("required", 2)),
                requested_at=event.ts,
                expires_at=datetime.fromisoformat(data["expires_at"]),
                confirmed_by=[event.actor],
            )
            while len(self.requests) > self._kept:
                self.requests.popitem(last=False)
        elif event.type == "AutonomyRaiseConfirmed":
            request = self.requests.get(data["request_id"])
            if (
                request is not None
                and request.state(event.ts) == "pending"
                and not request.has_confirmed(event.actor)
            ):
                request.confirmed_by.append(event.actor)
        elif event.type == "AutonomyChanged":
            # the change that follows a request's last confirmation carries it out; any other
            # change of the service (a lowering, say) voids it
            for request in self._open(data["service"]):
                applied = (
                    data["level"] == request.level and len(request.confirmed_by) >= request.required
                )
                request.outcome = "applied" if applied else "superseded"

    def _open(self, service: str) -> list[AutonomyRaise]:
        return [r for r in self.requests.values() if r.service == service and not r.outcome]

    def pending(self, now: datetime) -> list[AutonomyRaise]:
        return [r for r in self.requests.values() if r.state(now) == "pending"]

    def pending_for(self, service: str, now: datetime) -> AutonomyRaise | None:
        return next((r for r in self.pending(now) if r.service == service), None)


@dataclass
class SilenceView:
    silence_id: str
    matchers: list[str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    kind: str

    def state(self, at: datetime) -> str:
        if at < self.starts_at:
            return "pending"
        return "active" if at < self.ends_at else "expired"


class SilenceProjection:
    """Silences and maintenance windows as created and expired in the log."""

    def __init__(self) -> None:
        self.silences: dict[str, SilenceView] = {}

    def feed(self, event: Event) -> None:
        data = event.data
        if event.type == "SilenceCreated":
            self.silences[data["silence_id"]] = SilenceView(
                silence_id=data["silence_id"],
                matchers=list(data["matchers"]),
                starts_at=datetime.fromisoformat(data["starts_at"]),
                ends_at=datetime.fromisoformat(data["ends_at"]),
                created_by=event.actor,
                comment=data["comment"],
                kind=data.get("kind", "silence"),
            )
        elif event.type == "SilenceExpired":
            view = self.silences.get(data["silence_id"])
            if view is not None and event.ts < view.ends_at:
                view.ends_at = max(event.ts, view.starts_at)


@dataclass
class PolicyView:
    """Which configuration is enforced, which candidate runs beside it, and the one before."""

    version: str = ""
    source: str = ""
    document: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None
    candidate_version: str = ""
    candidate_role: str = ""
    candidate_selector: str | None = None
    candidate_document: dict[str, Any] | None = None

    def feed(self, event: Event) -> None:
        if event.type != "PolicyActivated":
            return
        data = event.data
        role = data.get("role", "active")
        if role == "active":
            if self.document is not None and self.document != data["config"]:
                self.previous = self.document
            self.version, self.source, self.document = (
                data["version"],
                data["source"],
                data["config"],
            )
            if self.candidate_version == data["version"]:
                role = "withdrawn"
            else:
                return
        if role == "withdrawn":
            self.candidate_version, self.candidate_role = "", ""
            self.candidate_selector, self.candidate_document = None, None
        else:
            self.candidate_version, self.candidate_role = data["version"], role
            self.candidate_selector, self.candidate_document = data.get("selector"), data["config"]
