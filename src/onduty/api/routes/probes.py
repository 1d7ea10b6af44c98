"""The probes: `/healthz` (the process answers), `/readyz` (the core is running) and
`/metrics` (Prometheus' text format; with access control on, for viewers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from onduty.api.routes.common import READ
from onduty.service import Service


def probes_router(service: Service) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @router.get("/readyz")
    def readyz() -> PlainTextResponse:
        if service.ready:
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready\n", status_code=503)

    @router.get("/metrics", dependencies=READ)
    def metrics(request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
