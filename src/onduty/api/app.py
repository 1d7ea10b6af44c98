"""The HTTP API: ingest under /api/v1/signals, read models, approvals, audit, and the probes.

`build_app` composes the middleware, the ingest routes and one router per resource
(`onduty.api.routes`). With access control on (tokens in the configuration's `access` section),
every route but the probes needs a credential and each checks its role; the table is
`ROUTE_ROLES`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from onduty.api import alertsv2
from onduty.api.auth import ADMIN, APPROVER, OPERATOR, VIEWER, AccessGuard, AuthProblem
from onduty.api.front import FrontDoor, HostNames
from onduty.api.ingest import Format, Ingest, JSONBody
from onduty.api.routes.approvals import approvals_router
from onduty.api.routes.common import API
from onduty.api.routes.events import events_router
from onduty.api.routes.incidents import incidents_router
from onduty.api.routes.killswitches import kill_switches_router
from onduty.api.routes.learning import learning_router
from onduty.api.routes.policy import policy_router
from onduty.api.routes.probes import probes_router
from onduty.api.routes.safemode import safe_mode_router
from onduty.api.routes.silences import silences_router
from onduty.events import SignalReceived
from onduty.runtime import Input
from onduty.sense import FORMATS
from onduty.service import Service, logger

if TYPE_CHECKING:
    from onduty.sim.live import LiveSimulation

__all__ = ["API", "INGEST_ALIASES", "INGEST_ROUTES", "ROUTE_ROLES", "build_app", "poll"]

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
    ("GET", f"{API}/incidents/{{incident_id}}/trace"): VIEWER,
    ("GET", f"{API}/incidents/{{incident_id}}/similar"): VIEWER,
    ("GET", f"{API}/approvals"): VIEWER,
    ("GET", f"{API}/silences"): VIEWER,
    ("GET", f"{API}/kill-switches"): VIEWER,
    ("GET", f"{API}/safe-mode"): VIEWER,
    ("GET", f"{API}/policy"): VIEWER,
    ("GET", f"{API}/learn"): VIEWER,
    ("GET", f"{API}/events"): VIEWER,
    ("GET", f"{API}/audit/verify"): VIEWER,
    ("GET", "/metrics"): VIEWER,
    ("POST", f"{API}/incidents/{{incident_id}}/acknowledge"): OPERATOR,
    ("POST", f"{API}/silences"): OPERATOR,
    ("DELETE", f"{API}/silences/{{silence_id}}"): OPERATOR,
    ("POST", f"{API}/kill-switches"): OPERATOR,
    ("DELETE", f"{API}/kill-switches/{{kind}}/{{name}}"): OPERATOR,
    ("POST", f"{API}/approvals/{{approval_id}}/approve"): APPROVER,
    ("POST", f"{API}/approvals/{{approval_id}}/deny"): APPROVER,
    ("PUT", f"{API}/services/{{name}}/autonomy"): ADMIN,
    ("GET", f"{API}/autonomy/requests"): VIEWER,
    ("POST", f"{API}/autonomy/requests/{{request_id}}/confirm"): ADMIN,
    ("POST", f"{API}/policy/reload"): ADMIN,
    ("POST", f"{API}/policy/candidate"): ADMIN,
    ("POST", f"{API}/policy/promote"): ADMIN,
    ("POST", f"{API}/policy/rollback"): ADMIN,
    ("POST", f"{API}/learn/candidate"): ADMIN,
    ("POST", f"{API}/learn/activate"): ADMIN,
    ("POST", f"{API}/learn/promote"): ADMIN,
    ("POST", f"{API}/learn/rollback"): ADMIN,
}


def build_app(
    service: Service,
    *,
    console: bool = True,
    hosts: HostNames | None = None,
    drill: LiveSimulation | None = None,
) -> FastAPI:
    """The API (and, unless `console=False`, the web console) over a service. `hosts`: the
    names it answers to (default: the loopback names, IP addresses and the configuration's
    `server.allowed_hosts`). `drill`: the simulation served (`onduty serve --sim`), whose
    drill routes (`onduty.api.routes.drill`) exist only then."""

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
        service.gateway,
        service.metrics,
        max_body=service.max_body,
        access=access,
        max_unauthenticated=server.max_unauthenticated,
        tracing=service.tracing,
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

    for router in (
        incidents_router(service),
        approvals_router(service, ingest),
        silences_router(service, ingest),
        kill_switches_router(service, ingest),
        safe_mode_router(service),
        policy_router(service),
        learning_router(service),
        events_router(service),
        probes_router(service),
    ):
        # The routes themselves, not the router: FastAPI keeps an included router nested, and
        # the access audit (every route against ROUTE_ROLES) reads the app's own routes.
        app.router.routes.extend(router.routes)
    if drill is not None:
        from onduty.api.routes.drill import drill_router

        app.router.routes.extend(drill_router(drill).routes)
    if console:
        from onduty.api.console import console_router

        app.include_router(console_router(service, drill=drill))
    return app


async def poll(service: Service, ingest: Ingest, stop: asyncio.Event) -> None:
    """Run the configured pollers until `stop`; their signals go through the same durable path
    as pushed ones."""
    if not service.config.sources:
        return
    import httpx

    from onduty.sense.pollers import build_source, parse_sources, run_pollers

    def failed(name: str, problem: Exception) -> None:
        logger.warning("source %s: %s", name, problem, extra={"source": name})

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
