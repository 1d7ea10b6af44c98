"""`/api/v1/events` and `/api/v1/audit/verify`: the log itself, and whether its chain, its
snapshots, its signed checkpoints and its sealed archives hold."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from starlette.responses import Response

from onduty.api.ingest import JSONBody, error
from onduty.api.routes.common import API, READ, event_json
from onduty.auditing import CheckpointSummary, events_in, summarize_checkpoints
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
        head = await asyncio.to_thread(events_in, log)
        snapshots = [{"seq": problem.seq, "reason": problem.reason} for problem in bad]
        summary = await asyncio.to_thread(
            summarize_checkpoints,
            log,
            service.store,
            broken,
            fleet=service.is_fleet,
            settings=service.config.checkpoints,
            node=service.name,
        )
        checkpoints = checkpoints_json(summary)
        if broken is None:
            intact = not bad and not checkpoints["findings"]
            return {"intact": intact, "events": head, "bad_snapshots": snapshots, **checkpoints}
        return {
            "intact": False,
            "events": head,
            "first_bad_seq": broken.seq,
            "reason": broken.reason,
            "bad_snapshots": snapshots,
            **checkpoints,
        }

    return router


def checkpoints_json(summary: CheckpointSummary) -> dict[str, Any]:
    """What the checkpoints and the archives say, as the audit answer's extra fields."""
    if summary.problem:
        return {"findings": [{"kind": "unreadable", "seq": 0, "message": summary.problem}]}
    return {
        "checkpoints": {
            "witness": None if summary.witness is None else str(summary.witness),
            "checked": summary.checked,
            "in_log": summary.in_log,
            "signatures_checked": summary.signatures,
            "latest": summary.latest,
        },
        "archives": [
            {"name": entry.name, "first": entry.first, "last": entry.last}
            for entry in summary.archives
        ],
        "findings": [
            {"kind": finding.kind, "seq": finding.seq, "message": finding.message}
            for finding in summary.findings
        ],
    }
