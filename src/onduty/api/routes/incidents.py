"""`/api/v1/incidents`: the incidents, one incident with its timeline, its signal events a page
at a time, the closed incidents most like it (acknowledging one: `approvals`)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query
from starlette.responses import Response

from onduty.api.ingest import JSONBody, error
from onduty.api.routes.common import API, READ, event_json
from onduty.events import Event
from onduty.readmodel import (
    SIGNAL_PAGE,
    SIGNAL_PAGE_MAX,
    IncidentView,
    SignalCursor,
    SignalPage,
    signal_page,
)
from onduty.readmodel.similar import summarize
from onduty.service import Service
from onduty.spans import incident_trace, recall_from


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


def incident_json(view: IncidentView) -> dict[str, Any]:
    """An incident as the list shows it."""
    return {
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
        "awaiting_approval": list(view.awaiting_approval),
    }


@dataclass(frozen=True)
class Found:
    """An incident as taken from its view (under the read models' lock while the view is in
    memory): its fields, where its signal events are, and the seqs of the decisions it keeps;
    the events themselves are then read from the log without holding the lock."""

    body: dict[str, Any]
    cursor: SignalCursor
    decisions: list[int]
    decisions_omitted: int

    @classmethod
    def of(cls, view: IncidentView) -> Found:
        kept = view.decisions
        return cls(incident_json(view), SignalCursor.of(view), kept.kept(), kept.omitted)


def timeline_json(found: Found, signals: SignalPage, decisions: list[Event]) -> dict[str, Any]:
    """An incident with its decisions (all but the middle of a very long incident's) and
    `signals`, the first page of its signal events, in log order, with where to read the rest;
    the answer's size is bounded however many signals the incident has."""
    page, cursor = signals.events, found.cursor
    merged = heapq.merge(decisions, page, key=lambda event: event.seq)
    links = _signal_links(cursor.incident_id, signals, cursor.last_seq, SIGNAL_PAGE)
    return {
        **found.body,
        "timeline": [event_json(event) for event in merged],
        "timeline_omitted": {
            "decisions": found.decisions_omitted,
            "signals": cursor.total - len(page),
        },
        "signal_events": {"total": signals.total, "limit": SIGNAL_PAGE, **links},
    }


def find(service: Service, incident_id: str) -> Found | None:
    """The incident from the read models, or (resolved long ago) read back from the log."""
    with service.read.lock:
        view = service.read.incidents.incidents.get(incident_id)
        if view is not None:
            return Found.of(view)
    view = service.archive.view(service.log, incident_id)
    return Found.of(view) if view is not None else None


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
    ) -> tuple[Found, SignalPage] | Response:
        """A page of an incident's signal events: read from the log without holding the read
        models' lock (the core thread takes it for every event)."""
        found = find(service, incident_id)
        if found is None:
            return error(404, f"no incident {incident_id}", "incident_id")
        log = service.log
        try:
            page = signal_page(found.cursor, log, after=after, before=before, limit=limit)
        except RuntimeError:
            return error(503, "not ready", **{"Retry-After": "1"})
        return found, page

    @router.get(f"{API}/incidents/{{incident_id}}", dependencies=READ)
    def incident(incident_id: str) -> Response:
        """The incident, its decisions and the first page of its signal events (the rest:
        `signal_events.next`)."""
        found = signals_of(incident_id)
        if isinstance(found, Response):
            return found
        log = service.log
        decisions = log.read_seqs(found[0].decisions) if log is not None else []
        return JSONBody(timeline_json(*found, decisions))

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
        cursor, page = found[0].cursor, found[1]
        return JSONBody(
            {
                "incident_id": incident_id,
                "total": page.total,
                "events": [event_json(event) for event in page.events],
                **_signal_links(incident_id, page, cursor.last_seq, limit),
            }
        )

    @router.get(f"{API}/incidents/{{incident_id}}/similar", dependencies=READ)
    def incident_similar(
        incident_id: str,
        limit: Annotated[int | None, Query(ge=1, le=20)] = None,
    ) -> Response:
        """The closed incidents most like this one (open or closed), best first, each with
        its similarity (0 to 1), its labels and the actions taken with how each ended; and
        the one line the escalation message carries (`summary`)."""
        wanted = limit if limit is not None else service.config.similar.limit
        matches = service.similar_incidents(incident_id, wanted)
        if matches is None:
            return error(404, f"no incident {incident_id}", "incident_id")
        return JSONBody(
            {
                "incident_id": incident_id,
                "method": service.read.similar.method,
                "summary": summarize(matches),
                "similar": [match.as_json() for match in matches],
            }
        )

    @router.get(f"{API}/incidents/{{incident_id}}/trace", dependencies=READ)
    def incident_trace_(incident_id: str) -> Response:
        """The incident's trace rebuilt from its events (`onduty trace`): the spans with the
        ids onduty exports over OTLP, whether export is on or not."""
        log = service.log
        if log is None:
            return error(503, "not ready", **{"Retry-After": "1"})
        spans = incident_trace(recall_from(log)(incident_id, log.head()[0] + 1), incident_id)
        if not spans:
            return error(404, f"no incident {incident_id}", "incident_id")
        return JSONBody(
            {
                "incident_id": incident_id,
                "trace_id": spans[0].trace_id,
                "spans": [span.as_dict() for span in spans],
            }
        )

    return router
