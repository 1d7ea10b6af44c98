"""Prometheus-style alerting rules over the fleet, emitting what Alertmanager would deliver.

Each evaluation looks at every series of every rule: a true condition makes an alert pending
(`active_at`), and firing once it has held for the rule's `for:`; a false condition (or no data)
drops a pending alert silently and resolves a firing one. Notifications follow Prometheus: a
signal when an alert starts firing, a re-send every `resend_interval` while it fires, a signal
when it resolves, and that resolution re-sent once `resend_interval` later. A lost notification
therefore comes back within `resend_interval`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import quote_plus

from onduty.config import format_duration
from onduty.events import Signal, to_json
from onduty.sim.fleet import Fleet

DEFAULT_RESEND_INTERVAL = timedelta(minutes=5)

Measure = Callable[[Fleet, str], float | None]


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable identity of an alert: sha256 of its sorted labels, 16 hex digits."""
    return hashlib.sha256(to_json(dict(sorted(labels.items())))).hexdigest()[:16]


@dataclass(frozen=True)
class Rule:
    """One alerting rule. `measure` gives a series' value (None: no data); `breached` tells
    whether that value makes the alert condition true."""

    alertname: str
    scope: Literal["instance", "service", "endpoint"]
    expr: str
    for_: timedelta
    severity: str
    measure: Measure
    breached: Callable[[float], bool]
    summary: str
    description: str

    @property
    def generator_url(self) -> str:
        return "sim://prometheus/graph?g0.expr=" + quote_plus(self.expr) + "&g0.tab=1"

    def series(self, fleet: Fleet) -> list[tuple[dict[str, str], float | None]]:
        """Every series the rule looks at, in fleet order, with its labels and value."""
        if self.scope == "endpoint":
            return [
                (self.endpoint_labels(fleet, service, endpoint), value)
                for service, endpoints in fleet.endpoint_errors.items()
                for endpoint, value in endpoints.items()
            ]
        return [(labels, self.measure(fleet, name)) for labels, name in self.measured(fleet)]

    def measured(self, fleet: Fleet) -> list[tuple[dict[str, str], str]]:
        """For an instance or service rule: every series' labels, in fleet order, with the
        name its `measure` is given. They change only when the fleet gains an instance."""
        if self.scope == "instance":
            return [
                (
                    {
                        "alertname": self.alertname,
                        "service": state.name,
                        "instance": name,
                        "region": fleet.instances[name].region,
                        "severity": self.severity,
                    },
                    name,
                )
                for state in fleet.services.values()
                for name in state.instances
            ]
        if self.scope == "service":
            return [
                (
                    {
                        "alertname": self.alertname,
                        "service": state.name,
                        "region": state.region,
                        "severity": self.severity,
                    },
                    state.name,
                )
                for state in fleet.services.values()
            ]
        return []

    def endpoint_labels(self, fleet: Fleet, service: str, endpoint: str) -> dict[str, str]:
        """The labels of an endpoint rule's series for `endpoint` of `service`."""
        return {
            "alertname": self.alertname,
            "service": service,
            "endpoint": endpoint,
            "region": fleet.services[service].region,
            "severity": self.severity,
        }

    def annotations(self, labels: Mapping[str, str], value: float) -> dict[str, str]:
        fields = {**labels, "value": value, "for": format_duration(self.for_)}
        return {
            "summary": self.summary.format(**fields),
            "description": self.description.format(**fields),
        }


def _up(fleet: Fleet, instance: str) -> float:
    return 1.0 if fleet.instances[instance].up else 0.0


def _memory(fleet: Fleet, instance: str) -> float | None:
    target = fleet.instances[instance]
    return target.memory_pct if target.up else None  # a down target exports no metrics


def _disk(fleet: Fleet, instance: str) -> float | None:
    target = fleet.instances[instance]
    return target.disk_pct if target.up else None


def _endpoint(fleet: Fleet, key: str) -> float | None:
    return None  # endpoint series carry their value (see Rule.series)


def _error_rate(fleet: Fleet, service: str) -> float | None:
    return fleet.service_error_rate(service)


def _latency(fleet: Fleet, service: str) -> float | None:
    return fleet.service_latency_p99(service)


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        alertname="InstanceDown",
        scope="instance",
        expr="up == 0",
        for_=timedelta(minutes=1),
        severity="critical",
        measure=_up,
        breached=lambda value: value == 0,
        summary="{instance} ({service}) is down",
        description="{instance} of service {service} in {region} has not answered for more "
        "than {for}.",
    ),
    Rule(
        alertname="HighErrorRate",
        scope="service",
        expr='sum by (service) (rate(http_requests_total{code=~"5.."}[5m])) / '
        "sum by (service) (rate(http_requests_total[5m])) > 0.05",
        for_=timedelta(minutes=2),
        severity="critical",
        measure=_error_rate,
        breached=lambda value: value > 0.05,
        summary="{service}: {value:.1%} of requests fail",
        description="The error ratio of {service} in {region} is {value:.1%}, above 5% for "
        "more than {for}.",
    ),
    Rule(
        alertname="HighMemoryUsage",
        scope="instance",
        expr="process_resident_memory_percent > 90",
        for_=timedelta(minutes=2),
        severity="warning",
        measure=_memory,
        breached=lambda value: value > 90,
        summary="{instance} ({service}) uses {value:.0f}% of its memory",
        description="Resident memory of {instance} is {value:.1f}%, above 90% for more than {for}.",
    ),
    Rule(
        alertname="HighLatency",
        scope="service",
        expr="histogram_quantile(0.99, sum by (service, le) "
        "(rate(http_request_duration_seconds_bucket[5m]))) > 1",
        for_=timedelta(minutes=2),
        severity="warning",
        measure=_latency,
        breached=lambda value: value > 1000,
        summary="{service}: p99 latency {value:.0f} ms",
        description="The p99 request latency of {service} in {region} is {value:.0f} ms, "
        "above 1000 ms for more than {for}.",
    ),
    Rule(
        alertname="DiskFull",
        scope="instance",
        expr="disk_used_percent > 95",
        for_=timedelta(minutes=1),
        severity="critical",
        measure=_disk,
        breached=lambda value: value > 95,
        summary="{instance} ({service}): disk {value:.0f}% full",
        description="The data disk of {instance} is {value:.1f}% full, above 95% for more "
        "than {for}.",
    ),
    Rule(
        alertname="EndpointErrors",
        scope="endpoint",
        expr='sum by (service, endpoint) (rate(http_requests_total{code=~"5.."}[5m])) / '
        "sum by (service, endpoint) (rate(http_requests_total[5m])) > 0.1",
        for_=timedelta(minutes=2),
        severity="warning",
        measure=_endpoint,
        breached=lambda value: value > 0.1,
        summary="{service} {endpoint}: {value:.0%} of requests fail",
        description="The error ratio of {endpoint} on {service} is {value:.1%}, above 10% for "
        "more than {for}.",
    ),
)


@dataclass
class Alert:
    """One alert instance (a rule and one series' labels) as the evaluator tracks it."""

    rule: Rule
    labels: dict[str, str]
    fingerprint: str
    state: Literal["pending", "firing", "resolved"]
    active_at: datetime
    annotations: dict[str, str] = field(default_factory=dict)
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    last_sent_at: datetime | None = None
    resolved_sends: int = 0
    annotated: float | None = field(default=None, repr=False, compare=False)
    """The value `annotations` were written for."""


class _Series:
    """One series of a rule, its labels built once (and its fingerprint once needed)."""

    __slots__ = ("_key", "labels", "target")

    def __init__(self, labels: dict[str, str], target: str) -> None:
        self.labels = labels
        self.target = target
        self._key: str | None = None

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = fingerprint(self.labels)
        return self._key


class AlertEvaluator:
    """Evaluates the rules at each call and returns the notifications due, in a fixed order
    (rule order, then sorted labels)."""

    def __init__(
        self,
        rules: Sequence[Rule] = DEFAULT_RULES,
        resend_interval: timedelta = DEFAULT_RESEND_INTERVAL,
        source: str = "sim",
    ) -> None:
        self.rules = tuple(rules)
        self.resend_interval = resend_interval
        self.source = source
        self.alerts: dict[str, Alert] = {}
        # The series of each rule, built once per fleet and shape (see `_series`).
        self._fleet: Fleet | None = None
        self._shape = (0, 0)
        self._measured: list[list[_Series]] = []
        self._endpoints: dict[tuple[int, str, str], _Series] = {}

    def evaluate(self, fleet: Fleet, now: datetime) -> list[Signal]:
        due: list[tuple[int, tuple[tuple[str, str], ...], Signal]] = []
        self._check_shape(fleet)
        alerts = self.alerts
        for index, rule in enumerate(self.rules):
            seen: set[str] = set()
            for series, value in self._breached(index, rule, fleet):
                key = series.key
                seen.add(key)
                alert = alerts.get(key)
                if alert is None or alert.state == "resolved":
                    alert = Alert(rule, dict(series.labels), key, "pending", active_at=now)
                    alerts[key] = alert
                if alert.annotated is None or alert.annotated != value or alert.rule is not rule:
                    alert.annotations = rule.annotations(series.labels, value)
                    alert.annotated = value
                if alert.state == "pending" and now - alert.active_at >= rule.for_:
                    alert.state = "firing"
                    alert.fired_at = now
            if not alerts:
                continue
            for key, alert in [item for item in alerts.items() if item[1].rule is rule]:
                if key not in seen:
                    if alert.state == "pending":
                        del alerts[key]
                        continue
                    if alert.state == "firing":
                        alert.state = "resolved"
                        alert.resolved_at = now
                signal = self._notification(alert, now)
                if signal is not None:
                    due.append((index, tuple(sorted(alert.labels.items())), signal))
                if alert.state == "resolved" and alert.resolved_sends >= 2:
                    del alerts[key]
        due.sort(key=lambda item: (item[0], item[1]))
        return [signal for _, _, signal in due]

    def _check_shape(self, fleet: Fleet) -> None:
        """Forget the series built for another fleet, or before the fleet gained an instance
        (instances and services are never removed, so their counts tell a new shape)."""
        shape = (len(fleet.services), len(fleet.instances))
        if fleet is not self._fleet or shape != self._shape:
            self._fleet = fleet
            self._shape = shape
            self._measured = [
                [_Series(labels, name) for labels, name in rule.measured(fleet)]
                for rule in self.rules
            ]
            self._endpoints = {}

    def _breached(self, index: int, rule: Rule, fleet: Fleet) -> list[tuple[_Series, float]]:
        """The series of `rule.series` (labels cached) whose value breaches the rule, in
        order, with that value."""
        breached = rule.breached
        if rule.scope != "endpoint":
            measure = rule.measure
            return [
                (series, value)
                for series in self._measured[index]
                if (value := measure(fleet, series.target)) is not None and breached(value)
            ]
        found: list[tuple[_Series, float]] = []
        cache = self._endpoints
        for service, endpoints in fleet.endpoint_errors.items():
            for endpoint, value in endpoints.items():
                if value is None or not breached(value):
                    continue
                series = cache.get((index, service, endpoint))
                if series is None:
                    labels = rule.endpoint_labels(fleet, service, endpoint)
                    series = cache[(index, service, endpoint)] = _Series(labels, endpoint)
                found.append((series, value))
        return found

    def firing(self) -> list[dict[str, str]]:
        """Labels of the alerts firing now, in a stable order."""
        found = [dict(a.labels) for a in self.alerts.values() if a.state == "firing"]
        return sorted(found, key=lambda labels: sorted(labels.items()))

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {
                "fingerprint": key,
                "state": alert.state,
                "active_at": alert.active_at.isoformat(),
                "fired_at": alert.fired_at.isoformat() if alert.fired_at else None,
                "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
                "last_sent_at": alert.last_sent_at.isoformat() if alert.last_sent_at else None,
                "resolved_sends": alert.resolved_sends,
            }
            for key, alert in sorted(self.alerts.items())
        ]

    def _notification(self, alert: Alert, now: datetime) -> Signal | None:
        if alert.state == "pending":
            return None
        if alert.state == "firing":
            if alert.last_sent_at is not None and now - alert.last_sent_at < self.resend_interval:
                return None
        elif alert.resolved_sends >= 2 or (
            alert.resolved_sends == 1
            and alert.resolved_at is not None
            and now - alert.resolved_at < self.resend_interval
        ):
            return None
        else:
            alert.resolved_sends += 1
        alert.last_sent_at = now
        return Signal(
            source=self.source,
            fingerprint=alert.fingerprint,
            status="resolved" if alert.state == "resolved" else "firing",
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            starts_at=alert.fired_at,
            ends_at=alert.resolved_at if alert.state == "resolved" else None,
            generator_url=alert.rule.generator_url,
        )
