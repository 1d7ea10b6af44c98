"""`/api/v1/silences`: create a silence or maintenance window, list them, expire one."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from onduty.api.auth import LOCAL
from onduty.api.ingest import Ingest, error
from onduty.api.routes.common import API, READ, Operator, record
from onduty.correlate.matchers import MatcherList
from onduty.events import SilenceCreated, SilenceExpired
from onduty.runtime import Input
from onduty.service import Service
from onduty.values import Duration, require_exactly_one


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
        require_exactly_one(self, "ends_at", "duration")
        return self


def silences_router(service: Service, ingest: Ingest) -> APIRouter:
    router = APIRouter()

    @router.post(f"{API}/silences")
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
        return await record(
            ingest,
            [Input(created, stream="silences", actor=actor)],
            {"id": silence_id, "starts_at": starts.isoformat(), "ends_at": ends.isoformat()},
        )

    @router.get(f"{API}/silences", dependencies=READ)
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

    @router.delete(f"{API}/silences/{{silence_id}}")
    async def expire_silence(silence_id: str, principal: Operator) -> Response:
        with service.read.lock:
            view = service.read.silences.silences.get(silence_id)
        if view is None or view.state(service.clock.now()) == "expired":
            return error(404, f"no active or pending silence {silence_id}", "silence_id")
        expired = SilenceExpired(silence_id=silence_id)
        return await record(
            ingest,
            [Input(expired, stream="silences", actor=principal.name)],
            {"id": silence_id, "expired": True},
        )

    return router
