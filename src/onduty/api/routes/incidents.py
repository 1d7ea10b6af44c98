"""`/api/v1/incidents`: the incidents, one incident with its timeline, its signal events a page
at a time (acknowledging one: `approvals`)."""

from __future__ import annotations

import heapq
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query
from starlette.responses import Response

from onduty.api.ingest import JSONBody, error
from onduty.api.routes.common import API, READ, event_json
from onduty.readmodel import (
    SIGNAL_PAGE,
    SIGNAL_PAGE_MAX,
    IncidentView,
    SignalCursor,
    SignalPage,
    signal_page,
)
from onduty.service import Service


def _signals_url(incident_id: str, limit: int, **cursor: int) -> str:
    query = "&".join(f"{key}={value}" for key, value in cursor.items())
    return f"{API}/incidents/{quote(incident_id, safe='')}/signals?{query}&limit={limit}"


def _signal_links(
    incident_id: str, page: SignalPage, last_seq: int, limit: int
) -> dict[str, str | None]:
    """Where the pages either side of `page` are (None at either end), and the latest one."""
    events = page.events
    return {
        "next": _signals_url(incident_id, limit, after=events[-1].seq)
        if page.later and events
        else None,
        "previous": _signals_url(incident_id, limit, before=events[0].seq)
        if page.earlier and events
        else None,
        "latest": _signals_url(incident_id, limit, before=last_seq + 1) if page.total else None,
    }


def incident_json(
    view: IncidentView, timeline: bool = False, signals: SignalPage | None = None
) -> dict[str, Any]:
    """An incident. With `timeline`: its decisions (all but the middle of a very long
    incident's) and `signals`, the first page of its signal events, in log order, with where to
    read the rest; the answer's size is bounded however many signals the incident has."""
    body: dict[str, Any] = {
        "id": view.incident_id,
        "title": view.title,
        "service": view.service,
        "status": view.status,
        "opened_at": view.opened_at.isoformat(),
        "resolved_at": view.resolved_at.isoformat() if view.resolved_at else None,
        "resolution": view.resolution,
        "signals": view.signals,
        "flapping": view.flapping,
        "escalations": list(view.escalations),
        "actions": list(view.actions),
        "denied": list(view.denied),
        "awaiting_approval": view.awaiting_approval,
    }
    if timeline:
        page = signals.events if signals is not None else []
        merged = heapq.merge(view.decisions.events(), page, key=lambda event: event.seq)
        body["timeline"] = [event_json(event) for event in merged]
        body["timeline_omitted"] = {
            "decisions": view.decisions.omitted,
            "signals": view.signal_events.total - len(page),
        }
        if signals is not None:
            links = _signal_links(
                view.incident_id, signals, view.signal_events.last_seq, SIGNAL_PAGE
            )
            body["signal_events"] = {"total": signals.total, "limit": SIGNAL_PAGE, **links}
    return body


def incidents_router(service: Service) -> APIRouter:
    router = APIRouter()

    @router.get(f"{API}/incidents", dependencies=READ)
    def incidents(
        status: Annotated[str, Query(pattern="^(open|resolved|all)$")] = "all",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        with service.read.lock:
            views = service.read.incidents.ordered()
            chosen = [v for v in views if status in ("all", v.status)][-limit:]
            return [incident_json(view) for view in reversed(chosen)]

    def signals_of(
        incident_id: str, after: int = 0, before: int | None = None, limit: int = SIGNAL_PAGE
    ) -> tuple[SignalCursor, SignalPage] | Response:
        """A page of an incident's signal events: read from the log without holding the read
        models' lock (the core thread takes it for every event)."""
        with service.read.lock:
            view = service.read.incidents.incidents.get(incident_id)
            cursor = SignalCursor.of(view) if view is not None else None
        if cursor is None:
            return error(404, f"no incident {incident_id}", "incident_id")
        try:
            page = signal_page(cursor, service.log, after=after, before=before, limit=limit)
        except RuntimeError:
            return error(503, "not ready", **{"Retry-After": "1"})
        return cursor, page

    @router.get(f"{API}/incidents/{{incident_id}}", dependencies=READ)
    def incident(incident_id: str) -> Response:
        """The incident, its decisions and the first page of its signal events (the rest:
        `signal_events.next`)."""
        found = signals_of(incident_id)
        if isinstance(found, Response):
            return found
        with service.read.lock:
            view = service.read.incidents.incidents.get(incident_id)
            if view is None:
                return error(404, f"no incident {incident_id}", "incident_id")
            return JSONBody(incident_json(view, timeline=True, signals=found[1]))

    @router.get(f"{API}/incidents/{{incident_id}}/signals", dependencies=READ)
    def incident_signals(
        incident_id: str,
        after: Annotated[int, Query(ge=0)] = 0,
        before: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=SIGNAL_PAGE_MAX)] = SIGNAL_PAGE,
    ) -> Response:
        """An incident's signal events (its `signal_*` notes) a page at a time, in log order:
        the first `limit` with seq > `after`, or with `before`, the last `limit` before it.
        `next` and `previous` are the pages either side; following `next` from the first page
        visits every signal event once."""
        found = signals_of(incident_id, after, before, limit)
        if isinstance(found, Response):
            return found
        cursor, page = found
        return JSONBody(
            {
                "incident_id": incident_id,
                "total": page.total,
                "events": [event_json(event) for event in page.events],
                **_signal_links(incident_id, page, cursor.last_seq, limit),
            }
        )

    return router
