"""Distributions of a Monte Carlo run as pictures: per metric, a box plot and a histogram of the
values each mode (policy, baseline, control) produced over its seeds.

The data is plain: metric → mode → values (a value may be None: a run where the metric has no
value, e.g. no recovery time when nothing recovered; those are counted, not drawn). Charts are
the console's (`onduty.api.console.charts.Chart`: rectangles with a title each, labels and
rules in a view box), drawn as inline SVG by the report's template: no library, no CDN."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from onduty.api.console.charts import Chart, Label, Polyline, Rect, Rule

MODES = ("policy", "baseline", "control")
"""The usual modes, in the order they are drawn (others follow, sorted)."""
MODE_TONE = {"policy": "info", "baseline": "warn", "control": "quiet"}
MODE_WORD = {
    "policy": "with the policy",
    "baseline": "people alone (baseline)",
    "control": "no fault (control)",
}
DURATION_WORDS = ("mttd", "mttr", "wait", "within")
"""A metric whose name has one of these is a duration in seconds."""
BINS = 12


def is_duration(metric: str) -> bool:
    return any(word in metric for word in DURATION_WORDS) or metric.endswith("_s")


def span(seconds: float) -> str:
    """'45s', '4m 10s', '2h 05m': a duration to read at a glance."""
    negative, seconds = seconds < 0, abs(seconds)
    if seconds < 60:
        shown = f"{seconds:.0f}s" if seconds >= 10 or seconds == int(seconds) else f"{seconds:.1f}s"
    else:
        minutes, rest = divmod(round(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        shown = f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {rest:02d}s"
    return f"-{shown}" if negative else shown


def number(value: float) -> str:
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.3g}"


def shown(metric: str, value: float | None) -> str:
    """A metric's value as a person reads it ("-" for none)."""
    if value is None:
        return "-"
    return span(value) if is_duration(metric) else number(value)


@dataclass(frozen=True)
class Summary:
    """One mode's values of one metric, summarised."""

    mode: str
    values: list[float]
    missing: int
    """Runs in which the metric had no value."""

    @property
    def count(self) -> int:
        return len(self.values)

    def quantile(self, fraction: float) -> float | None:
        """Linear interpolation between the closest ranks (None for no values)."""
        if not self.values:
            return None
        ordered = sorted(self.values)
        place = fraction * (len(ordered) - 1)
        low = math.floor(place)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (place - low)

    @property
    def median(self) -> float | None:
        return self.quantile(0.5)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None


@dataclass
class Distribution:
    """One metric across the modes, with its two pictures."""

    metric: str
    summaries: list[Summary]
    charts: list[Chart] = field(default_factory=list)

    def of(self, mode: str) -> Summary | None:
        return next((item for item in self.summaries if item.mode == mode), None)

    @property
    def ratio(self) -> float | None:
        """The policy's mean over the baseline's, as the lab's table shows it (None when either
        is missing or 0)."""
        policy, baseline = self.of("policy"), self.of("baseline")
        if policy is None or baseline is None:
            return None
        top, bottom = policy.mean, baseline.mean
        if top is None or not bottom:
            return None
        return top / bottom


@dataclass
class Lab:
    """A Monte Carlo result as the report shows it."""

    distributions: list[Distribution]
    runs: int | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)


def _ordered_modes(modes: Iterable[Any]) -> list[str]:
    given = [str(mode) for mode in modes]
    known = [mode for mode in MODES if mode in given]
    return known + sorted(mode for mode in given if mode not in MODES)


def lab_of(lab: Any) -> Lab | None:
    """A Monte Carlo result from plain data: `{"metrics": {metric: {mode: [values]}}, "runs":
    N, ...}` (other top-level scalars are shown as facts), or the metrics mapping alone, or an
    object with `to_dict()` returning either."""
    if lab is None:
        return None
    if not isinstance(lab, Mapping) and hasattr(lab, "to_dict"):
        lab = lab.to_dict()
    if not isinstance(lab, Mapping):
        raise TypeError(f"a Monte Carlo result must be a mapping or have to_dict(), not {lab!r}")
    given = lab.get("metrics")
    metrics: Mapping[Any, Any] = given if isinstance(given, Mapping) else lab
    facts = [
        (str(key), str(value))
        for key, value in lab.items()
        if key != "metrics" and isinstance(value, str | int | float) and metrics is not lab
    ]
    runs = lab.get("runs") if metrics is not lab else None
    distributions = []
    for metric, by_mode in metrics.items():
        if not isinstance(by_mode, Mapping):
            continue
        summaries = []
        named = {str(mode): values for mode, values in by_mode.items()}
        for mode in _ordered_modes(named):
            raw = list(named[mode] or ())
            values = [float(v) for v in raw if v is not None and math.isfinite(float(v))]
            summaries.append(Summary(str(mode), values, len(raw) - len(values)))
        item = Distribution(str(metric), summaries)
        item.charts = [box_plot(item), histogram(item)]
        distributions.append(item)
    return Lab(distributions, int(runs) if isinstance(runs, int | float) else None, facts)


# ---------------------------------------------------------------------------- scales


def _range(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        return low - pad if low < 0 else min(low, max(0.0, low - pad)), high + pad
    if low >= 0 and low < (high - low) * 0.5:
        low = 0.0
    return low, high


def _ticks(low: float, high: float) -> list[float]:
    return [low, (low + high) / 2, high]


def _all_values(item: Distribution) -> list[float]:
    return [value for summary in item.summaries for value in summary.values]


def _empty(chart: Chart, item: Distribution) -> Chart:
    chart.empty = f"No run gave {item.metric} a value."
    return chart


# ---------------------------------------------------------------------------- box plots


def box_plot(item: Distribution) -> Chart:
    """One row per mode: the middle half as a box, min to max as a whisker, the median as a
    line; each shape titled with its numbers."""
    row_h, top, bottom, left, right = 34, 8, 28, 190, 20
    rows = item.summaries
    chart = Chart(
        f"box-{_key(item.metric)}",
        f"{item.metric}: spread",
        "",
        720,
        top + bottom + row_h * max(1, len(rows)),
    )
    values = _all_values(item)
    if not values:
        return _empty(chart, item)
    low, high = _range(values)
    width = chart.width - left - right

    def x(value: float) -> float:
        return left + width * (value - low) / (high - low)

    for tick, anchor in zip(_ticks(low, high), ("start", "middle", "end"), strict=True):
        chart.rules.append(Rule(x(tick), top, x(tick), chart.height - bottom))
        chart.labels.append(Label(x(tick), chart.height - 8, shown(item.metric, tick), anchor))
    parts = []
    for index, summary in enumerate(rows):
        y = top + row_h * index
        tone = MODE_TONE.get(summary.mode, "info")
        chart.labels.append(
            Label(left - 8, y + row_h / 2 + 5, MODE_WORD.get(summary.mode, summary.mode), "end",
                  "name")
        )  # fmt: skip
        if not summary.values:
            chart.labels.append(Label(left + 4, y + row_h / 2 + 5, "no value", "start"))
            continue
        q1, q3 = summary.quantile(0.25), summary.quantile(0.75)
        median = summary.median
        assert q1 is not None and q3 is not None and median is not None
        lo, hi = min(summary.values), max(summary.values)
        said = (
            f"{summary.mode}: median {shown(item.metric, median)}, middle half "
            f"{shown(item.metric, q1)} to {shown(item.metric, q3)}, range "
            f"{shown(item.metric, lo)} to {shown(item.metric, hi)} over {summary.count} runs"
        )
        middle = y + row_h / 2
        chart.rects.append(Rect(x(lo), middle - 1, max(1.0, x(hi) - x(lo)), 2, tone, said))
        chart.rects.append(Rect(x(q1), y + 7, max(2.0, x(q3) - x(q1)), row_h - 14, tone, said))
        chart.rects.append(Rect(x(median) - 1.5, y + 4, 3, row_h - 8, "median", said))
        parts.append(f"{MODE_WORD.get(summary.mode, summary.mode)} median "
                     f"{shown(item.metric, median)}")  # fmt: skip
    chart.description = f"{item.metric}: " + "; ".join(parts) + "."
    return chart


# ---------------------------------------------------------------------------- histograms


def histogram(item: Distribution) -> Chart:
    """How many runs fell in each of up to `BINS` equal ranges, the modes side by side."""
    top, bottom, left, right = 12, 34, 44, 10
    chart = Chart(f"hist-{_key(item.metric)}", f"{item.metric}: how often", "", 720, 220)
    values = _all_values(item)
    if not values:
        return _empty(chart, item)
    low, high = min(values), max(values)
    distinct = sorted(set(values))
    if len(distinct) <= BINS:  # few values (counts of actions): one bin per value
        edges = [(value, value) for value in distinct]
    else:
        step = (high - low) / BINS
        edges = [(low + step * i, low + step * (i + 1)) for i in range(BINS)]

    def bin_of(value: float) -> int:
        for index, (start, end) in enumerate(edges):
            if start <= value <= end if start == end else start <= value < end:
                return index
        return len(edges) - 1

    counts = {s.mode: [0] * len(edges) for s in item.summaries}
    for summary in item.summaries:
        for value in summary.values:
            counts[summary.mode][bin_of(value)] += 1
    highest = max(max(row) for row in counts.values())
    plot_w, plot_h = chart.width - left - right, chart.height - top - bottom
    for tick in (0, highest / 2, highest):
        y = top + plot_h - plot_h * tick / highest
        chart.rules.append(Rule(left, y, left + plot_w, y))
        if tick == int(tick):
            chart.labels.append(Label(left - 6, y + 5, f"{tick:g}", "end"))
    slot = plot_w / len(edges)
    modes = [summary.mode for summary in item.summaries]
    bar = slot * 0.8 / max(1, len(modes))
    every = max(1, len(edges) // 6)
    for index, (start, end) in enumerate(edges):
        where = (
            shown(item.metric, start)
            if start == end
            else f"{shown(item.metric, start)} to {shown(item.metric, end)}"
        )
        for place, mode in enumerate(modes):
            count = counts[mode][index]
            if not count:
                continue
            height = plot_h * count / highest
            chart.rects.append(
                Rect(left + slot * index + slot * 0.1 + bar * place, top + plot_h - height, bar,
                     height, MODE_TONE.get(mode, "info"), f"{mode}: {count} runs at {where}")
            )  # fmt: skip
        if index % every == 0:
            chart.labels.append(
                Label(left + slot * (index + 0.5), chart.height - 12, shown(item.metric, start))
            )
    runs = ", ".join(f"{len(s.values)} {s.mode}" for s in item.summaries)
    chart.description = f"Runs per range of {item.metric} ({runs})."
    return chart


def _key(metric: str) -> str:
    return "".join(char if char.isalnum() else "-" for char in metric)


# ---------------------------------------------------------------------------- learning curves


@dataclass
class Learning:
    """Learning curves (`onduty.sim.lab.learning_curve`): per config, per fault in order of
    injection, the share of seeds whose first action on it was right and its mean time to
    recover; with the side-by-side figures of the learning period and after it."""

    charts: list[Chart]
    rows: list[dict[str, Any]]
    labels: list[tuple[str, str]]
    """(config, tone) in the order drawn."""


def learning_of(data: Any) -> Learning | None:
    """The report's learning section from `learning_curve`'s plain data (None: nothing)."""
    if not isinstance(data, Mapping) or not data.get("series"):
        return None
    series = [item for item in data["series"] if isinstance(item, Mapping)]
    boundary = data.get("faults_in_period")
    charts = [
        _curve(
            "learning-right",
            "first action right, per fault in order of injection",
            series,
            "right",
            boundary,
            share=True,
        ),
        _curve(
            "learning-recovery",
            "time to recover (mean over seeds), per fault in order of injection",
            series,
            "recover_mean",
            boundary,
            share=False,
        ),
    ]
    rows = [dict(row) for row in data.get("rows") or () if isinstance(row, Mapping)]
    labels = [(str(item["label"]), str(item.get("tone") or "info")) for item in series]
    return Learning(charts, rows, labels)


def _curve(
    key: str,
    title: str,
    series: Sequence[Mapping[str, Any]],
    field_name: str,
    boundary: Any,
    *,
    share: bool,
) -> Chart:
    """One marker per config and fault (the n-th fault of a run, over the seeds that had one),
    each titled with its value; a rule where the learning period ends on average."""
    top, bottom, left, right = 12, 34, 60, 12
    chart = Chart(key, title, "", 720, 240)
    points = [
        (str(item["label"]), str(item.get("tone") or "info"), point)
        for item in series
        for point in item.get("points") or ()
        if point.get(field_name) is not None
    ]
    if not points:
        chart.empty = "No fault gave this a value."
        return chart
    values = [float(point[field_name]) for _, _, point in points]
    low, high = (0.0, 1.0) if share else (0.0, max(values) * 1.1 or 1.0)
    last = max(int(point["order"]) for _, _, point in points)
    plot_w, plot_h = chart.width - left - right, chart.height - top - bottom

    def x(order: float) -> float:
        return left + plot_w * (order - 0.5) / max(1, last)

    def y(value: float) -> float:
        return top + plot_h - plot_h * (value - low) / (high - low)

    def said(value: float) -> str:
        return f"{value:.0%}" if share else span(value)

    for tick in (low, (low + high) / 2, high):
        chart.rules.append(Rule(left, y(tick), left + plot_w, y(tick)))
        chart.labels.append(Label(left - 6, y(tick) + 5, said(tick), "end"))
    every = max(1, last // 10)
    for order in range(1, last + 1):
        if order % every == 0 or order == 1:
            chart.labels.append(Label(x(order), chart.height - 12, str(order)))
    if isinstance(boundary, int | float) and 0 < boundary < last:
        edge = x(float(boundary) + 0.5)
        chart.rules.append(Rule(edge, top, edge, top + plot_h))
        chart.labels.append(Label(edge + 4, top + 12, "end of the learning period", "start"))
    labels = list(dict.fromkeys(label for label, _, _ in points))
    width = min(10.0, plot_w / max(1, last) / (len(labels) + 1))
    for label, tone, point in points:
        offset = (labels.index(label) - (len(labels) - 1) / 2) * width
        value = float(point[field_name])
        chart.rects.append(
            Rect(x(int(point["order"])) + offset - width / 2, y(value) - 3, width, 6, tone,
                 f"{label}: fault {point['order']}: {said(value)} over {point['runs']} seeds")
        )  # fmt: skip
    for label in labels:  # each config's curve: the mean of the faults around each one
        mine = sorted(
            (int(point["order"]), float(point[field_name]))
            for named, _, point in points
            if named == label
        )
        tone = next(tone for named, tone, _ in points if named == label)
        smoothed = [
            (
                order,
                sum(v for _, v in mine[max(0, i - 1) : i + 2]) / len(mine[max(0, i - 1) : i + 2]),
            )
            for i, (order, _) in enumerate(mine)
        ]
        if len(smoothed) > 1:
            chart.lines.append(
                Polyline(
                    tuple((x(order), y(value)) for order, value in smoothed),
                    tone,
                    f"{label}: mean of each fault and its neighbours",
                )
            )
    chart.description = (
        f"{title}: " + "; ".join(labels) + f"; {last} faults in order of injection; each "
        "line is the mean of a fault and its neighbours."
    )
    return chart
