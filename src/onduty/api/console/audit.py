"""The console's `/audit`: verify the event log's hash chain (and that its snapshots are bound
to it) now, and show the result; every page's header shows the last one."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from onduty.api.console.pages import Pages
from onduty.auditing import events_in, summarize_checkpoints
from onduty.log import verify_snapshots
from onduty.service import Service


@dataclass
class AuditStatus:
    intact: bool | None = None
    events: int = 0
    first_bad_seq: int | None = None
    reason: str = ""
    bad_snapshot: int | None = None
    """With an intact chain: the seq of a stored snapshot that is not bound to it."""
    checked_at: datetime | None = None
    took_s: float = 0.0
    checkpoints: str = ""
    """What the signed checkpoints vouch for (or the first thing they contradict)."""
    archives: int = 0
    """Sealed archives walked with the live store."""


class Audit:
    """Runs the audit, one at a time, and keeps the last result."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.status = AuditStatus()
        self.lock = threading.Lock()
        self._started = float("-inf")

    def verify(self) -> AuditStatus:
        """Check the whole chain (one check at a time; a caller that waited gets its result)."""
        log = self.service.log
        if log is None:
            return self.status
        asked = time.monotonic()
        with self.lock:
            if self._started >= asked:
                return self.status  # a check that started after this call asked has finished
            started = self._started = time.monotonic()
            head = events_in(log)
            broken = log.verify()
            bad = verify_snapshots(log)
            reason = broken.reason if broken else ""
            if broken is None and bad:
                reason = "; ".join(f"snapshot at seq {p.seq}: {p.reason}" for p in bad)
            service = self.service
            summary = summarize_checkpoints(
                log,
                service.store,
                broken,
                fleet=service.is_fleet,
                settings=service.config.checkpoints,
                node=service.name,
            )
            vouched = summary.vouched
            contradicted = summary.problem or summary.first_finding
            archives = len(summary.archives)
            if broken is None and not bad and contradicted:
                reason = contradicted
            self.status = AuditStatus(
                intact=broken is None and not bad and not contradicted,
                events=head,
                first_bad_seq=broken.seq if broken else None,
                reason=reason,
                bad_snapshot=bad[0].seq if broken is None and bad else None,
                checked_at=datetime.now(UTC),
                took_s=time.monotonic() - started,
                checkpoints=vouched,
                archives=archives,
            )
            return self.status


def audit_router(audit: Audit, pages: Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/audit", response_class=HTMLResponse)
    async def audit_page(request: Request) -> Response:
        who = pages.gate(request)
        if isinstance(who, Response):
            return who
        status = await asyncio.to_thread(audit.verify)
        return pages.render(request, "audit.html", who, title="Audit", result=status)

    return router
