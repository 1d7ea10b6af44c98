"""`/api/v1/kill-switches`: stop automation at once for one actuator, runbook or service, list
the active switches, lift one. A switch is an input event with its actor, so the verdicts it
causes replay the same.

In a fleet a switch goes to the fleet-wide record, and the answer waits until every partition's
log holds it (`FleetService.change_kill_switch`): from the answer on, no partition allows an
action under it, whichever node runs the partition now or later."""

from __future__ import annotations

from typing import Any, get_args

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from onduty.api.auth import LOCAL
from onduty.api.ingest import Ingest, JSONBody, error
from onduty.api.routes.common import API, READ, Operator, record
from onduty.cells.kill_switch_watch import STREAM
from onduty.events import KillSwitchCleared, KillSwitchKind, KillSwitchSet
from onduty.log.pg import DatabaseUnavailable
from onduty.runtime import Input
from onduty.service import Service

KINDS: tuple[str, ...] = get_args(KillSwitchKind)
NAME = r"^[^/\s]([^/]*[^/\s])?$"
"""A name: not empty, no slash (it is a path segment), no space at either end."""


class NewKillSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: KillSwitchKind
    name: str = Field(min_length=1, max_length=200, pattern=NAME)
    reason: str = Field(default="", max_length=2000)
    # Who sets it, when access control is off; with it on, the token's name.
    set_by: str = Field(default="api", min_length=1, max_length=200)


UNREACHABLE = "the fleet's kill-switch record cannot be reached; retry"


def kill_switches_router(service: Service, ingest: Ingest) -> APIRouter:
    router = APIRouter()

    @router.post(f"{API}/kill-switches")
    async def set_kill_switch(body: NewKillSwitch, principal: Operator) -> Response:
        actor = body.set_by if principal is LOCAL else principal.name
        if service.is_fleet:
            return await _in_fleet(
                service, body.kind, body.name, active=True, reason=body.reason, actor=actor
            )
        switch = KillSwitchSet(kind=body.kind, name=body.name, reason=body.reason)
        return await record(
            ingest,
            [Input(switch, stream=STREAM, actor=actor)],
            {"kind": body.kind, "name": body.name, "reason": body.reason, "set_by": actor},
        )

    @router.get(f"{API}/kill-switches", dependencies=READ)
    def kill_switches() -> Any:
        try:
            return service.kill_switches(fresh=True)
        except DatabaseUnavailable:
            return error(503, UNREACHABLE, None, **{"Retry-After": "1"})

    @router.delete(f"{API}/kill-switches/{{kind}}/{{name}}")
    async def clear_kill_switch(kind: str, name: str, principal: Operator) -> Response:
        if kind not in KINDS:
            return error(422, f"kind must be one of {', '.join(KINDS)}, not {kind!r}", "kind")
        if service.is_fleet:
            return await _in_fleet(
                service, kind, name, active=False, reason="", actor=principal.name
            )
        with service.read.lock:
            active = f"{kind}/{name}" in service.read.kill_switches.active
        if not active:
            return error(404, f"no active kill switch on {kind} {name}", "name")
        cleared = KillSwitchCleared(kind=kind, name=name)
        return await record(
            ingest,
            [Input(cleared, stream=STREAM, actor=principal.name)],
            {"kind": kind, "name": name, "cleared": True},
        )

    return router


async def _in_fleet(
    service: Service, kind: str, name: str, *, active: bool, reason: str, actor: str
) -> Response:
    """Set or clear a switch in the fleet's record and answer once every partition holds it."""
    try:
        status, reply = await run_in_threadpool(
            service.change_kill_switch, kind, name, active=active, reason=reason, actor=actor
        )
    except DatabaseUnavailable:
        return error(503, UNREACHABLE, None, **{"Retry-After": "1"})
    return JSONBody(reply, status_code=status)
