"""`/api/v1/events` and `/api/v1/audit/verify`: the log itself, and whether its chain, its
snapshots, its signed checkpoints and its sealed archives hold."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from starlette.responses import Response

from onduty.api.ingest import JSONBody, error
from onduty.api.routes.common import API, READ, event_json
from onduty.auditing import audit_checkpoints, events_in, fleet_audit_of
from onduty.config_checkpoints import CheckpointSettings
from onduty.log import ChainBreak, EventLog, StoreError, verify_snapshots
from onduty.log.checkpoints import CheckpointError
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
        settings = service.config.checkpoints
        if service.is_fleet:
            checkpoints = await asyncio.to_thread(
                fleet_checkpoints_json, service.store, broken, settings, service.name
            )
        else:
            checkpoints = await asyncio.to_thread(checkpoints_json, log, service.store, broken)
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


def fleet_checkpoints_json(
    store: str, broken: ChainBreak | None, settings: CheckpointSettings, node: str
) -> dict[str, Any]:
    """What a fleet's checkpoints say (its node's witness and key), as extra fields."""
    try:
        audited = fleet_audit_of(settings, store, broken, node)
    except (CheckpointError, StoreError) as error:
        return {"findings": [{"kind": "unreadable", "seq": 0, "message": str(error)}]}
    report, latest = audited.report, audited.report.latest
    return {
        "checkpoints": {
            "witness": None if audited.witness is None else str(audited.witness),
            "checked": report.in_witness + report.in_store,
            "in_log": report.in_store,
            "signatures_checked": report.signatures,
            "latest": None if latest is None else {"described": latest.describe()},
        },
        "archives": [],
        "findings": [
            {"kind": finding.kind, "seq": finding.seq, "message": finding.message}
            for finding in audited.findings
            if finding.kind != "chain"  # the chain's own break is reported beside
        ],
    }


def checkpoints_json(log: EventLog, store: str, broken: ChainBreak | None) -> dict[str, Any]:
    """What the checkpoints and the archives say, as the audit answer's extra fields."""
    try:
        audited = audit_checkpoints(log, store, broken)
    except CheckpointError as error:
        return {"findings": [{"kind": "unreadable", "seq": 0, "message": str(error)}]}
    report, latest = audited.report, audited.report.latest
    return {
        "checkpoints": {
            "witness": None if audited.witness is None else str(audited.witness),
            "checked": report.checked,
            "in_log": report.in_log,
            "signatures_checked": report.signatures,
            "latest": None
            if latest is None
            else {"seq": latest.seq, "signed_at": latest.signed_at, "key_id": latest.key_id},
        },
        "archives": [
            {"name": entry.name, "first": entry.first, "last": entry.last}
            for entry in audited.archives
        ],
        "findings": [
            {"kind": finding.kind, "seq": finding.seq, "message": finding.message}
            for finding in audited.findings
        ],
    }
