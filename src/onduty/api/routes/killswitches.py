"""`/api/v1/kill-switches`: stop automation at once for one actuator, runbook or service, list
the active switches, lift one. A switch is an input event with its actor, so the verdicts it
causes replay the same."""

from __future__ import annotations

from typing import Any, Literal, get_args

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from onduty.api.auth import LOCAL
from onduty.api.ingest import Ingest, error
from onduty.api.routes.common import API, READ, Operator, record
from onduty.events import KillSwitchCleared, KillSwitchKind, KillSwitchSet
from onduty.runtime import Input
from onduty.service import Service

KINDS: tuple[str, ...] = get_args(KillSwitchKind)
NAME = r"^[^/\s]([^/]*[^/\s])?$"
"""A name: not empty, no slash (it is a path segment), no space at either end."""


class NewKillSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["actuator", "runbook", "service"]
    name: str = Field(min_length=1, max_length=200, pattern=NAME)
    reason: str = Field(default="", max_length=2000)
    # Who sets it, when access control is off; with it on, the token's name.
    set_by: str = Field(default="api", min_length=1, max_length=200)


FLEET_REFUSAL = (
    "kill switches are kept by one node's core, and a fleet's partitions each have their own: "
    "a switch set here would stop only some of them; on a fleet, lower the autonomy in the "
    "central policy (onduty policy publish) instead"
)
"""Why a fleet refuses: a switch that stopped one partition and not the others would be worse
than none."""


def kill_switches_router(service: Service, ingest: Ingest) -> APIRouter:
    router = APIRouter()

    @router.post(f"{API}/kill-switches")
    async def set_kill_switch(body: NewKillSwitch, principal: Operator) -> Response:
        if service.is_fleet:
            return error(409, FLEET_REFUSAL, "kind")
        actor = body.set_by if principal is LOCAL else principal.name
        switch = KillSwitchSet(kind=body.kind, name=body.name, reason=body.reason)
        return await record(
            ingest,
            [Input(switch, stream="kill-switches", actor=actor)],
            {"kind": body.kind, "name": body.name, "reason": body.reason, "set_by": actor},
        )

    @router.get(f"{API}/kill-switches", dependencies=READ)
    def kill_switches() -> list[dict[str, Any]]:
        with service.read.lock:
            return [dict(item) for item in service.read.kill_switches.listing()]

    @router.delete(f"{API}/kill-switches/{{kind}}/{{name}}")
    async def clear_kill_switch(kind: str, name: str, principal: Operator) -> Response:
        if service.is_fleet:
            return error(409, FLEET_REFUSAL, "kind")
        if kind not in KINDS:
            return error(422, f"kind must be one of {', '.join(KINDS)}, not {kind!r}", "kind")
        with service.read.lock:
            active = f"{kind}/{name}" in service.read.kill_switches.active
        if not active:
            return error(404, f"no active kill switch on {kind} {name}", "name")
        cleared = KillSwitchCleared(kind=kind, name=name)
        return await record(
            ingest,
            [Input(cleared, stream="kill-switches", actor=principal.name)],
            {"kind": kind, "name": name, "cleared": True},
        )

    return router
