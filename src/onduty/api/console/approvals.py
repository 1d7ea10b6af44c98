"""The console's approval inbox, `/approvals`: each pending request with what an approver needs
to decide (the action, its runbook and rationale, what each guardrail said)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter
from starlette.requests import Request

from onduty.api.auth import Principal
from onduty.api.console.pages import LISTING, Context, Pages
from onduty.api.console.timeline import entry
from onduty.log import EventLog
from onduty.readmodel import IncidentView, PendingApproval
from onduty.service import Service


@dataclass
class Inbox:
    """A pending approval with what an approver needs to decide."""

    id: str
    incident_id: str
    incident_title: str
    service: str
    summary: str
    requested_at: datetime
    expires_at: datetime
    required: int
    granted_by: list[str]
    status: str
    """One sentence: "1 of 2: approved by alice, waiting for another approver"."""
    yours: bool
    """The signed-in person has already approved it: no buttons for them."""
    action: str
    target: str
    runbook: str
    rationale: str
    rules: list[dict[str, str]]


def inbox(
    views: dict[str, IncidentView],
    pending: Iterable[PendingApproval],
    who: Principal | None,
    log: EventLog | None,
) -> list[Inbox]:
    """The requests with what an approver needs; who has approved comes from the read model,
    which counts approvals exactly as the core does."""
    items = []
    for item in pending:
        view = views.get(item.incident_id)
        action = target = runbook = rationale = ""
        rules: list[dict[str, str]] = []
        for event in view.decisions.events(log) if view else []:
            data = event.data
            if event.type == "ActionProposed" and data.get("command_id") == item.command_id:
                action, target = str(data.get("action", "")), str(data.get("target", ""))
                runbook, rationale = str(data.get("runbook", "")), str(data.get("rationale", ""))
            elif event.type == "PolicyEvaluated" and data.get("command_id") == item.command_id:
                rules = entry(event).rules
        items.append(
            Inbox(
                id=item.approval_id,
                incident_id=item.incident_id,
                incident_title=view.title if view else "",
                service=(view.service or "") if view else "",
                summary=item.summary,
                requested_at=item.requested_at,
                expires_at=item.expires_at,
                required=item.required,
                granted_by=list(item.approved_by),
                status=item.status,
                yours=who is not None and item.has_approved(who.name),
                action=action,
                target=target,
                runbook=runbook,
                rationale=rationale,
                rules=rules,
            )
        )
    return sorted(items, key=lambda entry: entry.expires_at)


def approvals_router(service: Service, pages: Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def approvals(request: Request, who: Principal) -> Context:
        with service.read.lock:
            incidents = service.read.incidents
            return {
                "inbox": inbox(incidents.incidents, incidents.approvals.values(), who, service.log)
            }

    pages.route(router, "/approvals", LISTING, "_approvals.html", "Approvals", approvals)
    return router
