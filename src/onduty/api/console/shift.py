"""The console's views for a whole shift: the history of resolved incidents (paged, searchable),
the silences, and the shift overview (its charts: `charts`).

Routes: `/history` (`?q=` searches title, service, labels and resolution; `?before=N` and
`?after=N` page through the incidents in the order they resolved), `/silences`, `/shift`
(`?window=1h|6h|12h|24h|7d`), and their `/fragments/...` for the live refresh.

Every number comes from the read models (never from the core's state), read under their lock
into plain tuples and computed on outside it; every time is the service's clock (a simulation's
simulated time). Every scan is bounded: a search looks through at most `SEARCH_SCAN` resolved
incidents per page, the overview through the incidents of its window (at most `SHIFT_SCAN`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.requests import Request

from onduty.api.auth import Principal
from onduty.api.console.charts import (
    DEFAULT_WINDOW,
    OUTCOME_TONE,
    OUTCOMES,
    WINDOWS,
    Fact,
    Window,
    by_service,
    outcome_of,
    over_time,
    recovery,
)
from onduty.api.console.incidents import Row, row
from onduty.api.console.pages import LISTING, Context, Pages, Problem, age
from onduty.events import Event
from onduty.log import EventLog
from onduty.readmodel import IncidentView, SilenceView
from onduty.service import Service

HISTORY_PAGE = 25
SEARCH_SCAN = 20_000
"""Resolved incidents one page of a search looks through; past that, the page says so and
links to the next stretch."""
QUERY_LONGEST = 200
QUERY_TERMS = 8
SILENCES_EXPIRED_SHOWN = 20
ARCHIVE_SCAN = 500
"""Resolved incidents that left memory one page of the history reads back from the log, at
most; past that, the page says so and links to the next stretch, as for `SEARCH_SCAN`."""
SHIFT_SCAN = 100_000
"""Incidents the overview looks at, newest first, at most."""


def group_labels(opened: Event | None) -> list[str]:
    """The labels the incident was grouped by (`key=value`), from its opening event."""
    if opened is None or opened.type != "IncidentOpened":
        return []
    key = opened.data.get("group_key") or {}
    return [f"{k}={v}" for k, v in sorted(key.items())]


def opening_labels(log: EventLog | None, views: Sequence[IncidentView]) -> list[list[str]]:
    """Each view's `group_labels`, its opening event (its first decision) read from the log."""
    if log is None:
        return [[] for _ in views]
    opened = {event.seq: event for event in log.read_seqs(v.decisions.first_seq for v in views)}
    return [group_labels(opened.get(view.decisions.first_seq)) for view in views]


# ---------------------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryAsked:
    """A page of the history: matches of `q` resolved before position `before` (newest
    first), or just after position `after`; positions count resolutions from the first."""

    q: str = ""
    before: int | None = None
    after: int | None = None

    @classmethod
    def of(cls, request: Request) -> HistoryAsked | str:
        q = " ".join((request.query_params.get("q") or "").split())
        if len(q) > QUERY_LONGEST:
            return f"q: the search is longer than {QUERY_LONGEST} characters."
        found: dict[str, int] = {}
        for name in ("before", "after"):
            value = request.query_params.get(name)
            if value is None:
                continue
            if not value.isdigit() or len(value) > 18:
                return f"{name} must be a whole number."
            found[name] = int(value)
        if len(found) > 1:
            return "Give before or after, not both."
        return cls(q, found.get("before"), found.get("after"))

    def terms(self) -> list[str]:
        return self.q.casefold().split()[:QUERY_TERMS]

    def link(self, **cursor: int) -> str:
        query = {"q": self.q} if self.q else {}
        return "/history" + ("?" + urlencode({**query, **cursor}) if query or cursor else "")


@dataclass(frozen=True)
class HistoryRow:
    row: Row
    position: int
    outcome: str
    tone: str
    recovered: str
    labels: list[str]


@dataclass(frozen=True)
class HistoryShown:
    rows: list[HistoryRow]
    total: int
    """Resolved incidents in all."""
    newer: str | None
    older: str | None
    newest: str | None
    note: str
    query: str
    """The page's own query string, which its live refresh keeps."""


def _matches(terms: Sequence[str], view: IncidentView, labels: list[str]) -> bool:
    if not terms:
        return True
    haystack = " ".join(
        [view.title, view.service or "", view.incident_id, view.resolution, *labels]
    ).casefold()
    return all(term in haystack for term in terms)


def _scan(
    service: Service, asked: HistoryAsked, scan: int
) -> tuple[int, int, int, list[tuple[int, IncidentView]]]:
    """The resolved incidents one page looks through, in the order it does: (total, low,
    high, [(position, view)]). Those still in memory are taken under the read models' lock;
    at most `ARCHIVE_SCAN` of those that left it are read back from the log, outside it."""
    with service.read.lock:
        projection = service.read.incidents
        total = len(projection.resolved)
        gone = total - len(projection.kept_resolved)  # positions below this left memory
        if asked.after is not None:
            low = min(asked.after + 1, total)
            high = min(total, low + scan)
            high = min(high, max(low + ARCHIVE_SCAN, gone))
            span: range = range(low, high)
        else:
            high = total if asked.before is None else min(asked.before, total)
            low = max(0, high - scan)
            low = max(low, min(high - ARCHIVE_SCAN, gone))
            span = range(high - 1, low - 1, -1)
        kept = {p: projection.incidents.get(projection.resolved_id(p) or "") for p in span}
        seqs = {p: projection.resolved[p] for p in span if p < gone}
    views = service.archive.resolved(service.log, list(seqs.values()))
    archived = dict(zip(seqs, views, strict=True))
    found = [(p, kept.get(p) or archived.get(p)) for p in span]
    return total, low, high, [(p, view) for p, view in found if view is not None]


def history(service: Service, asked: HistoryAsked) -> HistoryShown:
    terms = asked.terms()
    scan = SEARCH_SCAN if terms else HISTORY_PAGE + 1
    total, low, high, candidates = _scan(service, asked, scan)
    chosen: list[tuple[int, IncidentView, list[str]]] = []
    for start in range(0, len(candidates), HISTORY_PAGE + 1):
        stretch = candidates[start : start + HISTORY_PAGE + 1]
        labelled = opening_labels(service.log, [view for _, view in stretch])
        for (position, view), labels in zip(stretch, labelled, strict=True):
            if _matches(terms, view, labels):
                chosen.append((position, view, labels))
        if len(chosen) > HISTORY_PAGE:
            chosen = chosen[: HISTORY_PAGE + 1]
            break
    with service.read.lock:  # a resolved incident in memory may still note a late outcome
        rows = [
            HistoryRow(
                row=row(view),
                position=position,
                outcome=(kind := outcome_of(view.status, view.escalated, bool(view.actions))),
                tone=OUTCOME_TONE[kind],
                recovered=age(view.resolved_at - view.opened_at) if view.resolved_at else "",
                labels=labels,
            )
            for position, view, labels in chosen
        ]
    more = len(rows) > HISTORY_PAGE
    rows = rows[:HISTORY_PAGE]
    cut = not more and (low > 0 if asked.after is None else high < total)
    if asked.after is not None:
        rows.reverse()  # read oldest first from the cursor: shown newest first
    older = newer = None
    note = ""
    if asked.after is None:
        if more:
            older = asked.link(before=rows[-1].position)
        elif cut:
            older = asked.link(before=low)
            note = (
                f"Searched the {high - low:,} incidents resolved before these; "
                "older ones are on the next page."
            )
        if high < total:
            newer = asked.link(after=rows[0].position if rows else high - 1)
    else:
        if more or cut:
            newer = asked.link(after=rows[0].position if rows else high - 1)
            if cut:
                note = f"Searched {high - low:,} incidents; newer ones are on the next page."
        if low > 0:
            older = asked.link(before=rows[-1].position if rows else low)
    newest = (
        asked.link()
        if (asked.before is not None and asked.before < total) or (asked.after is not None)
        else None
    )
    cursor = (
        {"before": asked.before} if asked.before is not None
        else {"after": asked.after} if asked.after is not None else {}
    )  # fmt: skip
    query = urlencode({**({"q": asked.q} if asked.q else {}), **cursor})
    return HistoryShown(rows, total, newer, older, newest, note, "?" + query if query else "")


# ---------------------------------------------------------------------------- silences


@dataclass(frozen=True)
class SilenceRow:
    id: str
    matchers: list[str]
    kind: str
    state: str
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str


def silences(service: Service) -> dict[str, Any]:
    now = service.clock.now()
    with service.read.lock:
        views: list[SilenceView] = list(service.read.silences.silences.values())
    rows = [
        SilenceRow(
            v.silence_id,
            v.matchers,
            v.kind,
            v.state(now),
            v.starts_at,
            v.ends_at,
            v.created_by,
            v.comment,
        )
        for v in views
    ]
    expired = sorted((r for r in rows if r.state == "expired"), key=lambda r: r.ends_at)
    return {
        "active": sorted((r for r in rows if r.state == "active"), key=lambda r: r.ends_at),
        "pending": sorted((r for r in rows if r.state == "pending"), key=lambda r: r.starts_at),
        "expired": expired[::-1][:SILENCES_EXPIRED_SHOWN],
        "expired_total": len(expired),
    }


# ---------------------------------------------------------------------------- the shift


def shift_facts(service: Service, start: datetime) -> list[Fact]:
    """The incidents that matter to a window starting at `start`: opened in it, resolved in
    it, or still open; newest first, read under the lock without computing anything. Those
    that left memory are in the read model's facts (resolved within the last week)."""
    facts: list[Fact] = []
    oldest = start - timedelta(days=7)
    with service.read.lock:
        projection = service.read.incidents
        for scanned, view in enumerate(reversed(projection.incidents.values())):
            if scanned >= SHIFT_SCAN or view.opened_at < oldest:
                break
            resolved = view.resolved_at
            if view.opened_at < start and resolved is not None and resolved < start:
                continue
            facts.append(
                Fact(
                    view.service or "—",
                    view.opened_at,
                    resolved,
                    outcome_of(view.status, view.escalated, bool(view.actions)),
                )
            )
        gone = [
            Fact(fact.service or "—", fact.opened_at, fact.resolved_at,
                 outcome_of("resolved", fact.escalated, fact.acted))
            for fact in reversed(projection.facts)
            if fact.opened_at >= oldest and fact.resolved_at >= start
        ][: max(0, SHIFT_SCAN - len(facts))]  # fmt: skip
    return facts + gone


def shift(service: Service, window: Window) -> dict[str, Any]:
    now = service.clock.now()
    epoch = datetime(2000, 1, 1, tzinfo=UTC)  # buckets start on whole hours (or minutes)
    end = now + (window.bucket - (now - epoch) % window.bucket)
    start = end - window.span
    facts = shift_facts(service, start)
    opened = [f for f in facts if f.opened_at >= start]
    resolved = [f for f in facts if f.resolved_at is not None and f.resolved_at >= start]
    fixed = sum(1 for f in resolved if f.outcome == "auto-remediated")
    paged = sum(1 for f in resolved if f.outcome == "escalated")
    recovery_chart, stats = recovery(facts, start, window)

    def share(count: int) -> str:
        return f"{count} ({round(100 * count / len(resolved))}%)" if resolved else str(count)

    tiles = [
        ("open now", str(sum(1 for f in facts if f.outcome == "open")), "warn"),
        ("opened", str(len(opened)), "info"),
        ("resolved", str(len(resolved)), "info"),
        ("auto-remediated", share(fixed), "good"),
        ("escalated", share(paged), "bad"),
    ]
    return {
        "window": window,
        "windows": list(WINDOWS.values()),
        "since": start,
        "tiles": tiles,
        "charts": [
            over_time(facts, start, window),
            by_service(facts, start, window),
            recovery_chart,
        ],
        "stats": stats,
        "outcomes": [(kind, OUTCOME_TONE[kind]) for kind in OUTCOMES],
    }


# ---------------------------------------------------------------------------- the router


def shift_router(service: Service, pages: Pages) -> APIRouter:
    """The history, silences and shift pages and their fragments."""
    router = APIRouter(include_in_schema=False)

    def history_context(request: Request, who: Principal) -> Context | Problem:
        asked = HistoryAsked.of(request)
        if isinstance(asked, str):
            return Problem(400, "Bad request", asked)
        return {"history": history(service, asked), "q": asked.q}

    def silences_context(request: Request, who: Principal) -> Context:
        return silences(service)

    def shift_context(request: Request, who: Principal) -> Context | Problem:
        name = request.query_params.get("window") or DEFAULT_WINDOW
        window = WINDOWS.get(name)
        if window is None:
            return Problem(400, "Bad request", f"window must be one of {', '.join(WINDOWS)}.")
        return shift(service, window)

    pages.route(router, "/history", "history.html", "_history.html", "History", history_context)
    pages.route(router, "/silences", LISTING, "_silences.html", "Silences", silences_context)
    pages.route(router, "/shift", "shift.html", "_shift.html", "Shift", shift_context)
    return router
