"""The Prometheus query source against a real Prometheus server on loopback.

Each poll's `now` is given, so `for` and re-sends are checked without waiting; the queries,
their answers and errors are real."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from onduty.events import Signal
from onduty.sense.pollers import PollError, PrometheusQuery, fingerprint
from onduty.sense.prometheus import PrometheusSource, parse_query_response

from .conftest import HealthServer, PrometheusServer

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def query_spec(url: str, query: str, op: str, threshold: float, **fields: Any) -> PrometheusQuery:
    return PrometheusQuery.model_validate(
        {
            "kind": "prometheus",
            "name": "self-up",
            "url": url,
            "query": query,
            "op": op,
            "threshold": threshold,
            "interval": "5s",
            "timeout": "2s",
            **fields,
        }
    )


async def poll_at(source_spec: PrometheusQuery, offsets: list[float]) -> list[list[Signal]]:
    async with httpx.AsyncClient() as client:
        source = PrometheusSource(source_spec, client)
        return [await source.poll(T0 + seconds(offset)) for offset in offsets]


def test_no_signal_while_the_condition_does_not_hold(prometheus: PrometheusServer) -> None:
    spec = query_spec(prometheus.url, 'up{job="prometheus"}', "<", 1)
    assert asyncio.run(poll_at(spec, [0, 30, 60])) == [[], [], []]


def test_fires_with_series_labels_and_a_summary(prometheus: PrometheusServer) -> None:
    port = prometheus.url.rsplit(":", 1)[1]
    spec = query_spec(
        prometheus.url,
        'up{job="prometheus"}',
        "==",
        1,
        labels={"service": "monitoring"},
        alertname="SelfScraped",
    )
    first, second = asyncio.run(poll_at(spec, [0, 30]))
    [signal] = first
    assert signal.source == "prometheus"
    assert signal.status == "firing"
    assert signal.labels == {
        "alertname": "SelfScraped",
        "instance": f"127.0.0.1:{port}",
        "job": "prometheus",
        "service": "monitoring",
    }
    assert signal.fingerprint == fingerprint(signal.labels)
    assert signal.starts_at == T0
    assert signal.annotations["summary"] == (
        f'up{{instance="127.0.0.1:{port}", job="prometheus"}} = 1 (== 1)'
    )
    assert signal.annotations["value"] == "1"
    assert signal.generator_url is not None
    assert signal.generator_url.startswith(f"{prometheus.url}/graph?g0.expr=up%7Bjob")
    assert second == []  # unchanged: nothing until the re-send is due


def test_for_resend_and_scalar(prometheus: PrometheusServer) -> None:
    spec = query_spec(prometheus.url, "scalar(up{job='prometheus'})", ">=", 1, **{"for": "1m"})
    batches = asyncio.run(poll_at(spec, [0, 30, 59, 60, 90, 359, 360]))
    statuses = [[signal.status for signal in batch] for batch in batches]
    assert statuses == [[], [], [], ["firing"], [], [], ["firing"]]
    fired, resent = batches[3][0], batches[6][0]
    assert fired.starts_at == T0 + seconds(60)
    assert resent.starts_at == fired.starts_at
    assert fired.labels == {"alertname": "self-up"}
    assert fired.annotations["summary"] == "scalar(up{job='prometheus'}) = 1 (>= 1)"
    assert "for 1m" in fired.annotations["description"]


def test_pending_that_stops_holding_is_dropped_silently(
    prometheus: PrometheusServer,
) -> None:
    exporter = prometheus.exporter
    exporter.set(metrics={'demo_load{kind="pending"}': 5})
    prometheus.wait_for('demo_load{kind="pending"} == 5', count=1)
    spec = query_spec(prometheus.url, 'demo_load{kind="pending"}', ">", 3, **{"for": "1m"})

    async def run() -> list[list[Signal]]:
        async with httpx.AsyncClient() as client:
            source = PrometheusSource(spec, client)
            batches = [await source.poll(T0)]
            exporter.set(metrics={'demo_load{kind="pending"}': 1})
            await asyncio.to_thread(prometheus.wait_for, 'demo_load{kind="pending"} == 1', 1)
            batches.append(await source.poll(T0 + seconds(30)))
            assert source.alerts == {}
            return batches

    try:
        assert asyncio.run(run()) == [[], []]
    finally:
        exporter.set(metrics={})


def test_a_series_that_disappears_resolves(prometheus: PrometheusServer) -> None:
    exporter = prometheus.exporter
    exporter.set(metrics={'demo_flag{kind="a"}': 1, 'demo_flag{kind="b"}': 1})
    prometheus.wait_for("demo_flag", count=2)
    spec = query_spec(prometheus.url, "demo_flag", "==", 1, name="flags")

    async def run() -> list[list[Signal]]:
        async with httpx.AsyncClient() as client:
            source = PrometheusSource(spec, client)
            batches = [await source.poll(T0)]
            exporter.set(metrics={'demo_flag{kind="a"}': 1})
            await asyncio.to_thread(prometheus.wait_for, "demo_flag", 1)
            batches.append(await source.poll(T0 + seconds(30)))
            batches.append(await source.poll(T0 + seconds(60)))
            return batches

    try:
        fired, resolved, after = asyncio.run(run())
    finally:
        exporter.set(metrics={})
    assert [(s.status, s.labels["kind"]) for s in fired] == [("firing", "a"), ("firing", "b")]
    [signal] = resolved
    assert signal.status == "resolved"
    assert signal.labels["kind"] == "b"
    assert signal.fingerprint == fired[1].fingerprint
    assert signal.starts_at == T0
    assert signal.ends_at == T0 + seconds(30)
    assert "no longer in the result" in signal.annotations["summary"]
    assert after == []


def test_a_value_that_recovers_resolves(prometheus: PrometheusServer) -> None:
    exporter = prometheus.exporter
    exporter.set(metrics={"demo_errors": 7})
    prometheus.wait_for("demo_errors == 7", count=1)
    spec = query_spec(prometheus.url, "demo_errors", ">", 5, name="errors")

    async def run() -> list[list[Signal]]:
        async with httpx.AsyncClient() as client:
            source = PrometheusSource(spec, client)
            batches = [await source.poll(T0)]
            exporter.set(metrics={"demo_errors": 2})
            await asyncio.to_thread(prometheus.wait_for, "demo_errors == 2", 1)
            batches.append(await source.poll(T0 + seconds(10)))
            return batches

    try:
        fired, resolved = asyncio.run(run())
    finally:
        exporter.set(metrics={})
    assert fired[0].annotations["summary"].startswith("demo_errors{instance=")
    assert fired[0].annotations["summary"].endswith("} = 7 (> 5)")
    assert resolved[0].status == "resolved"
    assert resolved[0].annotations["summary"].endswith("} = 2 (no longer > 5)")


def test_a_syntax_error_is_a_poll_error_naming_prometheus_error(
    prometheus: PrometheusServer,
) -> None:
    spec = query_spec(prometheus.url, "up{job=", "<", 1)
    with pytest.raises(PollError, match=r"Prometheus answered bad_data: .*parse error"):
        asyncio.run(poll_at(spec, [0]))


def test_a_range_vector_is_refused(prometheus: PrometheusServer) -> None:
    spec = query_spec(prometheus.url, "up[1m]", "<", 1)
    with pytest.raises(PollError, match="returned a matrix; expected an instant vector"):
        asyncio.run(poll_at(spec, [0]))


def test_prometheus_failures_raise_and_leave_state_alone(
    prometheus: PrometheusServer, closed_port: int, health_server: HealthServer
) -> None:
    """A broken monitoring system does not resolve what is firing, nor fire anything."""
    spec = query_spec(prometheus.url, 'up{job="prometheus"}', "==", 1)

    async def run() -> tuple[list[Signal], list[str], list[Signal]]:
        async with httpx.AsyncClient() as client:
            source = PrometheusSource(spec, client)
            fired = await source.poll(T0)
            errors: list[str] = []
            for broken in (
                f"http://127.0.0.1:{closed_port}",  # nothing listens
                health_server.url,  # answers 503 with an HTML page
            ):
                source.spec = spec.model_copy(update={"url": broken})
                with pytest.raises(PollError) as caught:
                    await source.poll(T0 + seconds(30))
                errors.append(str(caught.value))
            health_server.set(delay=1.0)
            slow = spec.model_copy(update={"url": health_server.url, "timeout": seconds(0.3)})
            source.spec = slow
            with pytest.raises(PollError) as caught:
                await source.poll(T0 + seconds(60))
            errors.append(str(caught.value))
            assert len(source.alerts) == 1  # still firing
            source.spec = spec
            after = await source.poll(T0 + seconds(90))
            return fired, errors, after

    fired, errors, after = asyncio.run(run())
    assert [s.status for s in fired] == ["firing"]
    assert errors[0] == (
        f"cannot reach Prometheus at http://127.0.0.1:{closed_port}: connection refused"
    )
    assert re.match(
        rf"Prometheus at {re.escape(health_server.url)} answered HTTP 503 Service Unavailable, "
        "not the query API's JSON: '<html>",
        errors[1],
    )
    assert errors[2] == f"Prometheus at {health_server.url} did not answer within 300ms"
    assert after == []  # recovered Prometheus, same series still firing: no new signal


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"status": "error", "errorType": "timeout", "error": "query timed out"}, "timeout"),
        ({"status": "success", "data": {"resultType": "string", "result": [0, "x"]}}, "string"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": 1}]}}, "time"),
        (
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "many"]}]},
            },
            "'many'",
        ),
        ([], "not a JSON object"),
    ],
)
def test_malformed_answers(body: Any, message: str) -> None:
    with pytest.raises(PollError, match=message):
        parse_query_response(body)


def test_special_values_parse() -> None:
    samples = parse_query_response(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": {"a": "1"}, "value": [1.5, "NaN"]},
                    {"metric": {"a": "2"}, "value": [1.5, "+Inf"]},
                ],
            },
        }
    )
    assert str(samples[0].value) == "nan" and samples[1].value == float("inf")
