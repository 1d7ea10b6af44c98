"""Verification checks against real servers: an HTTP probe and a real Prometheus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from onduty.act.checks import probe_once, query_once, run_check
from tests.sense_pollers.conftest import HealthServer, PrometheusServer


def test_a_probe_check_passes_on_an_expected_status(health_server: HealthServer) -> None:
    assert probe_once({"url": health_server.url + "/health", "expect_status": [200]})[0]
    health_server.set(status=503)
    ok, detail = probe_once({"url": health_server.url + "/health", "expect_status": [200]})
    assert not ok and "answered 503, expected [200]" in detail


def test_a_probe_check_is_repeated_until_the_window_closes(health_server: HealthServer) -> None:
    health_server.set(status=503)
    clock = [datetime(2026, 1, 5, tzinfo=UTC)]

    def sleep(seconds: float) -> None:
        clock[0] += timedelta(seconds=seconds)
        if clock[0] >= datetime(2026, 1, 5, 0, 0, 10, tzinfo=UTC):
            health_server.set(status=200)  # the service comes back after ten seconds

    check = {
        "kind": "probe",
        "url": health_server.url + "/health",
        "interval": "5s",
        "timeout": "1s",
    }
    ok, _ = run_check(check, clock[0] + timedelta(seconds=30), lambda: clock[0], sleep)
    assert ok
    health_server.set(status=503)

    def wait(seconds: float) -> None:  # nothing comes back this time
        clock[0] += timedelta(seconds=seconds)

    ok, detail = run_check(check, clock[0] + timedelta(seconds=12), lambda: clock[0], wait)
    assert not ok and "503" in detail


def test_a_prometheus_check_holds_for_every_series(prometheus: PrometheusServer) -> None:
    prometheus.wait_for('up{job="prometheus"}', 1)
    holds = {"url": prometheus.url, "query": 'up{job="prometheus"}', "op": "==", "threshold": 1}
    ok, detail = query_once(holds)
    assert ok, detail
    fails = {**holds, "op": "<"}
    ok, detail = query_once(fails)
    assert not ok and "not < 1" in detail
    nothing = {**holds, "query": 'up{job="nonexistent"}'}
    assert query_once(nothing) == (False, 'up{job="nonexistent"} returned no series')
