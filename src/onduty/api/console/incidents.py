"""The console's incident pages: `/` (open incidents, newest first, and the recently resolved)
and `/incidents/{id}` (one incident's timeline and a page of its signal events: the latest;
`?signals_before=SEQ` and `?signals_after=SEQ` the others; the closed incidents most like it
and what was done about them), and their fragments."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from starlette.requests import Request

from onduty.api.auth import Principal
from onduty.api.console.approvals import inbox
from onduty.api.console.pages import LISTING, Context, Pages, Problem, clock
from onduty.api.console.signals import SignalDetails, signal_details
from onduty.api.console.timeline import Entry, entry
from onduty.readmodel import IncidentView, SignalCursor, SignalPage, signal_page
from onduty.readmodel.similar import summarize
from onduty.service import Service

RESOLVED_SHOWN = 10
SIGNALS_SHOWN = 100
"""Signal events on one page of an incident: the rest are a link away (`?signals_before=SEQ`,
`?signals_after=SEQ`), read from the log, so a page stays small however large the incident."""


@dataclass(frozen=True)
class Row:
    """An incident as the list shows it."""

    id: str
    title: str
    service: str
    status: str
    phase: str
    tone: str
    opened_at: datetime
    resolved_at: datetime | None
    resolution: str
    signals: int
    flapping: bool
    muted: bool
    escalated: bool
    acknowledged: bool
    approvals: int


def row(view: IncidentView) -> Row:
    """The incident's phase from the state its view follows (never a walk of its timeline,
    which a list of many incidents would pay for each of them)."""
    muted, acknowledged = view.muted, view.acknowledged
    approvals = len(view.awaiting_approval)
    if view.status == "resolved":
        phase, tone = "resolved", "good"
    elif approvals:
        phase, tone = "awaiting approval", "warn"
    elif view.acting:
        phase, tone = "acting", "info"
    elif view.verifying:
        phase, tone = "verifying", "info"
    elif view.escalated and not acknowledged:
        phase, tone = "escalated", "bad"
    elif acknowledged:
        phase, tone = "acknowledged", "info"
    elif muted:
        phase, tone = "muted", "quiet"
    elif view.flapping:
        phase, tone = "flapping", "warn"
    else:
        phase, tone = "open", "bad"
    return Row(
        id=view.incident_id,
        title=view.title,
        service=view.service or "",
        status=view.status,
        phase=phase,
        tone=tone,
        opened_at=view.opened_at,
        resolved_at=view.resolved_at,
        resolution=view.resolution,
        signals=view.signals,
        flapping=view.flapping,
        muted=muted,
        escalated=view.escalated,
        acknowledged=acknowledged,
        approvals=approvals,
    )


# ---------------------------------------------------------------------------- signal pages


@dataclass(frozen=True)
class SignalsAsked:
    """Which page of its signal events an incident page shows: the latest (neither given),
    the ones after seq `after` (0: the first page), or the ones just before seq `before`."""

    after: int | None = None
    before: int | None = None

    @classmethod
    def of(cls, request: Request) -> SignalsAsked | str:
        """The page the query asks for, or what is wrong with the query."""
        found: dict[str, int] = {}
        for name, least in (("signals_after", 0), ("signals_before", 1)):
            value = request.query_params.get(name)
            if value is None:
                continue
            if not value.isdigit() or len(value) > 18 or int(value) < least:
                return f"{name} must be a whole number of at least {least}."
            found[name] = int(value)
        if len(found) > 1:
            return "Give signals_after or signals_before, not both."
        return cls(found.get("signals_after"), found.get("signals_before"))

    @property
    def query(self) -> str:
        if self.after is not None:
            return f"?signals_after={self.after}"
        if self.before is not None:
            return f"?signals_before={self.before}"
        return ""


@dataclass(frozen=True)
class PagerLink:
    rel: str
    label: str
    href: str
    key: str = ""


@dataclass(frozen=True)
class SignalsShown:
    """A page of an incident's signal events as the page shows them."""

    total: int
    entries: list[Entry]
    links: list[PagerLink]
    describe: str
    query: str
    """The page's own query, which the live refresh of the fragment keeps."""


def signals_shown(incident_id: str, asked: SignalsAsked, page: SignalPage) -> SignalsShown:
    base = f"/incidents/{quote(incident_id, safe='')}"
    events = page.events
    links = []
    if page.earlier and events:
        links.append(PagerLink("first", "⇤ First", f"{base}?signals_after=0"))
        links.append(PagerLink("prev", "← Earlier", f"{base}?signals_before={events[0].seq}", "["))
    if page.later and events:
        links.append(PagerLink("next", "Later →", f"{base}?signals_after={events[-1].seq}", "]"))
        links.append(PagerLink("last", "Latest ⇥", base))
    elif asked.query:
        links.append(PagerLink("last", "Latest ⇥", base))
    if not events:
        describe = "No signal events on this page."
    elif not page.earlier and not page.later:
        describe = f"All {page.total:,} signal events, oldest first."
    else:
        which = "the latest " if not page.later else "the first " if not page.earlier else ""
        describe = (
            f"Showing {which}{len(events):,} of {page.total:,} signal events "
            f"({clock(events[0].ts)} to {clock(events[-1].ts)} UTC), oldest first."
        )
    return SignalsShown(
        total=page.total,
        entries=[entry(event) for event in events],
        links=links,
        describe=describe,
        query=asked.query,
    )


def first_of_each(details: dict[int, SignalDetails]) -> set[int]:
    """The seqs of the first event on a page for each signal: the page shows its annotations
    open there, and folded where the same signal comes back."""
    first: dict[str, int] = {}
    for seq in sorted(details):
        first.setdefault(details[seq].fingerprint, seq)
    return set(first.values())


# ---------------------------------------------------------------------------- the pages


def incidents_router(service: Service, pages: Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def incident_lists(request: Request, who: Principal) -> Context:
        """The open incidents, newest first, and the last few resolved."""
        with service.read.lock:
            views = service.read.incidents.incidents.values()
            open_views = [view for view in views if view.status == "open"]
            open_views.sort(key=lambda view: view.opened_at, reverse=True)
            resolved = heapq.nlargest(
                RESOLVED_SHOWN,
                (view for view in views if view.status == "resolved"),
                key=lambda view: view.resolved_at or view.opened_at,
            )
            return {
                "open": [row(view) for view in open_views],
                "resolved": [row(view) for view in resolved],
            }

    def incident_context(incident_id: str, who: Principal | None) -> dict[str, Any] | None:
        """The incident from the read models (or, resolved long ago, read back from the log),
        its decisions read from the log outside the read models' lock."""
        log = service.log
        with service.read.lock:
            projection = service.read.incidents
            view = projection.incidents.get(incident_id)
            if view is not None:
                pending = [
                    projection.approvals[approval]
                    for approval in view.awaiting_approval
                    if approval in projection.approvals
                ]
                waiting = inbox(projection.incidents, pending, who, log)
                taken = (row(view), view.decisions, SignalCursor.of(view))
                seqs = view.decisions.kept()
        if view is None:
            view = service.archive.view(log, incident_id)
            if view is None:
                return None
            waiting, seqs = [], view.decisions.kept()
            taken = (row(view), view.decisions, SignalCursor.of(view))
        shown, decisions, cursor = taken
        events = log.read_seqs(seqs) if log is not None and seqs else []
        return {
            "incident": shown,
            "entries": [entry(event) for event in events],
            "inbox": waiting,
            "decisions_omitted": decisions.omitted,
            "decisions_split": decisions.split,
            "cursor": cursor,
        }

    def with_signals(context: dict[str, Any], asked: SignalsAsked) -> dict[str, Any]:
        """The context with the page of signal events `asked` for, read (from the log, for a
        large incident) without holding the read models' lock."""
        cursor: SignalCursor = context.pop("cursor")
        after, before = asked.after or 0, asked.before
        if asked.after is None and asked.before is None:  # the latest page
            before = cursor.last_seq + 1
        page = signal_page(cursor, service.log, after=after, before=before, limit=SIGNALS_SHOWN)
        opened = [line.event for line in context["entries"] if line.kind == "signal"]
        details = signal_details(service.log, [*opened, *page.events])
        return {
            **context,
            "signals": signals_shown(cursor.incident_id, asked, page),
            "signal_details": details,
            "signal_first": first_of_each(details),
        }

    def incident(request: Request, who: Principal) -> Context | Problem:
        asked = SignalsAsked.of(request)
        if isinstance(asked, str):
            return Problem(400, "Bad request", asked)
        incident_id = request.path_params["incident_id"]
        context = incident_context(incident_id, who)
        if context is None:
            message = f"There is no incident {incident_id}."
            return Problem(404, "No such incident", message, brief="not found")
        context = with_signals(context, asked)
        similar = service.similar_incidents(incident_id, service.config.similar.limit) or []
        return {
            "title": context["incident"].title,
            **context,
            "similar": similar,
            "similar_summary": summarize(similar),
        }

    pages.route(router, "/", LISTING, "_incidents.html", "Incidents", incident_lists)
    pages.route(router, "/incidents/{incident_id}", "incident.html", "_incident.html", "", incident)
    return router
