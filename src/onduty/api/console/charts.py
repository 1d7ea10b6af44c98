"""The shift overview's pictures, drawn as SVG shapes (no chart library, no CDN: the page stays
self-contained under the console's content security policy): incidents opened over time,
how each service's incidents went, and how long they took to recover.

Each chart is computed from plain `Fact`s (never the read models) into a `Chart` of
rectangles, labels and rules that the template draws."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from onduty.api.console.pages import age

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


@dataclass(frozen=True)
class Polyline:
    """A line through points, in a tone: a curve drawn over the marks it summarises."""

    points: tuple[tuple[float, float], ...]
    tone: str
    title: str


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
    lines: list[Polyline] = field(default_factory=list)
    empty: str = ""


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


def _summed(rows: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total = dict.fromkeys(OUTCOMES, 0)
    for counts in rows:
        for kind in OUTCOMES:
            total[kind] += counts[kind]
    return total


# ---------------------------------------------------------------------------- column charts


@dataclass(frozen=True)
class _Plot:
    """The plotting area of a column chart, with its y axis from 0 to `highest`."""

    left: int
    top: int
    width: int
    height: int
    highest: int


def _column_plot(chart: Chart, columns: Sequence[Mapping[str, int]]) -> _Plot:
    """The plotting area for `columns` of stacked counts, with its three horizontal rules
    (0, half, top) labelled where they are whole numbers."""
    left, right, top, bottom = 44, 10, 12, 34
    plot_w, plot_h = chart.width - left - right, chart.height - top - bottom
    highest = _nice_top(max((sum(c.values()) for c in columns), default=0))
    for tick in (0, highest / 2, highest):
        y = top + plot_h - plot_h * tick / highest
        chart.rules.append(Rule(left, y, left + plot_w, y))
        if tick == int(tick):
            chart.labels.append(Label(left - 6, y + 5, f"{tick:g}", "end"))
    return _Plot(left, top, plot_w, plot_h, highest)


def _stack(
    chart: Chart,
    plot: _Plot,
    x: float,
    width: float,
    counts: Mapping[str, int],
    what: str,
) -> None:
    """One column: a rectangle per outcome with a count, stacked from the bottom up, each
    titled "`what`: count outcome"."""
    y: float = plot.top + plot.height
    for kind in OUTCOMES:
        value = counts[kind]
        if not value:
            continue
        height = plot.height * value / plot.highest
        y -= height
        chart.rects.append(Rect(x, y, width, height, OUTCOME_TONE[kind], f"{what}: {value} {kind}"))


def over_time(facts: Sequence[Fact], start: datetime, window: Window) -> Chart:
    """Incidents opened per bucket of the window, stacked by how they went."""
    count = int(window.span / window.bucket)
    counts = [dict.fromkeys(OUTCOMES, 0) for _ in range(count)]
    for fact in facts:
        if fact.opened_at >= start:
            index = min(count - 1, int((fact.opened_at - start) / window.bucket))
            counts[index][fact.outcome] += 1
    chart = Chart("over-time", f"Incidents opened in {window.label}", "", 720, 250)
    plot = _column_plot(chart, counts)
    slot = plot.width / count
    every = max(1, count // 6)
    for index, bucket in enumerate(counts):
        begins = start + window.bucket * index
        span = f"{_moment(begins, window)} to {_moment(begins + window.bucket, window)} UTC"
        x = plot.left + slot * index + slot * 0.12
        _stack(chart, plot, x, slot * 0.76, bucket, span)
        if index % every == 0:
            chart.labels.append(
                Label(plot.left + slot * index, chart.height - 12, _moment(begins, window), "start")
            )
    totals = _summed(counts)
    opened = sum(totals.values())
    parts = [f"{totals[k]} {k}" for k in OUTCOMES if totals[k]]
    chart.description = f"{_plural(opened, 'incident')} opened in {window.label}" + (
        f": {', '.join(parts)}." if parts else "."
    )
    if not opened:
        chart.empty = f"No incident opened in {window.label}."
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
    plot = _column_plot(chart, counts)
    slot = plot.width / len(RECOVERY_BUCKETS)
    for index, (name, _) in enumerate(RECOVERY_BUCKETS):
        x = plot.left + slot * index + slot * 0.15
        _stack(chart, plot, x, slot * 0.7, counts[index],
               f"recovered in {name}")  # fmt: skip
        chart.labels.append(Label(plot.left + slot * (index + 0.5), chart.height - 12, name))
    stats = []
    every = [d for kind in OUTCOMES for d in durations[kind]]
    if every:
        stats.append(f"median {age(timedelta(seconds=statistics.median(every)))} over all "
                     f"{len(every)} resolved")  # fmt: skip
    for kind in ("auto-remediated", "escalated"):
        if durations[kind]:
            median = age(timedelta(seconds=statistics.median(durations[kind])))
            stats.append(f"median {median} when {kind} ({len(durations[kind])})")
    chart.description = f"{_plural(len(every), 'incident')} resolved in {window.label}" + (
        f"; {'; '.join(stats)}." if stats else "."
    )
    if not every:
        chart.empty = f"No incident resolved in {window.label}."
    return chart, stats


# ---------------------------------------------------------------------------- bars


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
        rest = _summed(counts for _, counts in shown[9:])
        shown = [*shown[:9], (f"{len(shown) - 9} more services", rest)]
    everything = _summed(counts for _, counts in shown)
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
