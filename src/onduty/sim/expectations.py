"""Expectations of a scenario: one line each, checked against the scorecard's metrics.

    mttr_p90 < 10m
    wrong_actions == 0
    escalated_within < 5m for tier critical
    slo_minutes_lost < 30 for service checkout
    guardrail_denials >= 1 for rule restart-budget

The grammar is `METRIC OP VALUE [for (tier|service|kind|rule) NAME]`: OP one of `<`, `<=`, `>`,
`>=`, `==`, `!=`; VALUE a number or a duration (`90s`, `10m`, `1h30m`: durations are compared
in seconds, as the metrics give them). A metric with no value (nothing to measure: no fault
recovered, nothing escalated) satisfies an upper bound (`<`, `<=`) and fails any other.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from onduty.values import parse_duration

Op = Literal["<", "<=", ">", ">=", "==", "!="]
GroupKind = Literal["tier", "service", "kind", "rule"]
Metrics = Mapping[str, float | None]

# The metrics a scorecard gives (`Scorecard.metrics()`), durations in seconds, in the order
# tables show them.
METRICS: tuple[str, ...] = (
    "faults",
    "signal_faults",
    "detected",
    "undetected",
    "auto_remediated",
    "escalated",
    "human_fixed",
    "unrecovered",
    "actions",
    "right_actions",
    "wrong_actions",
    "harmful_actions",
    "false_actions",
    "false_action_rate",
    "guardrail_denials",
    "approvals_requested",
    "approved",
    "approval_wait_p90",
    "mttd_median",
    "mttd_p90",
    "mttd_max",
    "mttr_median",
    "mttr_p90",
    "mttr_max",
    "escalated_within",
    "slo_minutes_lost",
    "control_incidents",
    "open_incidents",
    "firing_alerts",
    "refused_signals",
)
# The state of the fleet at one moment, for steady-state hypotheses (`World.steady_metrics`).
STEADY_METRICS: tuple[str, ...] = (
    "firing_alerts",
    "instances_down",
    "degraded_services",
    "open_incidents",
)
# What a hypothesis held *during* the run may name: the fleet's state at each evaluation step.
DURING_METRICS: tuple[str, ...] = ("firing_alerts", "instances_down", "degraded_services")
# The metrics that are durations (seconds): the times to detect and recover, the approval wait
# and the longest wait for a human.
DURATION_METRICS = frozenset(
    name
    for name in METRICS
    if name.startswith(("mttd_", "mttr_", "approval_wait_")) or name == "escalated_within"
)
GROUP_KINDS: tuple[GroupKind, ...] = ("tier", "service", "kind", "rule")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}
_EXPRESSION = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.-]*)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S+)"
    r"(?:\s+for\s+(?P<group>\S+)\s+(?P<name>\S+))?\s*$"
)
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")


class ExpectationError(ValueError):
    """An expectation that cannot be read; the message names where it is."""


@dataclass(frozen=True)
class Expectation:
    """One parsed expectation. `value` is in the metric's unit (seconds for durations)."""

    text: str
    metric: str
    op: Op
    value: float
    value_text: str
    group: tuple[GroupKind, str] | None = None

    @property
    def name(self) -> str:
        """The metric, with its group: `escalated_within for tier critical`."""
        if self.group is None:
            return self.metric
        return f"{self.metric} for {self.group[0]} {self.group[1]}"

    @property
    def bound(self) -> str:
        return f"{self.op} {self.value_text}"


@dataclass(frozen=True)
class Check:
    """The outcome of one expectation: its name, its bound, what was measured, and whether it
    holds."""

    name: str
    bound: str
    actual: float | None
    ok: bool


def _value(text: str, metric: str, where: str) -> float:
    if _NUMBER.match(text):
        return float(text)
    if _DURATION.match(text):
        seconds = sum(
            parse_duration(f"{number}{unit}").total_seconds()
            for number, unit in _DURATION_PART.findall(text)
        )
        if metric not in DURATION_METRICS and metric not in ("slo_minutes_lost",):
            raise ExpectationError(
                f"{where}: {metric} is a count, not a duration; compare it with a number"
            )
        if metric == "slo_minutes_lost":
            return seconds / 60.0  # counted in minutes
        return seconds
    raise ExpectationError(f"{where}: {text!r} is neither a number nor a duration (10m, 90s)")


def parse_expectation(
    text: str, where: str = "expect", metrics: tuple[str, ...] = METRICS
) -> Expectation:
    """Read one expectation; raise ExpectationError naming `where` (`expect[2]`)."""
    if not isinstance(text, str) or not text.strip():
        raise ExpectationError(f"{where}: an expectation is a line like `mttr_p90 < 10m`")
    match = _EXPRESSION.match(text)
    if match is None:
        raise ExpectationError(
            f"{where}: cannot read {text.strip()!r}; write METRIC OP VALUE "
            "[for tier|service|kind|rule NAME], e.g. `mttr_p90 < 10m`"
        )
    metric = match["metric"]
    if metric not in metrics:
        close = difflib.get_close_matches(metric, metrics, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(metrics)
        raise ExpectationError(f"{where}: unknown metric {metric!r} ({hint})")
    group: tuple[GroupKind, str] | None = None
    if match["group"] is not None:
        kind = match["group"]
        if kind not in GROUP_KINDS:
            raise ExpectationError(
                f"{where}: `for {kind}`: a group is one of {', '.join(GROUP_KINDS)}"
            )
        if kind == "rule" and metric != "guardrail_denials":
            raise ExpectationError(f"{where}: only guardrail_denials can be counted per rule")
        group = (kind, match["name"])
    op: Op = match["op"]  # type: ignore[assignment]
    return Expectation(
        text=text.strip(),
        metric=metric,
        op=op,
        value=_value(match["value"], metric, where),
        value_text=match["value"],
        group=group,
    )


def check(
    expectation: Expectation,
    metrics: Metrics,
    by_group: Callable[[tuple[str, str]], Metrics] | None = None,
) -> Check:
    """Whether `expectation` holds for `metrics` (those of its group, through `by_group`, when
    it names one). A metric with no value holds an upper bound and fails any other."""
    source = metrics
    if expectation.group is not None:
        if by_group is None:
            return Check(expectation.name, expectation.bound, None, False)
        source = by_group(expectation.group)
    actual = source.get(expectation.metric)
    if actual is None:
        ok = expectation.op in ("<", "<=")
    else:
        ok = _OPS[expectation.op](float(actual), expectation.value)
    return Check(expectation.name, expectation.bound, actual, ok)


LEGACY: dict[str, tuple[str, str]] = {
    "detected_min": ("detected", ">="),
    "auto_remediated_min": ("auto_remediated", ">="),
    "escalated_min": ("escalated", ">="),
    "approved_min": ("approved", ">="),
    "guardrail_denials_min": ("guardrail_denials", ">="),
    "human_fixed_min": ("human_fixed", ">="),
    # The old `wrong_actions` were actions on a healthy target: false actions now.
    "wrong_actions_max": ("false_actions", "<="),
    "control_incidents_max": ("control_incidents", "<="),
}


def from_mapping(document: Mapping[str, object]) -> list[str]:
    """The expressions the old mapping form (`detected_min: 3`, `denied_by: [rule]`) says."""
    lines: list[str] = []
    for key, (metric, op) in LEGACY.items():
        value = document.get(key)
        if value is not None:
            lines.append(f"{metric} {op} {value}")
    denied = document.get("denied_by") or []
    if isinstance(denied, list):
        lines += [f"guardrail_denials >= 1 for rule {rule}" for rule in denied]
    return lines


class Watch:
    """Steady-state hypotheses that must hold during the whole run, checked at every evaluation
    step: each keeps the first moment that broke it (and the value then), or, while it holds,
    the value nearest to breaking it."""

    def __init__(self, expectations: list[Expectation]) -> None:
        self.expectations = expectations
        self._nearest: list[float | None] = [None] * len(expectations)
        self._broken: list[tuple[float, datetime] | None] = [None] * len(expectations)

    def observe(self, metrics: Metrics, at: datetime) -> None:
        for index, expectation in enumerate(self.expectations):
            if self._broken[index] is not None:
                continue
            value = metrics.get(expectation.metric)
            if value is None:
                continue
            if not _OPS[expectation.op](float(value), expectation.value):
                self._broken[index] = (float(value), at)
                continue
            nearest = self._nearest[index]
            upper = expectation.op in ("<", "<=")
            if nearest is None or (value > nearest if upper else value < nearest):
                self._nearest[index] = float(value)

    def checks(self) -> list[Check]:
        """One check per hypothesis: broken (with when) or held all along."""
        found: list[Check] = []
        for index, expectation in enumerate(self.expectations):
            broken = self._broken[index]
            if broken is None:
                found.append(Check(expectation.name, expectation.bound, self._nearest[index], True))
            else:
                value, at = broken
                name = f"{expectation.name} (broken at {at:%H:%M:%S})"
                found.append(Check(name, expectation.bound, value, False))
        return found
