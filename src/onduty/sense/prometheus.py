"""A Prometheus instant query as a signal source, evaluated like an alerting rule.

`PrometheusSource.poll` runs `GET {url}/api/v1/query?query=...` and compares every series of
the answer (an instant vector, or a scalar) with the threshold. A series for which the condition
holds becomes pending, and firing once it has held for `for`; a firing series is re-sent every
`resend`, and resolves when the condition stops holding or the series leaves the result. A
pending series whose condition stops holding is dropped silently.

When Prometheus itself fails (unreachable, an HTTP error, `"status": "error"`, a timeout, an
answer that is not the API's) the poll raises `PollError` and no state changes: a broken
monitoring system must look neither like a healthy fleet nor like a failing one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx

from onduty.events import Signal, SignalReceived
from onduty.httpbits import connect_error_reason
from onduty.sense.pollers import (
    HttpSource,
    PollError,
    fingerprint,
)
from onduty.sense.specs import COMPARE, PrometheusQuery
from onduty.values import format_duration

SOURCE = "prometheus"
_BODY_EXCERPT = 300


@dataclass(frozen=True)
class Sample:
    """One series of a query result: its metric labels (with `__name__` if any) and value."""

    metric: dict[str, str]
    value: float


@dataclass
class SeriesAlert:
    labels: dict[str, str]
    state: Literal["pending", "firing"]
    active_at: datetime
    sample: Sample
    fired_at: datetime | None = None
    last_sent_at: datetime | None = None


def format_value(value: float) -> str:
    """Prometheus's spelling of a sample value: 0, 0.25, NaN, +Inf, 1e+21."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_series(metric: dict[str, str]) -> str:
    """`name{a="x", b="y"}` (labels sorted, `__name__` in front), or `{}` for no labels."""
    name = metric.get("__name__", "")
    rest = sorted((key, value) for key, value in metric.items() if key != "__name__")
    inner = ", ".join(f'{key}="{_escape(value)}"' for key, value in rest)
    if not rest:
        return name or "{}"
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _parse_value(raw: Any, where: str) -> float:
    if not (isinstance(raw, list) and len(raw) == 2):
        raise PollError(f"unexpected answer from Prometheus: {where} is not [time, value]")
    try:
        return float(raw[1])
    except (TypeError, ValueError):
        raise PollError(
            f"unexpected answer from Prometheus: {where} has value {raw[1]!r}"
        ) from None


def parse_query_response(body: Any) -> list[Sample]:
    """The samples of a successful `/api/v1/query` answer (vector or scalar).

    Raises `PollError` for an error answer, with Prometheus's `errorType` and `error`."""
    if not isinstance(body, dict):
        raise PollError("unexpected answer from Prometheus: not a JSON object")
    status = body.get("status")
    if status == "error":
        error_type = body.get("errorType") or "error"
        message = body.get("error") or "no message"
        raise PollError(f"Prometheus answered {error_type}: {message}")
    if status != "success":
        raise PollError(f"unexpected answer from Prometheus: status {status!r}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise PollError("unexpected answer from Prometheus: no data")
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar":
        return [Sample({}, _parse_value(result, "the scalar"))]
    if result_type != "vector":
        raise PollError(
            f"the query returned a {result_type}; expected an instant vector or a scalar"
        )
    if not isinstance(result, list):
        raise PollError("unexpected answer from Prometheus: the vector is not a list")
    samples: list[Sample] = []
    for index, item in enumerate(result):
        if not isinstance(item, dict) or not isinstance(item.get("metric", {}), dict):
            raise PollError(f"unexpected answer from Prometheus: series {index} is malformed")
        metric = {str(key): str(value) for key, value in item.get("metric", {}).items()}
        samples.append(Sample(metric, _parse_value(item.get("value"), f"series {index}")))
    return samples


class PrometheusSource(HttpSource[PrometheusQuery]):
    """Runs one `PrometheusQuery`; keeps pending/firing state per series between polls."""

    def __init__(
        self,
        spec: PrometheusQuery,
        client: httpx.AsyncClient,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(spec, client, env=env)
        self._compare = COMPARE[spec.op]
        self.alerts: dict[str, SeriesAlert] = {}
        """Pending and firing series, by fingerprint."""

    @property
    def generator_url(self) -> str:
        return f"{self.spec.url}/graph?g0.expr={quote_plus(self.spec.query)}&g0.tab=1"

    def __repr__(self) -> str:
        firing = sum(1 for alert in self.alerts.values() if alert.state == "firing")
        return (
            f"PrometheusSource(name={self.spec.name!r}, url={self.spec.url!r}, "
            f"query={self.spec.query!r}, firing={firing}, pending={len(self.alerts) - firing})"
        )

    async def query(self) -> list[Sample]:
        """Run the instant query once; raises `PollError` when Prometheus cannot answer."""
        spec = self.spec
        seconds = spec.timeout.total_seconds()
        endpoint = f"{spec.url}/api/v1/query"
        try:
            async with asyncio.timeout(seconds):
                response = await self._client.get(
                    endpoint,
                    # Prometheus stops evaluating a query past its own timeout, too.
                    params={"query": spec.query, "timeout": f"{seconds:g}"},
                    headers=self._headers.as_dict(),
                    timeout=httpx.Timeout(seconds),
                )
        except (TimeoutError, httpx.TimeoutException):
            raise PollError(
                f"Prometheus at {spec.url} did not answer within {format_duration(spec.timeout)}"
            ) from None
        except httpx.ConnectError as error:
            raise PollError(
                f"cannot reach Prometheus at {spec.url}: {connect_error_reason(error)}"
            ) from None
        except httpx.HTTPError as error:
            raise PollError(
                f"request to Prometheus at {spec.url} failed: {type(error).__name__}: {error}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            excerpt = " ".join(response.text[:_BODY_EXCERPT].split())
            raise PollError(
                f"Prometheus at {spec.url} answered HTTP {response.status_code} "
                f"{response.reason_phrase}, not the query API's JSON: {excerpt!r}"
            ) from None
        api_error = isinstance(body, dict) and body.get("status") == "error"
        if response.is_error and not api_error:
            raise PollError(
                f"Prometheus at {spec.url} answered HTTP {response.status_code} "
                f"{response.reason_phrase}"
            )
        # An error answer raises here, with Prometheus's errorType and error.
        return parse_query_response(body)

    async def poll(self, now: datetime) -> list[Signal]:
        """Query once and return the signals due at `now`, in the order of the series labels.

        Raises `PollError` (state unchanged) when Prometheus fails."""
        samples = await self.query()
        observed: dict[str, tuple[dict[str, str], Sample]] = {}
        for sample in samples:
            if not self._compare(sample.value, self.spec.threshold):
                continue
            labels = self._labels(sample.metric)
            key = fingerprint(labels)
            if key in observed:
                raise PollError(
                    f"query {self.spec.query!r}: {format_series(sample.metric)} and "
                    f"{format_series(observed[key][1].metric)} have the same labels once the "
                    "metric name is dropped; aggregate or relabel them"
                )
            observed[key] = (labels, sample)
        # Every series is decided before any state changes, so a PollError leaves it intact.
        due: list[tuple[list[tuple[str, str]], Signal]] = []
        for key, (labels, sample) in observed.items():
            alert = self.alerts.get(key)
            if alert is None:
                alert = SeriesAlert(labels, "pending", active_at=now, sample=sample)
                self.alerts[key] = alert
            alert.sample = sample
            if alert.state == "pending":
                if now - alert.active_at < self.spec.for_:
                    continue
                alert.state = "firing"
                alert.fired_at = now
            elif alert.last_sent_at is not None and now - alert.last_sent_at < self.spec.resend:
                continue
            alert.last_sent_at = now
            due.append((sorted(labels.items()), self._firing(key, alert)))
        for key, alert in list(self.alerts.items()):
            if key in observed:
                continue
            del self.alerts[key]
            if alert.state == "firing":
                current = self._current(alert.labels, samples)
                due.append((sorted(alert.labels.items()), self._resolved(key, alert, now, current)))
        due.sort(key=lambda item: item[0])
        return [signal for _, signal in due]

    # ------------------------------------------------------------------ signals

    def _labels(self, metric: dict[str, str]) -> dict[str, str]:
        # Like an alerting rule: the metric name is dropped, configured labels override the
        # series' own, and alertname is the source's.
        labels = {key: value for key, value in metric.items() if key != "__name__"}
        labels.update(self.spec.labels)
        labels["alertname"] = self.spec.alertname
        return labels

    def _current(self, labels: dict[str, str], samples: list[Sample]) -> Sample | None:
        for sample in samples:
            if self._labels(sample.metric) == labels:
                return sample
        return None

    def _condition(self) -> str:
        return f"{self.spec.op} {format_value(self.spec.threshold)}"

    def _series(self, sample: Sample) -> str:
        return format_series(sample.metric) if sample.metric else self.spec.query

    def _firing(self, key: str, alert: SeriesAlert) -> Signal:
        spec = self.spec
        series = self._series(alert.sample)
        value = format_value(alert.sample.value)
        held = f" for {format_duration(spec.for_)}" if spec.for_ > timedelta(0) else ""
        return SignalReceived(
            source=SOURCE,
            fingerprint=key,
            status="firing",
            labels=dict(alert.labels),
            annotations={
                "summary": f"{series} = {value} ({self._condition()})",
                "description": (
                    f"{spec.query} {self._condition()} has held{held} for {series} "
                    f"(value {value}) since {alert.active_at.isoformat()}."
                ),
                "value": value,
            },
            starts_at=alert.fired_at,
            generator_url=self.generator_url,
        )

    def _resolved(
        self, key: str, alert: SeriesAlert, now: datetime, current: Sample | None
    ) -> Signal:
        series = self._series(alert.sample)
        if current is None:
            summary = f"{series} is no longer in the result of {self.spec.query}"
            value = ""
        else:
            value = format_value(current.value)
            summary = f"{series} = {value} (no longer {self._condition()})"
        annotations = {
            "summary": summary,
            "description": f"{self.spec.query} {self._condition()} stopped holding for {series}.",
        }
        if value:
            annotations["value"] = value
        return SignalReceived(
            source=SOURCE,
            fingerprint=key,
            status="resolved",
            labels=dict(alert.labels),
            annotations=annotations,
            starts_at=alert.fired_at,
            ends_at=now,
            generator_url=self.generator_url,
        )
