"""`run_pollers` with real sources: a probe against a real server and a Prometheus source
that cannot reach its server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest

from onduty.events import Signal
from onduty.sense.pollers import HttpProbe, PollError, PrometheusQuery, build_source, run_pollers
from onduty.sense.probe import ProbeSource
from onduty.sense.prometheus import PrometheusSource

from .conftest import HealthServer


def probe_spec(url: str, **fields: object) -> HttpProbe:
    return HttpProbe.model_validate(
        {
            "kind": "http_probe",
            "name": "web",
            "url": url,
            "interval": "100ms",
            "timeout": "80ms",
            **fields,
        }
    )


def broken_prometheus(port: int) -> PrometheusQuery:
    return PrometheusQuery.model_validate(
        {
            "kind": "prometheus",
            "name": "metrics",
            "url": f"http://127.0.0.1:{port}",
            "query": "up",
            "op": "<",
            "threshold": 1,
            "interval": "100ms",
            "timeout": "80ms",
        }
    )


def now() -> datetime:
    return datetime.now(UTC)


def test_a_failing_source_does_not_stop_the_others(
    health_server: HealthServer, closed_port: int
) -> None:
    submitted: list[Signal] = []
    errors: list[tuple[str, Exception]] = []

    async def submit(signal: Signal) -> None:
        submitted.append(signal)

    async def run() -> float:
        stop = asyncio.Event()
        async with httpx.AsyncClient() as client:
            sources = [
                build_source(probe_spec(f"{health_server.url}/health"), client),
                build_source(broken_prometheus(closed_port), client),
            ]
            assert isinstance(sources[0], ProbeSource)
            assert isinstance(sources[1], PrometheusSource)
            task = asyncio.create_task(
                run_pollers(
                    sources,
                    submit,
                    clock=now,
                    stop=stop,
                    on_error=lambda name, error: errors.append((name, error)),
                )
            )
            await asyncio.sleep(0.35)
            health_server.set(status=503)
            await asyncio.sleep(0.3)
            health_server.set(status=200)
            await asyncio.sleep(0.3)
            stop.set()
            stopped = time.monotonic()
            await asyncio.wait_for(task, timeout=2)
            return time.monotonic() - stopped

    took = asyncio.run(run())
    assert took < 0.2, f"stopping took {took:.2f}s"
    assert [signal.status for signal in submitted] == ["firing", "resolved"]
    assert len(errors) >= 8
    assert {name for name, _ in errors} == {"metrics"}
    assert all(isinstance(error, PollError) for _, error in errors)
    assert "connection refused" in str(errors[0][1])
    # About one probe every 100ms over ~0.95s, on a fixed grid.
    assert 8 <= len(health_server.health_requests()) <= 11


def test_polls_keep_to_the_grid(health_server: HealthServer) -> None:
    """A poll that takes most of the interval does not push the next ones later."""
    health_server.set(delay=0.06)

    async def run() -> None:
        stop = asyncio.Event()
        async with httpx.AsyncClient() as client:
            source = build_source(probe_spec(f"{health_server.url}/health"), client)
            task = asyncio.create_task(
                run_pollers([source], lambda s: None, clock=now, stop=stop, on_error=print)
            )
            await asyncio.sleep(1.02)
            stop.set()
            await task

    asyncio.run(run())
    times = [seen.at for seen in health_server.health_requests()]
    assert 10 <= len(times) <= 12, times
    # The k-th poll starts near k * interval after the first: no drift accumulates.
    for k, at in enumerate(times):
        assert abs((at - times[0]) - k * 0.1) < 0.05, (k, at - times[0])


def test_stop_abandons_a_poll_in_flight(health_server: HealthServer) -> None:
    health_server.set(delay=3.0)
    spec = probe_spec(f"{health_server.url}/health", interval="10s", timeout="5s")

    async def run() -> float:
        stop = asyncio.Event()
        async with httpx.AsyncClient() as client:
            task = asyncio.create_task(
                run_pollers(
                    [build_source(spec, client)],
                    lambda s: None,
                    clock=now,
                    stop=stop,
                    on_error=print,
                )
            )
            await asyncio.sleep(0.2)
            assert len(health_server.health_requests()) == 1  # the probe is waiting
            stop.set()
            stopped = time.monotonic()
            await asyncio.wait_for(task, timeout=2)
            return time.monotonic() - stopped

    assert asyncio.run(run()) < 0.2


def test_submit_and_error_handler_failures_are_contained(health_server: HealthServer) -> None:
    health_server.set(status=500)
    errors: list[tuple[str, Exception]] = []

    def submit(signal: Signal) -> None:
        raise RuntimeError("log refused the append")

    def on_error(name: str, error: Exception) -> None:
        errors.append((name, error))
        if len(errors) == 1:
            raise ValueError("the handler itself broke")

    async def run() -> None:
        stop = asyncio.Event()
        async with httpx.AsyncClient() as client:
            sources = [
                build_source(probe_spec(f"{health_server.url}/health", resend="100ms"), client),
            ]
            task = asyncio.create_task(
                run_pollers(sources, submit, clock=now, stop=stop, on_error=on_error)
            )
            await asyncio.sleep(0.45)
            stop.set()
            await task

    asyncio.run(run())
    # Firing is re-sent every 100ms, and each submit fails: the loop goes on regardless.
    assert len(errors) >= 3
    assert all(isinstance(error, RuntimeError) for _, error in errors)


def test_duplicate_names_are_refused(health_server: HealthServer) -> None:
    async def run() -> None:
        async with httpx.AsyncClient() as client:
            source = build_source(probe_spec(f"{health_server.url}/health"), client)
            await run_pollers(
                [source, source],
                lambda s: None,
                clock=now,
                stop=asyncio.Event(),
                on_error=print,
            )

    with pytest.raises(ValueError, match="unique: web"):
        asyncio.run(run())


def test_no_sources_waits_for_stop() -> None:
    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        await asyncio.wait_for(
            run_pollers([], lambda s: None, clock=now, stop=stop, on_error=print), timeout=1
        )

    asyncio.run(run())
