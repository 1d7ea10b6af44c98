"""The console's `/drill` (only with `onduty serve --sim`): the drill's simulated fleet as people
see it (health, the alerts firing), the open incidents to acknowledge and the approvals waiting,
a fix control for every instance and service (restart, roll back, ...: `POST
/api/v1/drill/fix`), a button that ends the drill, and once it has ended its scorecard with
each person's response times and the truth about the faults."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from onduty.api.auth import Principal
from onduty.api.console.approvals import inbox
from onduty.api.console.incidents import row
from onduty.api.console.pages import Context, Pages
from onduty.service import Service
from onduty.sim.live import LiveSimulation

DURATION_METRICS = ("mttd", "mttr", "wait", "within")


def duration(seconds: float | None) -> str:
    """'4m 05s', '1h 02m', '42s'; '-' for nothing."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def hms(moment: str | None) -> str:
    """The time of day of an ISO time in UTC ('09:12:30'); '-' for none."""
    if not moment:
        return "-"
    return datetime.fromisoformat(moment).astimezone(UTC).strftime("%H:%M:%S")


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The scorecard's metrics as (name, shown value): durations in minutes and seconds."""
    rows = []
    for name, value in metrics.items():
        if value is None:
            shown = "-"
        elif name.endswith("_s") or any(part in name for part in DURATION_METRICS):
            shown = duration(float(value))
        elif isinstance(value, float) and not value.is_integer():
            shown = f"{value:.2f}"
        else:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
        rows.append((name.replace("_", " "), shown))
    return rows


def drill_context(service: Service, drill: LiveSimulation, who: Principal) -> Context:
    document = drill.status()
    with service.read.lock:
        incidents = service.read.incidents
        open_views = [view for view in incidents.incidents.values() if view.status == "open"]
        open_views.sort(key=lambda view: view.opened_at, reverse=True)
        waiting = inbox(incidents.incidents, incidents.approvals.values(), who, service.log)
        open_rows = [row(view) for view in open_views]
    card = document["scorecard"]
    return {
        "drill": document,
        "open": open_rows,
        "inbox": waiting,
        "instance_actions": [a for a in document["actions"] if a["scope"] == "instance"],
        "service_actions": [a for a in document["actions"] if a["scope"] == "service"],
        "metrics": metric_rows(card["metrics"]) if card else [],
        "duration": duration,
        "hms": hms,
    }


def drill_router(service: Service, pages: Pages, drill: LiveSimulation) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    pages.templates.globals["drill_url"] = "/drill"  # the header links to the drill

    def build(request: Request, who: Principal) -> Context:
        return drill_context(service, drill, who)

    pages.route(router, "/drill", "drill.html", "_drill.html", "Drill", build)
    return router
