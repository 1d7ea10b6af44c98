"""The probes: `/healthz` (the process answers), `/readyz` (the log takes appends, the bus is
connected, a policy is active, the core keeps up: `onduty.health`) and `/metrics` (Prometheus'
text format; with access control on, for viewers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from onduty.api.routes.common import READ
from onduty.health import is_ready, report
from onduty.service import Service


def readiness(service: Service, request: Request) -> Response:
    """200 when every check passes, else 503; a line per check (or JSON when asked for)."""
    results = service.health.check_all()
    ready = is_ready(results)
    status = 200 if ready else 503
    if "application/json" in request.headers.get("accept", ""):
        body = {"ready": ready, "checks": [result.as_json() for result in results]}
        return JSONResponse(body, status_code=status)
    return PlainTextResponse(report(results), status_code=status)


def probes_router(service: Service) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    service.health  # noqa: B018 (its gauges exist from the first scrape)

    @router.get("/healthz")
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @router.get("/readyz")
    def readyz(request: Request) -> Response:
        return readiness(service, request)

    @router.get("/metrics", dependencies=READ)
    def metrics(request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
