"""Read models: what humans and tools look at, projected from the log (never from the core's
private state), so they can be rebuilt at any time and agree with the audit trail."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from onduty.events import Event


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
    escalations: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    awaiting_approval: list[str] = field(default_factory=list)
    timeline: list[Event] = field(default_factory=list)

    @property
    def escalated(self) -> bool:
        return bool(self.escalations)


@dataclass
class PendingApproval:
    approval_id: str
    incident_id: str
    command_id: str
    summary: str
    requested_at: datetime
    expires_at: datetime


class IncidentProjection:
    """Incidents with their timelines; feed it events in log order."""

    def __init__(self, keep_timeline: bool = False) -> None:
        self.incidents: dict[str, IncidentView] = {}
        self.approvals: dict[str, PendingApproval] = {}
        self._keep_timeline = keep_timeline
        self._command_incident: dict[str, str] = {}

    def feed_all(self, events: Iterable[Event]) -> IncidentProjection:
        for event in events:
            self.feed(event)
        return self

    def feed(self, event: Event) -> None:
        data = event.data
        if event.type == "IncidentOpened":
            self.incidents[data["incident_id"]] = IncidentView(
                incident_id=data["incident_id"],
                title=data["title"],
                service=data.get("service"),
                opened_at=event.ts,
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
        if self._keep_timeline:
            view.timeline.append(event)
        if event.type == "IncidentUpdated":
            if data["change"] == "signal_added":
                view.signals += 1
            elif data["change"] == "flapping":
                view.flapping = True
        elif event.type == "IncidentResolved":
            view.status, view.resolved_at, view.resolution = "resolved", event.ts, data["reason"]
            for approval_id in view.awaiting_approval:  # moot: the core forgets them too
                self.approvals.pop(approval_id, None)
            view.awaiting_approval.clear()
        elif event.type == "Escalated":
            view.escalations.append(data["reason"])
        elif event.type == "ActionStarted":
            view.actions.append(f"{data['action']} {data['target']}")
        elif event.type == "PolicyEvaluated" and data["verdict"] == "deny":
            view.denied.append(data["reason"])
        elif event.type == "ApprovalRequested":
            view.awaiting_approval.append(data["approval_id"])
            self.approvals[data["approval_id"]] = PendingApproval(
                approval_id=data["approval_id"],
                incident_id=view.incident_id,
                command_id=data["command_id"],
                summary=data.get("summary", ""),
                requested_at=event.ts,
                expires_at=datetime.fromisoformat(data["expires_at"]),
            )
        elif (
            event.type in ("ApprovalGranted", "ApprovalDenied", "ApprovalExpired")
            and data["approval_id"] in view.awaiting_approval
        ):
            view.awaiting_approval.remove(data["approval_id"])
            self.approvals.pop(data["approval_id"], None)

    def ordered(self) -> list[IncidentView]:
        return sorted(self.incidents.values(), key=lambda view: view.opened_at)


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
