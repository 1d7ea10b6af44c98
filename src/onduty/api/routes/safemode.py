"""`/api/v1/safe-mode`: where onduty has stepped back from acting on its own and why, and which
sources it judges untrustworthy in which way (read only: safe mode follows the sources' health;
a person who wants automation stopped sets a kill switch)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from onduty.api.routes.common import API, READ
from onduty.service import Service


def safe_mode_router(service: Service) -> APIRouter:
    router = APIRouter()

    @router.get(f"{API}/safe-mode", dependencies=READ)
    def safe_mode() -> dict[str, Any]:
        with service.read.lock:
            view = service.read.safe_mode
            return {"active": view.listing(), "source_problems": view.source_problems()}

    return router
