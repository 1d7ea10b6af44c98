"""The console's views for a whole shift: the history of resolved incidents (paged, searchable),
the silences, and the shift overview, whose pictures are drawn here as SVG (no chart library,
no CDN: the page stays self-contained under the console's content security policy).

Routes: `/history` (`?q=` searches title, service, labels and resolution; `?before=N` and
`?after=N` page through the incidents in the order they resolved), `/silences`, `/shift`
(`?window=1h|6h|12h|24h|7d`), and their `/fragments/...` for the live refresh.

Every number comes from the read models (never from the core's state), read under their lock
into plain tuples and computed on outside it; every time is the service's clock (a simulation's
simulated time). Every scan is bounded: a search looks through at most `SEARCH_SCAN` resolved
incidents per page, the overview through the incidents of its window (at most `SHIFT_SCAN`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from onduty.api.auth import Principal
from onduty.api.console import SECURITY_HEADERS, Row, _age, _row
from onduty.readmodel import IncidentView, SilenceView
from onduty.service import Service

Render = Callable[..., HTMLResponse]
Gate = Callable[..., Principal | Response]

HISTORY_PAGE = 25
SEARCH_SCAN = 20_000
"""Resolved incidents one page of a search looks through; past that, the page says so and
links to the next stretch."""
QUERY_LONGEST = 200
QUERY_TERMS = 8
SILENCES_EXPIRED_SHOWN = 20
SHIFT_SCAN = 100_000
"""Incidents the overview looks at, newest first, at most."""

OUTCOMES = ("auto-remediated", "resolved by itself", "escalated", "open")
"""How an incident went, in the order the charts stack them."""
OUTCOME_TONE = {
    "auto-remediated": "good",
    "resolved by itself": "info",
    "escalated": "bad",
    "open": "warn",
}


def outcome_of(status: str, escalated: bool, acted: bool) -> str:
    """`escalated`: people were paged; `auto-remediated`: onduty acted and nobody was paged;
    `resolved by itself`: the signals cleared with neither; `open`: not over yet."""
    if status != "resolved":
        return "open"
    if escalated:
        return "escalated"
    return "auto-remediated" if acted else "resolved by itself"


def group_labels(view: IncidentView) -> list[str]:
    """The labels the incident was grouped by (`key=value`), from its opening event."""
    for event in view.decisions.events()[:1]:
        if event.type == "IncidentOpened":
            key = event.data.get("group_key") or {}
            return [f"{k}={v}" for k, v in sorted(key.items())]
    return []


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


def history(service: Service, asked: HistoryAsked) -> HistoryShown:
    terms = asked.terms()
    scan = SEARCH_SCAN if terms else HISTORY_PAGE + 1
    with service.read.lock:
        projection = service.read.incidents
        order, incidents = projection.resolved, projection.incidents
        total = len(order)
        if asked.after is not None:
            low = min(asked.after + 1, total)
            high = min(total, low + scan)
            span = range(low, high)
        else:
            high = total if asked.before is None else min(asked.before, total)
            low = max(0, high - scan)
            span = range(high - 1, low - 1, -1)
        candidates = [(i, incidents[order[i]]) for i in span if order[i] in incidents]
        chosen: list[tuple[int, IncidentView, list[str]]] = []
        for position, view in candidates:
            labels = group_labels(view)
            if _matches(terms, view, labels):
                chosen.append((position, view, labels))
                if len(chosen) > HISTORY_PAGE:
                    break
        rows = [
            HistoryRow(
                row=_row(view),
                position=position,
                outcome=(kind := outcome_of(view.status, view.escalated, bool(view.actions))),
                tone=OUTCOME_TONE[kind],
                recovered=_age(view.resolved_at - view.opened_at) if view.resolved_at else "",
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


@dataclass(frozen=True)
class Window:
    name: str
    span: timedelta
    bucket: timedelta
    label: str


WINDOWS = {
    w.name: w
    for w in (
        Window("1h", timedelta(hours=1), timedelta(minutes=5), "the last hour"),
        Window("6h", timedelta(hours=6), timedelta(minutes=30), "the last 6 hours"),
        Window("12h", timedelta(hours=12), timedelta(hours=1), "the last 12 hours"),
        Window("24h", timedelta(hours=24), timedelta(hours=1), "the last 24 hours"),
        Window("7d", timedelta(days=7), timedelta(hours=12), "the last 7 days"),
    )
}
DEFAULT_WINDOW = "12h"


@dataclass(frozen=True)
class Fact:
    """One incident as the overview counts it."""

    service: str
    opened_at: datetime
    resolved_at: datetime | None
    outcome: str


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    tone: str
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "middle"
    kind: str = "axis"


@dataclass(frozen=True)
class Rule:
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Chart:
    """An SVG chart: rectangles with a title each, text and lines, in a `width` by `height`
    view box that scales to the page."""

    key: str
    title: str
    description: str
    width: int
    height: int
    rects: list[Rect] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    empty: str = ""


def shift_facts(service: Service, start: datetime) -> list[Fact]:
    """The incidents that matter to a window starting at `start`: opened in it, resolved in
    it, or still open; newest first, read under the lock without computing anything."""
    facts: list[Fact] = []
    oldest = start - timedelta(days=7)
    with service.read.lock:
        for scanned, view in enumerate(reversed(service.read.incidents.incidents.values())):
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
    return facts


def _nice_top(value: int) -> int:
    if value <= 4:
        return max(value, 1)
    magnitude = 10 ** int(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = int(math.ceil(value / (magnitude * step)) * magnitude * step)
        if top >= value:
            return top
    return value


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _moment(moment: datetime, window: Window) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%a %H:%M" if window.span > timedelta(days=1) else "%H:%M")


def over_time(facts: Sequence[Fact], start: datetime, window: Window) -> Chart:
    """Incidents opened per bucket of the window, stacked by how they went."""
    count = int(window.span / window.bucket)
    counts = [dict.fromkeys(OUTCOMES, 0) for _ in range(count)]
    for fact in facts:
        if fact.opened_at >= start:
            index = min(count - 1, int((fact.opened_at - start) / window.bucket))
            counts[index][fact.outcome] += 1
    chart = Chart(
        "over-time",
        f"Incidents opened in {window.label}",
        "",
        720,
        250,
    )
    left, right, top, bottom = 44, 10, 12, 34
    plot_w, plot_h = chart.width - left - right, chart.height - top - bottom
    highest = _nice_top(max((sum(c.values()) for c in counts), default=0))
    slot = plot_w / count
    for tick in (0, highest / 2, highest):
        y = top + plot_h - plot_h * tick / highest
        chart.rules.append(Rule(left, y, left + plot_w, y))
        text = f"{tick:g}" if tick == int(tick) else ""
        if text:
            chart.labels.append(Label(left - 6, y + 5, text, "end"))
    every = max(1, count // 6)
    totals: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
    for index, bucket in enumerate(counts):
        begins = start + window.bucket * index
        x = left + slot * index + slot * 0.12
        y = top + plot_h
        span = f"{_moment(begins, window)} to {_moment(begins + window.bucket, window)} UTC"
        for kind in OUTCOMES:
            value = bucket[kind]
            totals[kind] += value
            if not value:
                continue
            height = plot_h * value / highest
            y -= height
            chart.rects.append(
                Rect(x, y, slot * 0.76, height, OUTCOME_TONE[kind], f"{span}: {value} {kind}")
            )
        if index % every == 0:
            chart.labels.append(
                Label(left + slot * index, chart.height - 12, _moment(begins, window), "start")
            )
    opened = sum(totals.values())
    parts = [f"{totals[k]} {k}" for k in OUTCOMES if totals[k]]
    chart.description = f"{_plural(opened, 'incident')} opened in {window.label}" + (
        f": {', '.join(parts)}." if parts else "."
    )
    if not opened:
        chart.empty = f"No incident opened in {window.label}."
    return chart


def by_service(facts: Sequence[Fact], start: datetime, window: Window) -> Chart:
    """Per service (and in all), how the incidents of the window went: remediated by onduty,
    escalated to people, resolved by themselves, still open."""
    rows: dict[str, dict[str, int]] = {}
    for fact in facts:
        if (
            fact.opened_at >= start
            or fact.outcome == "open"
            or (fact.resolved_at is not None and fact.resolved_at >= start)
        ):
            rows.setdefault(fact.service, dict.fromkeys(OUTCOMES, 0))[fact.outcome] += 1
    shown = sorted(rows.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    if len(shown) > 10:
        rest = dict.fromkeys(OUTCOMES, 0)
        for _, counts in shown[9:]:
            for kind in OUTCOMES:
                rest[kind] += counts[kind]
        shown = [*shown[:9], (f"{len(shown) - 9} more services", rest)]
    everything = dict.fromkeys(OUTCOMES, 0)
    for _, counts in shown:
        for kind in OUTCOMES:
            everything[kind] += counts[kind]
    lines = [("all services", everything), *shown]
    row_h, top = 34, 8
    chart = Chart(
        "by-service",
        "Auto-remediated against escalated",
        "",
        720,
        top * 2 + row_h * len(lines),
    )
    left, right = 170, 60
    plot_w = chart.width - left - right
    for index, (name, counts) in enumerate(lines):
        y = top + row_h * index
        total = sum(counts.values())
        short = name if len(name) <= 22 else name[:21] + "…"
        chart.labels.append(Label(left - 8, y + row_h / 2 + 5, short, "end", "name"))
        x = float(left)
        for kind in OUTCOMES:
            value = counts[kind]
            if not value:
                continue
            width = plot_w * value / max(total, 1)
            share = round(100 * value / total)
            chart.rects.append(
                Rect(x, y + 6, width, row_h - 12, OUTCOME_TONE[kind],
                     f"{name}: {value} of {total} {kind} ({share}%)")
            )  # fmt: skip
            x += width
        chart.labels.append(Label(left + plot_w + 8, y + row_h / 2 + 5, str(total), "start"))
    fixed, paged = everything["auto-remediated"], everything["escalated"]
    chart.description = (
        f"In {window.label}: {fixed} auto-remediated, {paged} escalated to people, "
        f"{everything['resolved by itself']} resolved by themselves, {everything['open']} open."
    )
    if not sum(everything.values()):
        chart.empty = f"No incident in {window.label}."
    return chart


RECOVERY_BUCKETS = (
    ("< 1m", timedelta(minutes=1)),
    ("1-5m", timedelta(minutes=5)),
    ("5-15m", timedelta(minutes=15)),
    ("15-30m", timedelta(minutes=30)),
    ("30-60m", timedelta(hours=1)),
    ("1-4h", timedelta(hours=4)),
    ("> 4h", timedelta.max),
)


def recovery(facts: Sequence[Fact], start: datetime, window: Window) -> tuple[Chart, list[str]]:
    """How long the incidents resolved in the window took to recover, stacked by how, and the
    medians a shift lead quotes."""
    counts = [dict.fromkeys(OUTCOMES, 0) for _ in RECOVERY_BUCKETS]
    durations: dict[str, list[float]] = {kind: [] for kind in OUTCOMES}
    for fact in facts:
        if fact.resolved_at is None or fact.resolved_at < start:
            continue
        took = fact.resolved_at - fact.opened_at
        durations[fact.outcome].append(took.total_seconds())
        index = next(i for i, (_, limit) in enumerate(RECOVERY_BUCKETS) if took < limit)
        counts[index][fact.outcome] += 1
    title = f"Time to recover, incidents resolved in {window.label}"
    chart = Chart("recovery", title, "", 720, 250)
    left, right, top, bottom = 44, 10, 12, 34
    plot_w, plot_h = chart.width - left - right, chart.height - top - bottom
    highest = _nice_top(max((sum(c.values()) for c in counts), default=0))
    slot = plot_w / len(RECOVERY_BUCKETS)
    for tick in (0, highest / 2, highest):
        y = top + plot_h - plot_h * tick / highest
        chart.rules.append(Rule(left, y, left + plot_w, y))
        if tick == int(tick):
            chart.labels.append(Label(left - 6, y + 5, f"{tick:g}", "end"))
    for index, (name, _) in enumerate(RECOVERY_BUCKETS):
        x = left + slot * index + slot * 0.15
        y = top + plot_h
        for kind in OUTCOMES:
            value = counts[index][kind]
            if not value:
                continue
            height = plot_h * value / highest
            y -= height
            chart.rects.append(
                Rect(x, y, slot * 0.7, height, OUTCOME_TONE[kind],
                     f"recovered in {name}: {value} {kind}")
            )  # fmt: skip
        chart.labels.append(Label(left + slot * (index + 0.5), chart.height - 12, name))
    stats = []
    every = [d for kind in OUTCOMES for d in durations[kind]]
    if every:
        stats.append(f"median {_age(timedelta(seconds=statistics.median(every)))} over all "
                     f"{len(every)} resolved")  # fmt: skip
    for kind in ("auto-remediated", "escalated"):
        if durations[kind]:
            median = _age(timedelta(seconds=statistics.median(durations[kind])))
            stats.append(f"median {median} when {kind} ({len(durations[kind])})")
    chart.description = f"{_plural(len(every), 'incident')} resolved in {window.label}" + (
        f"; {'; '.join(stats)}." if stats else "."
    )
    if not every:
        chart.empty = f"No incident resolved in {window.label}."
    return chart, stats


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


def shift_router(service: Service, render: Render, gate: Gate) -> APIRouter:
    """The history, silences and shift pages and their fragments, rendered with the console's
    `render` and guarded by its `gate`."""
    router = APIRouter(include_in_schema=False)

    def page(
        request: Request,
        template: str,
        fragment: str,
        title: str,
        build: Callable[[], dict[str, Any] | str],
        partial: bool,
    ) -> Response:
        who = gate(request, fragment=partial)
        if isinstance(who, Response):
            return who
        context = build()
        if isinstance(context, str):
            if partial:
                return Response(context, status_code=400, headers=SECURITY_HEADERS)
            return render(request, "error.html", who, status_code=400, title="Bad request",
                          message=context)  # fmt: skip
        if partial:
            return render(request, fragment, who, **context)
        return render(request, template, who, title=title, **context)

    def history_context(request: Request) -> dict[str, Any] | str:
        asked = HistoryAsked.of(request)
        if isinstance(asked, str):
            return asked
        return {"history": history(service, asked), "q": asked.q}

    def shift_context(request: Request) -> dict[str, Any] | str:
        name = request.query_params.get("window") or DEFAULT_WINDOW
        window = WINDOWS.get(name)
        if window is None:
            return f"window must be one of {', '.join(WINDOWS)}."
        return shift(service, window)

    @router.get("/history", response_class=HTMLResponse)
    def history_page(request: Request) -> Response:
        return page(request, "history.html", "_history.html", "History",
                    lambda: history_context(request), False)  # fmt: skip

    @router.get("/fragments/history", response_class=HTMLResponse)
    def history_fragment(request: Request) -> Response:
        return page(request, "history.html", "_history.html", "History",
                    lambda: history_context(request), True)  # fmt: skip

    @router.get("/silences", response_class=HTMLResponse)
    def silences_page(request: Request) -> Response:
        return page(request, "silences.html", "_silences.html", "Silences",
                    lambda: silences(service), False)  # fmt: skip

    @router.get("/fragments/silences", response_class=HTMLResponse)
    def silences_fragment(request: Request) -> Response:
        return page(request, "silences.html", "_silences.html", "Silences",
                    lambda: silences(service), True)  # fmt: skip

    @router.get("/shift", response_class=HTMLResponse)
    def shift_page(request: Request) -> Response:
        return page(request, "shift.html", "_shift.html", "Shift",
                    lambda: shift_context(request), False)  # fmt: skip

    @router.get("/fragments/shift", response_class=HTMLResponse)
    def shift_fragment(request: Request) -> Response:
        return page(request, "shift.html", "_shift.html", "Shift",
                    lambda: shift_context(request), True)  # fmt: skip

    return router
