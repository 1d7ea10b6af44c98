"""`/api/v1/events` and `/api/v1/audit/verify`: the log itself, and whether its chain holds."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from starlette.responses import Response

from onduty.api.ingest import JSONBody, error
from onduty.api.routes.common import API, READ, event_json
from onduty.log import verify_snapshots
from onduty.service import Service


def events_router(service: Service) -> APIRouter:
    router = APIRouter()

    @router.get(f"{API}/events", dependencies=READ)
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
                found.append(event_json(event))
                if len(found) >= limit:
                    break
        return JSONBody(found)

    @router.get(f"{API}/audit/verify", dependencies=READ)
    async def audit_verify() -> dict[str, Any]:
        log = service.log
        if log is None:
            raise HTTPException(503, "not ready")
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

    return router
