"""`/api/v1/drill` (only with `onduty serve --sim`): a drill's status and, once ended, its
scorecard; `POST /api/v1/drill/fix` applies a person's fix to the simulated fleet
(`{"action": "process.restart", "target": "search-2"}`), `POST /api/v1/drill/end` ends the
drill and scores it. Approving and acknowledging go through the usual routes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from onduty.api.auth import OPERATOR, VIEWER
from onduty.api.ingest import JSONBody, error
from onduty.api.routes.common import API, READ, Operator
from onduty.sim.live import LiveSimulation, Refused

# Who may do what in a drill (the drill's routes exist only when serving a simulation, so they
# are not in `onduty.api.app.ROUTE_ROLES`): reading is a viewer's, changing the fleet or
# ending the drill an operator's, like acknowledging an incident.
DRILL_ROLES: dict[tuple[str, str], str] = {
    ("GET", f"{API}/drill"): VIEWER,
    ("POST", f"{API}/drill/fix"): OPERATOR,
    ("POST", f"{API}/drill/end"): OPERATOR,
}


class FixRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=200)
    target: str = Field(min_length=1, max_length=200)


def _parse_fix(body: bytes) -> FixRequest | Response:
    """The fix asked for, or a 422 naming the field that is wrong."""
    try:
        document: Any = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        return error(422, 'the body is not JSON: send {"action": ..., "target": ...}')
    if not isinstance(document, dict):
        return error(422, 'the body must be an object: {"action": ..., "target": ...}')
    try:
        return FixRequest.model_validate(document)
    except ValidationError as problem:
        first = problem.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        return error(422, f"{where}: {first['msg']}" if where else first["msg"], where)


def refusal(refused: Refused) -> Response:
    return error(refused.status, refused.reason, refused.field)


def drill_router(drill: LiveSimulation) -> APIRouter:
    router = APIRouter()

    @router.get(f"{API}/drill", dependencies=READ)
    def status() -> Response:
        """The drill: its clock, the fleet's health, the fixes made, and once it has ended
        the scorecard with each person's response times."""
        return JSONBody(drill.status())

    @router.post(f"{API}/drill/fix")
    async def fix(request: Request, principal: Operator) -> Response:
        """Apply a fix to the simulated fleet as the caller: restart an instance, roll a
        service back, ... (`GET /api/v1/drill` lists the actions and the fleet)."""
        asked = _parse_fix(await request.body())
        if isinstance(asked, Response):
            return asked
        made = drill.fix(principal.name, asked.action, asked.target)
        if isinstance(made, Refused):
            return refusal(made)
        return JSONBody(made.to_dict())

    @router.post(f"{API}/drill/end")
    def end(principal: Operator) -> Response:
        """End the drill now and score it (ending an ended drill changes nothing)."""
        drill.end(principal.name)
        return JSONBody(drill.status())

    return router
