"""The console's `/services`: how far onduty may act on each service (configured, and as an
admin changed it), its open incidents, and the autonomy raises waiting for more admins."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request

from onduty.api.auth import Principal
from onduty.api.console.pages import LISTING, Context, Pages
from onduty.service import Service

AUTONOMY_LEVELS = ("observe", "suggest", "approve", "act")


def services_context(service: Service, who: Principal | None) -> Context:
    now = service.clock.now()
    with service.read.lock:
        document = service.read.policy.document or {}
        overrides = dict(service.read.autonomy.overrides)
        raises = {
            r.service: {
                "id": r.request_id,
                "level": r.level,
                "status": r.status(now),
                "yours": who is not None and r.has_confirmed(who.name),
            }
            for r in service.read.raises.pending(now)
        }
        counts: dict[str, int] = {}
        for view in service.read.incidents.incidents.values():
            if view.status == "open" and view.service:
                counts[view.service] = counts.get(view.service, 0) + 1
    capped = [
        f"{runbook['name']}: {runbook['autonomy']}"
        for runbook in document.get("runbooks", [])
        if runbook.get("autonomy")
    ]
    rows = []
    for spec in document.get("services", []):
        name = str(spec.get("name", ""))
        configured = str(spec.get("autonomy", "suggest"))
        rows.append(
            {
                "name": name,
                "tier": spec.get("tier", "standard"),
                "instances": len(spec.get("instances", [])),
                "configured": configured,
                "effective": overrides.get(name) or configured,
                "overridden": bool(overrides.get(name)) and overrides[name] != configured,
                "open": counts.get(name, 0),
                "raise": raises.get(name),
            }
        )
    return {"services": rows, "levels": AUTONOMY_LEVELS, "capped": capped}


def services_router(service: Service, pages: Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def services(request: Request, who: Principal) -> Context:
        return services_context(service, who)

    pages.route(router, "/services", LISTING, "_services.html", "Services", services)
    return router
