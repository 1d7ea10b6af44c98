"""The HTTP API: ingest under /api/v1/signals, read models, approvals, audit, and the probes.

With access control on (tokens in the configuration's `access` section), every route but the
probes needs a credential and each checks its role; the table is `ROUTE_ROLES`."""

from __future__ import annotations

import asyncio
import heapq
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response

from onduty.api import alertsv2
from onduty.api.auth import (
    ADMIN,
    APPROVER,
    LOCAL,
    OPERATOR,
    VIEWER,
    AccessGuard,
    AuthProblem,
    Principal,
    requires,
)
from onduty.api.front import FrontDoor, HostNames
from onduty.api.ingest import Format, Ingest, JSONBody, error
from onduty.approvals import (
    AnswerDesk,
    AutonomyDesk,
    AutonomyOutcome,
    Refusal,
    Verdict,
    approval_json,
)
from onduty.config import Config, ConfigError, Duration, parse_config
from onduty.correlate.matchers import MatcherList
from onduty.events import (
    Acknowledged,
    Event,
    SignalReceived,
    SilenceCreated,
    SilenceExpired,
)
from onduty.expressions import Condition, ExpressionError
from onduty.readmodel import (
    SIGNAL_PAGE,
    SIGNAL_PAGE_MAX,
    IncidentView,
    SignalCursor,
    SignalPage,
    signal_page,
)
from onduty.runtime import Input
from onduty.sense import FORMATS
from onduty.service import Service, logger

API = "/api/v1"
JSON = ("application/json",)
INGEST_ROUTES = {
    "alertmanager": ("/signals/alertmanager", JSON),
    "grafana": ("/signals/grafana", JSON),  # Grafana Alerting's webhook contact point
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


def _pagerduty_routing_key(body: bytes) -> str | None:
    """PagerDuty clients carry their secret as the event's `routing_key`: with access control
    on, it may be the source's ingest token."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    key = event.get("routing_key") if isinstance(event, dict) else None
    return key if isinstance(key, str) else None


ACKNOWLEDGE = {"pagerduty": _pagerduty_acknowledgement}
CREDENTIAL = {"pagerduty": _pagerduty_routing_key}
# CloudEvents' binary mode carries the event's attributes as `ce-*` headers.
HEADER_PREFIX = {"cloudevents": "ce-"}
# Full paths a route also answers on, with the same parsing and credentials. PagerDuty's
# clients append `/v2/enqueue` to the base URL they are given (https only): so both
# `https://HOST` and `https://HOST/api/v1/signals/pagerduty` work as that base URL.
INGEST_ALIASES: dict[str, tuple[str, ...]] = {
    "pagerduty": ("/v2/enqueue", f"{API}/signals/pagerduty/v2/enqueue"),
}

# Who may do what, with access control on. Every route is listed; the ingest routes check their
# own credentials (a per-source token or an HMAC signature), the probes are public.
ROUTE_ROLES: dict[tuple[str, str], str] = {
    ("GET", f"{API}/incidents"): VIEWER,
    ("GET", f"{API}/incidents/{{incident_id}}"): VIEWER,
    ("GET", f"{API}/incidents/{{incident_id}}/signals"): VIEWER,
    ("GET", f"{API}/approvals"): VIEWER,
    ("GET", f"{API}/silences"): VIEWER,
    ("GET", f"{API}/policy"): VIEWER,
    ("GET", f"{API}/events"): VIEWER,
    ("GET", f"{API}/audit/verify"): VIEWER,
    ("GET", "/metrics"): VIEWER,
    ("POST", f"{API}/incidents/{{incident_id}}/acknowledge"): OPERATOR,
    ("POST", f"{API}/silences"): OPERATOR,
    ("DELETE", f"{API}/silences/{{silence_id}}"): OPERATOR,
    ("POST", f"{API}/approvals/{{approval_id}}/approve"): APPROVER,
    ("POST", f"{API}/approvals/{{approval_id}}/deny"): APPROVER,
    ("PUT", f"{API}/services/{{name}}/autonomy"): ADMIN,
    ("GET", f"{API}/autonomy/requests"): VIEWER,
    ("POST", f"{API}/autonomy/requests/{{request_id}}/confirm"): ADMIN,
    ("POST", f"{API}/policy/reload"): ADMIN,
    ("POST", f"{API}/policy/candidate"): ADMIN,
    ("POST", f"{API}/policy/promote"): ADMIN,
    ("POST", f"{API}/policy/rollback"): ADMIN,
}

Operator = Annotated[Principal, Depends(requires(OPERATOR))]
Approver = Annotated[Principal, Depends(requires(APPROVER))]
Admin = Annotated[Principal, Depends(requires(ADMIN))]
READ = [Depends(requires(VIEWER))]


class Answer(BaseModel):
    comment: str = Field(default="", max_length=2000)


class NewAutonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["observe", "suggest", "approve", "act"]


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
    # Who creates it, when access control is off; with it on, the token's name.
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


def _signals_url(incident_id: str, limit: int, **cursor: int) -> str:
    query = "&".join(f"{key}={value}" for key, value in cursor.items())
    return f"{API}/incidents/{quote(incident_id, safe='')}/signals?{query}&limit={limit}"


def _signal_links(
    incident_id: str, page: SignalPage, last_seq: int, limit: int
) -> dict[str, str | None]:
    """Where the pages either side of `page` are (None at either end), and the latest one."""
    events = page.events
    return {
        "next": _signals_url(incident_id, limit, after=events[-1].seq)
        if page.later and events
        else None,
        "previous": _signals_url(incident_id, limit, before=events[0].seq)
        if page.earlier and events
        else None,
        "latest": _signals_url(incident_id, limit, before=last_seq + 1) if page.total else None,
    }


def _incident_json(
    view: IncidentView, timeline: bool = False, signals: SignalPage | None = None
) -> dict[str, Any]:
    """An incident. With `timeline`: its decisions (all but the middle of a very long
    incident's) and `signals`, the first page of its signal events, in log order, with where to
    read the rest; the answer's size is bounded however many signals the incident has."""
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
        "escalations": list(view.escalations),
        "actions": list(view.actions),
        "denied": list(view.denied),
        "awaiting_approval": view.awaiting_approval,
    }
    if timeline:
        page = signals.events if signals is not None else []
        merged = heapq.merge(view.decisions.events(), page, key=lambda event: event.seq)
        body["timeline"] = [_event_json(event) for event in merged]
        body["timeline_omitted"] = {
            "decisions": view.decisions.omitted,
            "signals": view.signal_events.total - len(page),
        }
        if signals is not None:
            links = _signal_links(
                view.incident_id, signals, view.signal_events.last_seq, SIGNAL_PAGE
            )
            body["signal_events"] = {"total": signals.total, "limit": SIGNAL_PAGE, **links}
    return body


def build_app(service: Service, *, console: bool = True, hosts: HostNames | None = None) -> FastAPI:
    """The API (and, unless `console=False`, the web console) over a service. `hosts`: the
    names it answers to (default: the loopback names, IP addresses and the configuration's
    `server.allowed_hosts`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.prepare()
        expiring.seed(service)  # before the core runs: the alerts of /api/v2/alerts it holds
        service.start()
        stop_polling = asyncio.Event()
        polling = asyncio.create_task(poll(service, ingest, stop_polling))
        expiry = asyncio.create_task(expiring.run(ingest, stop_polling))
        try:
            yield
        finally:
            # uvicorn stops accepting and lets in-flight requests finish before this runs
            stop_polling.set()
            await polling
            await expiry
            await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="onduty",
        summary="An autonomous manager-on-duty: every fact a hash-chained event.",
        lifespan=lifespan,
        # No documentation pages (they load scripts from a CDN); the OpenAPI document is under
        # the API, so with access control on only a token holder reads it.
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{API}/openapi.json",
    )
    access = service.access
    app.state.access = access
    ingest_paths = frozenset(API + path for path, _ in INGEST_ROUTES.values()) | frozenset(
        path for paths in INGEST_ALIASES.values() for path in paths
    )

    def guarded(path: str) -> bool:
        """The API (its documents too) and the metrics need a user token before any route
        runs; the ingest routes check their own credentials, the probes are public."""
        return (path.startswith(API + "/") or path == "/metrics") and path not in ingest_paths

    app.add_middleware(AccessGuard, access=access, guarded=guarded)
    server = service.config.server
    # outside the access guard: a wrong host or a cross-site write is refused before anything
    app.add_middleware(
        FrontDoor,
        hosts=hosts or HostNames(server.allowed_hosts),
        json_paths=lambda path: path.startswith(API + "/") and path not in ingest_paths,
        body_timeout=server.body_timeout.total_seconds(),
    )

    @app.exception_handler(AuthProblem)
    async def refused(request: Request, problem: AuthProblem) -> Response:
        return JSONBody(
            {"error": problem.reason, "field": None},
            status_code=problem.status_code,
            headers=problem.headers,
        )

    ingest = Ingest(
        lambda: service.loop,
        service.metrics,
        max_body=service.max_body,
        access=access,
        max_unauthenticated=server.max_unauthenticated,
    )
    for name, (path, content_types) in INGEST_ROUTES.items():
        fmt = Format(
            name,
            FORMATS[name],
            content_types,
            ACKNOWLEDGE.get(name),
            CREDENTIAL.get(name),
            HEADER_PREFIX.get(name),
        )
        app.add_route(API + path, ingest.endpoint(fmt), methods=["POST"], name=f"ingest-{name}")
        for number, alias in enumerate(INGEST_ALIASES.get(name, ()), 1):
            app.add_route(
                alias, ingest.endpoint(fmt), methods=["POST"], name=f"ingest-{name}-{number}"
            )
    # Alertmanager's own API, for Prometheus delivering straight to onduty
    expiring = alertsv2.ExpiryWatch()
    alertsv2.mount(app, service, ingest, expiring)

    @app.get(f"{API}/incidents", dependencies=READ)
    def incidents(
        status: Annotated[str, Query(pattern="^(open|resolved|all)$")] = "all",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        with service.read.lock:
            views = service.read.incidents.ordered()
            chosen = [v for v in views if status in ("all", v.status)][-limit:]
            return [_incident_json(view) for view in reversed(chosen)]

    def signals_of(
        incident_id: str, after: int = 0, before: int | None = None, limit: int = SIGNAL_PAGE
    ) -> tuple[SignalCursor, SignalPage] | Response:
        """A page of an incident's signal events: read from the log without holding the read
        models' lock (the core thread takes it for every event)."""
        with service.read.lock:
            view = service.read.incidents.incidents.get(incident_id)
            cursor = SignalCursor.of(view) if view is not None else None
        if cursor is None:
            return error(404, f"no incident {incident_id}", "incident_id")
        try:
            page = signal_page(cursor, service.log, after=after, before=before, limit=limit)
        except RuntimeError:
            return error(503, "not ready", **{"Retry-After": "1"})
        return cursor, page

    @app.get(f"{API}/incidents/{{incident_id}}", dependencies=READ)
    def incident(incident_id: str) -> Response:
        """The incident, its decisions and the first page of its signal events (the rest:
        `signal_events.next`)."""
        found = signals_of(incident_id)
        if isinstance(found, Response):
            return found
        with service.read.lock:
            view = service.read.incidents.incidents.get(incident_id)
            if view is None:
                return error(404, f"no incident {incident_id}", "incident_id")
            return JSONBody(_incident_json(view, timeline=True, signals=found[1]))

    @app.get(f"{API}/incidents/{{incident_id}}/signals", dependencies=READ)
    def incident_signals(
        incident_id: str,
        after: Annotated[int, Query(ge=0)] = 0,
        before: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=SIGNAL_PAGE_MAX)] = SIGNAL_PAGE,
    ) -> Response:
        """An incident's signal events (its `signal_*` notes) a page at a time, in log order:
        the first `limit` with seq > `after`, or with `before`, the last `limit` before it.
        `next` and `previous` are the pages either side; following `next` from the first page
        visits every signal event once."""
        found = signals_of(incident_id, after, before, limit)
        if isinstance(found, Response):
            return found
        cursor, page = found
        return JSONBody(
            {
                "incident_id": incident_id,
                "total": page.total,
                "events": [_event_json(event) for event in page.events],
                **_signal_links(incident_id, page, cursor.last_seq, limit),
            }
        )

    def approval_roles() -> list[str]:
        """The roles the active policy lets answer approvals. With access control off the
        server only listens on loopback and its local user holds every role."""
        with service.read.lock:
            document = service.read.policy.document
        if document is not None:
            return list(document.get("policy", {}).get("approvals", {}).get("roles", []))
        return list(service.config.policy.approvals.roles)

    desk = AnswerDesk(service.read.incidents, approval_roles, service.read.lock)

    @app.get(f"{API}/approvals", dependencies=READ)
    def approvals() -> list[dict[str, Any]]:
        """The pending requests, soonest to expire first, with who has approved so far."""
        return [approval_json(item) for item in desk.pending()]

    answer_turn = asyncio.Lock()  # a double click is one answer and a 409, never two answers

    async def answer(
        approval_id: str, verdict: Verdict, principal: Principal, body: Answer | None
    ) -> Response:
        async with answer_turn:
            given = desk.answer(
                approval_id, principal.name, principal.roles, verdict, body.comment if body else ""
            )
            if isinstance(given, Refusal):
                return error(given.status, given.reason, given.field)
            outcome = await ingest.durable([given.input()])
        return outcome or JSONBody(desk.report(approval_id, principal.name), status_code=202)

    @app.post(f"{API}/approvals/{{approval_id}}/approve")
    async def approve(
        approval_id: str, principal: Approver, body: Answer | None = None
    ) -> Response:
        return await answer(approval_id, "approve", principal, body)

    @app.post(f"{API}/approvals/{{approval_id}}/deny")
    async def deny(approval_id: str, principal: Approver, body: Answer | None = None) -> Response:
        return await answer(approval_id, "deny", principal, body)

    @app.post(f"{API}/incidents/{{incident_id}}/acknowledge")
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
        acknowledged = Acknowledged(incident_id=incident_id, comment=body.comment if body else "")
        outcome = await ingest.durable(
            [Input(acknowledged, stream=incident_id, actor=principal.name)]
        )
        return outcome or JSONBody(
            {"incident_id": incident_id, "acknowledged": True}, status_code=202
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
        refused = await ingest.durable(outcome.inputs)
        return refused or JSONBody(outcome.reply, status_code=outcome.status)

    @app.put(f"{API}/services/{{name}}/autonomy")
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

    @app.get(f"{API}/autonomy/requests", dependencies=READ)
    def autonomy_requests() -> list[dict[str, Any]]:
        """Autonomy raises waiting for more admins to confirm them."""
        return raises.pending()

    @app.post(f"{API}/autonomy/requests/{{request_id}}/confirm")
    async def confirm_autonomy(request_id: str, principal: Admin) -> Response:
        async with autonomy_turn:
            return await record_autonomy(raises.confirm(request_id, principal.name))

    @app.post(f"{API}/silences")
    async def create_silence(body: NewSilence, principal: Operator) -> Response:
        starts = body.starts_at or service.clock.now()
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
        actor = body.created_by if principal is LOCAL else principal.name
        outcome = await ingest.durable([Input(created, stream="silences", actor=actor)])
        return outcome or JSONBody(
            {"id": silence_id, "starts_at": starts.isoformat(), "ends_at": ends.isoformat()},
            status_code=202,
        )

    @app.get(f"{API}/silences", dependencies=READ)
    def silences(
        state: Annotated[str, Query(pattern="^(active|pending|expired|all)$")] = "all",
    ) -> list[dict[str, Any]]:
        now = service.clock.now()
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
    async def expire_silence(silence_id: str, principal: Operator) -> Response:
        with service.read.lock:
            view = service.read.silences.silences.get(silence_id)
        if view is None or view.state(service.clock.now()) == "expired":
            return error(404, f"no active or pending silence {silence_id}", "silence_id")
        expired = SilenceExpired(silence_id=silence_id)
        outcome = await ingest.durable([Input(expired, stream="silences", actor=principal.name)])
        return outcome or JSONBody({"id": silence_id, "expired": True}, status_code=202)

    async def policy_call(call: Any, *args: Any, **kwargs: Any) -> Response:
        status, body = await asyncio.to_thread(call, *args, **kwargs)
        return JSONBody(body, status_code=status)

    @app.get(f"{API}/policy", dependencies=READ)
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
    async def policy_reload(principal: Admin) -> Response:
        return await policy_call(service.reload, actor=principal.name)

    @app.post(f"{API}/policy/candidate")
    async def policy_candidate(body: Candidate, principal: Admin) -> Response:
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
            service.activate,
            config,
            role=body.mode,
            source=body.source,
            selector=body.selector,
            actor=principal.name,
        )

    @app.post(f"{API}/policy/promote")
    async def policy_promote(principal: Admin) -> Response:
        with service.read.lock:
            document = service.read.policy.candidate_document
        if document is None:
            return error(409, "there is no candidate policy to promote")
        config = parse_config(document, "candidate")
        return await policy_call(
            service.activate, config, role="active", source="promoted", actor=principal.name
        )

    @app.post(f"{API}/policy/rollback")
    async def policy_rollback(principal: Admin) -> Response:
        """Drop the candidate; without one, go back to the previous active policy."""
        with service.read.lock:
            view = service.read.policy
            candidate, previous = view.candidate_document, view.previous
        if candidate is not None:
            withdrawn = Config()
            return await policy_call(
                service.activate,
                withdrawn,
                role="withdrawn",
                source="rollback",
                actor=principal.name,
            )
        if previous is None:
            return error(409, "there is no candidate and no previous policy to roll back to")
        config = parse_config(previous, "previous")
        return await policy_call(
            service.activate, config, role="active", source="rollback", actor=principal.name
        )

    @app.get(f"{API}/events", dependencies=READ)
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

    @app.get(f"{API}/audit/verify", dependencies=READ)
    async def audit_verify() -> dict[str, Any]:
        log = service.log
        if log is None:
            raise HTTPException(503, "not ready")
        from onduty.log import verify_snapshots

        broken = await asyncio.to_thread(log.verify)
        bad = await asyncio.to_thread(verify_snapshots, log)
        head = log.head()[0]
        snapshots = [{"seq": problem.seq, "reason": problem.reason} for problem in bad]
        if broken is None:
            return {"intact": not bad, "events": head, "bad_snapshots": snapshots}
        return {
            "intact": False,
            "events": head,
            "first_bad_seq": broken.seq,
            "reason": broken.reason,
            "bad_snapshots": snapshots,
        }

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> PlainTextResponse:
        if service.ready:
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready\n", status_code=503)

    @app.get("/metrics", include_in_schema=False, dependencies=READ)
    def metrics(request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if console:
        from onduty.api.console import console_router

        app.include_router(console_router(service))
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
