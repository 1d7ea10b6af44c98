"""The HTTP API: ingest under /api/v1/signals, read models, approvals, audit, and the probes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from onduty.api.ingest import Format, Ingest, JSONBody, error
from onduty.events import ApprovalDenied, ApprovalGranted, Event, Payload
from onduty.readmodel import IncidentView
from onduty.runtime import Input
from onduty.sense import FORMATS
from onduty.service import Service

API = "/api/v1"
JSON = ("application/json",)
INGEST_ROUTES = {
    "alertmanager": ("/signals/alertmanager", JSON),
    "pagerduty": ("/signals/pagerduty", JSON),
    "cloudevents": (
        "/signals/cloudevents",
        ("application/cloudevents+json", "application/cloudevents-batch+json", *JSON),
    ),
    "native": ("/signals", JSON),
}


class Answer(BaseModel):
    comment: str = Field(default="", max_length=2000)


def _event_json(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json")


def _incident_json(view: IncidentView, timeline: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": view.incident_id,
        "title": view.title,
        "service": view.service,
        "status": view.status,
        "opened_at": view.opened_at.isoformat(),
        "resolved_at": view.resolved_at.isoformat() if view.resolved_at else None,
        "resolution": view.resolution,
        "signals": view.signals,
        "flapping": view.flapping,
        "escalations": view.escalations,
        "actions": view.actions,
        "denied": view.denied,
        "awaiting_approval": view.awaiting_approval,
    }
    if timeline:
        body["timeline"] = [_event_json(event) for event in view.timeline]
    return body


def build_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            # uvicorn stops accepting and lets in-flight requests finish before this runs
            await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="onduty",
        summary="An autonomous manager-on-duty: every fact a hash-chained event.",
        lifespan=lifespan,
        docs_url=f"{API}/docs",
        openapi_url=f"{API}/openapi.json",
    )
    ingest = Ingest(lambda: service.loop, service.metrics, max_body=service.max_body)
    for name, (path, content_types) in INGEST_ROUTES.items():
        fmt = Format(name, FORMATS[name], content_types)
        app.add_route(API + path, ingest.endpoint(fmt), methods=["POST"], name=f"ingest-{name}")

    @app.get(f"{API}/incidents")
    def incidents(
        status: Annotated[str, Query(pattern="^(open|resolved|all)$")] = "all",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        with service.read.lock:
            views = service.read.incidents.ordered()
            chosen = [v for v in views if status in ("all", v.status)][-limit:]
            return [_incident_json(view) for view in reversed(chosen)]

    @app.get(f"{API}/incidents/{{incident_id}}")
    def incident(incident_id: str) -> dict[str, Any]:
        with service.read.lock:
            view = service.read.incidents.incidents.get(incident_id)
            if view is None:
                raise HTTPException(404, f"no incident {incident_id}")
            return _incident_json(view, timeline=True)

    @app.get(f"{API}/approvals")
    def approvals() -> list[dict[str, Any]]:
        with service.read.lock:
            pending = list(service.read.incidents.approvals.values())
        return [
            {
                "id": item.approval_id,
                "incident_id": item.incident_id,
                "command_id": item.command_id,
                "summary": item.summary,
                "requested_at": item.requested_at.isoformat(),
                "expires_at": item.expires_at.isoformat(),
            }
            for item in pending
        ]

    async def answer(approval_id: str, body: Payload) -> Response:
        with service.read.lock:
            known = approval_id in service.read.incidents.approvals
        if not known:
            return error(404, f"no pending approval {approval_id}", "approval_id")
        # Until access control arrives, the actor is the API itself.
        outcome = await ingest.durable([Input(body, stream="approvals", actor="api")])
        return outcome or JSONBody({"approval_id": approval_id, "recorded": True}, status_code=202)

    @app.post(f"{API}/approvals/{{approval_id}}/approve")
    async def approve(approval_id: str, body: Answer | None = None) -> Response:
        comment = body.comment if body else ""
        return await answer(approval_id, ApprovalGranted(approval_id=approval_id, comment=comment))

    @app.post(f"{API}/approvals/{{approval_id}}/deny")
    async def deny(approval_id: str, body: Answer | None = None) -> Response:
        comment = body.comment if body else ""
        return await answer(approval_id, ApprovalDenied(approval_id=approval_id, comment=comment))

    @app.get(f"{API}/events")
    def events(
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
        type: Annotated[str | None, Query()] = None,
    ) -> Response:
        log = service.log
        if log is None:
            return error(503, "not ready", **{"Retry-After": "1"})
        found: list[dict[str, Any]] = []
        for event in log.read(after=after):
            if type is None or event.type == type:
                found.append(_event_json(event))
                if len(found) >= limit:
                    break
        return JSONBody(found)

    @app.get(f"{API}/audit/verify")
    async def audit_verify() -> dict[str, Any]:
        log = service.log
        if log is None:
            raise HTTPException(503, "not ready")
        broken = await asyncio.to_thread(log.verify)
        head = log.head()[0]
        if broken is None:
            return {"intact": True, "events": head}
        return {
            "intact": False,
            "events": head,
            "first_bad_seq": broken.seq,
            "reason": broken.reason,
        }

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> PlainTextResponse:
        if service.ready:
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready\n", status_code=503)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
