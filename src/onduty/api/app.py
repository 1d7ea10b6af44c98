"""The HTTP API: ingest under /api/v1/signals, read models, approvals, audit, and the probes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response

from onduty.api.ingest import Format, Ingest, JSONBody, error
from onduty.config import Config, ConfigError, Duration, parse_config
from onduty.correlate.matchers import MatcherList
from onduty.events import (
    ApprovalDenied,
    ApprovalGranted,
    Event,
    Payload,
    SignalReceived,
    SilenceCreated,
    SilenceExpired,
)
from onduty.expressions import Condition, ExpressionError
from onduty.readmodel import IncidentView
from onduty.runtime import Input
from onduty.sense import FORMATS
from onduty.service import Service, logger

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


def _pagerduty_acknowledgement(body: bytes, signals: list[Any]) -> dict[str, Any]:
    """What PagerDuty's Events API answers, so existing clients keep working."""
    dedup_key = signals[0].fingerprint.removeprefix("pd:") if signals else None
    return {"status": "success", "message": "Event processed", "dedup_key": dedup_key}


ACKNOWLEDGE = {"pagerduty": _pagerduty_acknowledgement}


class Answer(BaseModel):
    comment: str = Field(default="", max_length=2000)


class Candidate(BaseModel):
    """A candidate policy: the whole configuration document, how to run it, and where from."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any]
    mode: Literal["shadow", "canary"] = "shadow"
    selector: str | None = None
    source: str = "api"


class NewSilence(BaseModel):
    """A silence or maintenance window: `ends_at`, or a `duration` from `starts_at` (now)."""

    model_config = ConfigDict(extra="forbid")

    matchers: MatcherList
    comment: str = Field(min_length=1, max_length=2000)
    created_by: str = Field(default="api", min_length=1, max_length=200)
    kind: Literal["silence", "maintenance"] = "silence"
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    duration: Duration | None = None

    @model_validator(mode="after")
    def _one_end(self) -> NewSilence:
        if (self.ends_at is None) == (self.duration is None):
            raise ValueError("give exactly one of ends_at or duration")
        return self


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
        stop_polling = asyncio.Event()
        polling = asyncio.create_task(poll(service, ingest, stop_polling))
        try:
            yield
        finally:
            # uvicorn stops accepting and lets in-flight requests finish before this runs
            stop_polling.set()
            await polling
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
        fmt = Format(name, FORMATS[name], content_types, ACKNOWLEDGE.get(name))
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

    @app.post(f"{API}/silences")
    async def create_silence(body: NewSilence) -> Response:
        starts = body.starts_at or datetime.now(UTC)
        ends = body.ends_at or starts + (body.duration or timedelta(0))
        if ends <= starts:
            return error(422, "the silence must end after it starts", "ends_at")
        silence_id = f"sil-{uuid.uuid4().hex[:12]}"
        created = SilenceCreated(
            silence_id=silence_id,
            matchers=body.matchers.to_strings(),
            starts_at=starts,
            ends_at=ends,
            comment=body.comment,
            kind=body.kind,
        )
        outcome = await ingest.durable([Input(created, stream="silences", actor=body.created_by)])
        return outcome or JSONBody(
            {"id": silence_id, "starts_at": starts.isoformat(), "ends_at": ends.isoformat()},
            status_code=202,
        )

    @app.get(f"{API}/silences")
    def silences(
        state: Annotated[str, Query(pattern="^(active|pending|expired|all)$")] = "all",
    ) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        with service.read.lock:
            views = list(service.read.silences.silences.values())
        return [
            {
                "id": view.silence_id,
                "matchers": view.matchers,
                "starts_at": view.starts_at.isoformat(),
                "ends_at": view.ends_at.isoformat(),
                "created_by": view.created_by,
                "comment": view.comment,
                "kind": view.kind,
                "state": view.state(now),
            }
            for view in sorted(views, key=lambda v: v.starts_at)
            if state in ("all", view.state(now))
        ]

    @app.delete(f"{API}/silences/{{silence_id}}")
    async def expire_silence(silence_id: str) -> Response:
        with service.read.lock:
            view = service.read.silences.silences.get(silence_id)
        if view is None or view.state(datetime.now(UTC)) == "expired":
            return error(404, f"no active or pending silence {silence_id}", "silence_id")
        expired = SilenceExpired(silence_id=silence_id)
        outcome = await ingest.durable([Input(expired, stream="silences", actor="api")])
        return outcome or JSONBody({"id": silence_id, "expired": True}, status_code=202)

    async def policy_call(call: Any, *args: Any, **kwargs: Any) -> Response:
        status, body = await asyncio.to_thread(call, *args, **kwargs)
        return JSONBody(body, status_code=status)

    @app.get(f"{API}/policy")
    def policy() -> dict[str, Any]:
        with service.read.lock:
            view = service.read.policy
            candidate = (
                {
                    "version": view.candidate_version,
                    "mode": view.candidate_role,
                    "selector": view.candidate_selector,
                }
                if view.candidate_version
                else None
            )
            return {
                "version": view.version,
                "source": view.source,
                "candidate": candidate,
                "can_roll_back": candidate is not None or view.previous is not None,
            }

    @app.post(f"{API}/policy/reload")
    async def policy_reload() -> Response:
        return await policy_call(service.reload)

    @app.post(f"{API}/policy/candidate")
    async def policy_candidate(body: Candidate) -> Response:
        try:
            config = parse_config(body.config, body.source)
            if body.selector:
                Condition.compile(body.selector)
        except ConfigError as problem:
            return JSONBody(
                {"error": "the configuration is invalid", "problems": problem.problems}, 422
            )
        except ExpressionError as problem:
            return error(422, str(problem), "selector")
        return await policy_call(
            service.activate, config, role=body.mode, source=body.source, selector=body.selector
        )

    @app.post(f"{API}/policy/promote")
    async def policy_promote() -> Response:
        with service.read.lock:
            document = service.read.policy.candidate_document
        if document is None:
            return error(409, "there is no candidate policy to promote")
        config = parse_config(document, "candidate")
        return await policy_call(service.activate, config, role="active", source="promoted")

    @app.post(f"{API}/policy/rollback")
    async def policy_rollback() -> Response:
        """Drop the candidate; without one, go back to the previous active policy."""
        with service.read.lock:
            view = service.read.policy
            candidate, previous = view.candidate_document, view.previous
        if candidate is not None:
            withdrawn = Config()
            return await policy_call(
                service.activate, withdrawn, role="withdrawn", source="rollback"
            )
        if previous is None:
            return error(409, "there is no candidate and no previous policy to roll back to")
        config = parse_config(previous, "previous")
        return await policy_call(service.activate, config, role="active", source="rollback")

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


async def poll(service: Service, ingest: Ingest, stop: asyncio.Event) -> None:
    """Run the configured pollers until `stop`; their signals go through the same durable path
    as pushed ones."""
    if not service.config.sources:
        return
    import httpx

    from onduty.sense.pollers import build_source, parse_sources, run_pollers

    def failed(name: str, problem: Exception) -> None:
        logger.warning("source %s: %s", name, problem)

    async def submit(signal: Any) -> None:
        body = SignalReceived.model_validate(dict(signal))
        refused = await ingest.durable([Input(body, stream=f"signal:{signal.fingerprint}")])
        if refused is not None:
            logger.warning(
                "a polled signal was refused (%s); it will be re-sent", refused.status_code
            )

    async with httpx.AsyncClient() as client:
        sources = [build_source(spec, client) for spec in parse_sources(service.config.sources)]
        await run_pollers(
            sources, submit, clock=lambda: datetime.now(UTC), stop=stop, on_error=failed
        )
