"""The console's `/fleet` (in a fleet): which manager holds each partition, for how much longer,
and which managers are alive; a manager that died shows its partitions expiring and then held
by the others. `GET /api/v1/fleet` answers the same as JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from onduty.api.auth import Principal
from onduty.api.console.pages import LISTING, Context, Pages
from onduty.api.ingest import JSONBody, error
from onduty.api.routes.common import API, READ
from onduty.service import Service


def fleet_document(service: Service) -> dict[str, Any] | None:
    """The fleet's status as JSON, or None when onduty runs as one process. Raises when the
    store cannot be reached."""
    status = service.fleet_status()
    if status is None:
        return None
    return {
        "partitions": status.partitions,
        "unowned": status.unowned(),
        "leases": [asdict(lease) for lease in status.leases],
        "members": [
            {**asdict(member), "holds": status.held_by(member.owner)} for member in status.members
        ],
    }


def fleet_context(service: Service) -> Context:
    try:
        document = fleet_document(service)
    except Exception as problem:  # the store away: say so on the page
        return {"fleet": None, "problem": f"the store cannot be read: {problem}"}
    return {"fleet": document, "problem": None}


def fleet_router(service: Service, pages: Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def fleet(request: Request, who: Principal) -> Context:
        return fleet_context(service)

    pages.route(router, "/fleet", LISTING, "_fleet.html", "Fleet", fleet)

    @router.get(f"{API}/fleet", dependencies=READ)
    def fleet_json() -> Response:
        try:
            document = fleet_document(service)
        except Exception as problem:
            return error(503, f"the store cannot be read: {problem}", **{"Retry-After": "1"})
        if document is None:
            return error(404, "onduty runs as one process here: there is no fleet")
        return JSONBody(document)

    return router
