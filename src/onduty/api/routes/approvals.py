"""What people answer: approvals (approve, deny), acknowledging an incident, and changing how far
onduty may act on a service (a raise may need several admins)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from onduty.api.ingest import Ingest, JSONBody, error
from onduty.api.routes.common import (
    API,
    READ,
    Admin,
    Answer,
    Approver,
    Operator,
    comment_of,
    record,
)
from onduty.approvals import (
    AnswerDesk,
    AutonomyDesk,
    AutonomyOutcome,
    Refusal,
    Verdict,
    approval_json,
)
from onduty.events import Acknowledged
from onduty.runtime import Input
from onduty.service import Service

VERDICTS: tuple[Verdict, ...] = ("approve", "deny")


class NewAutonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["observe", "suggest", "approve", "act"]


def approvals_router(service: Service, ingest: Ingest) -> APIRouter:
    router = APIRouter()

    def approval_roles() -> list[str]:
        """The roles the active policy lets answer approvals. With access control off the
        server only listens on loopback and its local user holds every role."""
        with service.read.lock:
            document = service.read.policy.document
        if document is not None:
            return list(document.get("policy", {}).get("approvals", {}).get("roles", []))
        return list(service.config.policy.approvals.roles)

    desk = AnswerDesk(service.read.incidents, approval_roles, service.read.lock)

    @router.get(f"{API}/approvals", dependencies=READ)
    def approvals() -> list[dict[str, Any]]:
        """The pending requests, soonest to expire first, with who has approved so far."""
        return [approval_json(item) for item in desk.pending()]

    answer_turn = asyncio.Lock()  # a double click is one answer and a 409, never two answers

    def answering(verdict: Verdict) -> Callable[..., Awaitable[Response]]:
        """The route that answers an approval with `verdict`, as its caller."""

        async def answer(
            approval_id: str, principal: Approver, body: Answer | None = None
        ) -> Response:
            async with answer_turn:
                given = desk.answer(
                    approval_id, principal.name, principal.roles, verdict, comment_of(body)
                )
                if isinstance(given, Refusal):
                    return error(given.status, given.reason, given.field)
                outcome = await ingest.durable([given.input()])
            return outcome or JSONBody(desk.report(approval_id, principal.name), status_code=202)

        return answer

    for verdict in VERDICTS:
        router.add_api_route(
            f"{API}/approvals/{{approval_id}}/{verdict}",
            answering(verdict),
            methods=["POST"],
            name=verdict,
        )

    @router.post(f"{API}/incidents/{{incident_id}}/acknowledge")
    async def acknowledge(
        incident_id: str, principal: Operator, body: Answer | None = None
    ) -> Response:
        """Someone has taken the incident: escalation stops paging the next tiers."""
        with service.read.lock:
            view = service.read.incidents.incidents.get(incident_id)
            status = view.status if view is not None else None
        if status is None:
            return error(404, f"no incident {incident_id}", "incident_id")
        if status != "open":
            return error(409, f"incident {incident_id} is already {status}", "incident_id")
        acknowledged = Acknowledged(incident_id=incident_id, comment=comment_of(body))
        return await record(
            ingest,
            [Input(acknowledged, stream=incident_id, actor=principal.name)],
            {"incident_id": incident_id, "acknowledged": True},
        )

    raises = AutonomyDesk(
        service.read.raises,
        service.clock.now,
        lambda: f"raise-{uuid.uuid4().hex[:16]}",
        service.read.lock,
    )
    autonomy_turn = asyncio.Lock()  # one change at a time: a check and its record stay together

    async def record_autonomy(outcome: AutonomyOutcome | Refusal) -> Response:
        if isinstance(outcome, Refusal):
            return error(outcome.status, outcome.reason, outcome.field)
        return await record(ingest, outcome.inputs, outcome.reply, outcome.status)

    @router.put(f"{API}/services/{{name}}/autonomy")
    async def set_autonomy(name: str, body: NewAutonomy, principal: Admin) -> Response:
        """Change how far onduty may act on a service on its own, until changed again. Lowering
        takes effect at once; where actions need N approvers, a raise takes N different admins
        (this call asks, or confirms the same pending raise)."""
        async with autonomy_turn:
            with service.read.lock:
                document = service.read.policy.document or {}
                configured = {s["name"]: s.get("autonomy") for s in document.get("services", [])}
                override = service.read.autonomy.overrides.get(name)
            if name not in configured:
                return error(404, f"no service {name}", "name")
            approvals = service.config.policy.approvals
            outcome = raises.change(
                name,
                body.level,
                override or configured[name],
                principal.name,
                required=approvals.required,
                timeout=approvals.timeout,
            )
            return await record_autonomy(outcome)

    @router.get(f"{API}/autonomy/requests", dependencies=READ)
    def autonomy_requests() -> list[dict[str, Any]]:
        """Autonomy raises waiting for more admins to confirm them."""
        return raises.pending()

    @router.post(f"{API}/autonomy/requests/{{request_id}}/confirm")
    async def confirm_autonomy(request_id: str, principal: Admin) -> Response:
        async with autonomy_turn:
            return await record_autonomy(raises.confirm(request_id, principal.name))

    return router
