"""`run_pollers` with real sources: a probe against a real server and a Prometheus source
that cannot reach its server."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from onduty.events import Signal
from onduty.sense.pollers import (
    HttpProbe,
    PollError,
    PrometheusQuery,
    Timer,
    build_source,
    run_pollers,
)
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


# A poll's timeout and interval bound real time even under the virtual timer, so tests whose
# outcome must not depend on a busy machine use seconds, not milliseconds.
def broken_prometheus(port: int) -> PrometheusQuery:
    return PrometheusQuery.model_validate(
        {
            "kind": "prometheus",
            "name": "metrics",
            "url": f"http://127.0.0.1:{port}",
            "query": "up",
            "op": "<",
            "threshold": 1,
            "interval": "10s",
            "timeout": "5s",
        }
    )


def now() -> datetime:
    return datetime.now(UTC)


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class VirtualTimer(Timer):
    """Virtual seconds that move only when every poller waits for its next turn: then straight
    to the earliest wake-up. Polls themselves (real HTTP included) take no virtual time unless
    a fake source advances it (`spend`)."""

    def __init__(self, pollers: int) -> None:
        self.now = 0.0
        self.pollers = pollers
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def datetime(self) -> datetime:
        return T0 + timedelta(seconds=self.now)

    def spend(self, seconds: float) -> None:
        self.now += seconds

    async def wait(self, delay: float, stopper: asyncio.Task[Any]) -> None:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (self.now + delay, next(self._order), woken))
        await asyncio.wait({woken, stopper}, return_when=asyncio.FIRST_COMPLETED)

    async def run_until(
        self, end: float, at: dict[float, Callable[[], None]] | None = None
    ) -> None:
        """Wake the pollers in turn until the next wake-up is after `end`; call `at[t]` once
        the virtual clock has reached t."""
        pending = sorted((at or {}).items())
        while True:
            for _ in range(5_000):  # every poller is waiting (polls are real I/O: real time)
                if len(self._waiting) >= self.pollers:
                    break
                await asyncio.sleep(0.001)
            else:
                raise AssertionError("a poller never came back to wait")
            wake = self._waiting[0][0]
            while pending and pending[0][0] <= wake:
                pending.pop(0)[1]()
            if wake > end:
                return
            _, _, woken = heapq.heappop(self._waiting)
            self.now = wake
            woken.set_result(None)


class SlowSource:
    """A fake poller whose every poll takes `takes` virtual seconds; it records when it ran."""

    name = "slow"
    interval = timedelta(milliseconds=100)

    def __init__(self, timer: VirtualTimer, takes: float) -> None:
        self.timer, self.takes = timer, takes
        self.started: list[float] = []

    async def poll(self, now: datetime) -> list[Signal]:
        self.started.append(round(self.timer.now, 6))
        self.timer.spend(self.takes)
        return []


def slow_poll_starts(takes: float) -> list[float]:
    """When each poll began, over one virtual second, of a source polled every 0.1 s whose
    polls take `takes` virtual seconds."""
    timer = VirtualTimer(pollers=1)
    source = SlowSource(timer, takes=takes)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_pollers(
                [source],
                lambda s: None,
                clock=timer.datetime,
                stop=stop,
                on_error=print,
                timer=timer,
            )
        )
        await timer.run_until(1.0)
        stop.set()
        await task

    asyncio.run(run())
    return source.started


def test_a_failing_source_does_not_stop_the_others(
    health_server: HealthServer, closed_port: int
) -> None:
    submitted: list[Signal] = []
    errors: list[tuple[str, Exception]] = []
    timer = VirtualTimer(pollers=2)

    async def submit(signal: Signal) -> None:
        submitted.append(signal)

    async def run() -> None:
        stop = asyncio.Event()
        async with httpx.AsyncClient() as client:
            sources = [
                build_source(
                    probe_spec(f"{health_server.url}/health", interval="10s", timeout="5s"),
                    client,
                ),
                build_source(broken_prometheus(closed_port), client),
            ]
            assert isinstance(sources[0], ProbeSource)
            assert isinstance(sources[1], PrometheusSource)
            task = asyncio.create_task(
                run_pollers(
                    sources,
                    submit,
                    clock=timer.datetime,
                    stop=stop,
                    on_error=lambda name, error: errors.append((name, error)),
                    timer=timer,
                )
            )
            flips = {
                35.0: lambda: health_server.set(status=503),
                65.0: lambda: health_server.set(status=200),
            }
            await timer.run_until(95.0, at=flips)
            stop.set()
            await asyncio.wait_for(task, timeout=2)

    asyncio.run(run())
    assert [signal.status for signal in submitted] == ["firing", "resolved"]
    # Polls at 0, 10, ... 90 (virtual seconds): ten of each source.
    assert len(errors) == 10
    assert {name for name, _ in errors} == {"metrics"}
    assert all(isinstance(error, PollError) for _, error in errors)
    assert "connection refused" in str(errors[0][1])
    assert len(health_server.health_requests()) == 10


def test_polls_keep_to_the_grid() -> None:
    """A poll that takes most of the interval does not push the next ones later."""
    assert slow_poll_starts(takes=0.06) == [round(k * 0.1, 6) for k in range(11)]


def test_turns_missed_by_an_overrunning_poll_are_skipped() -> None:
    """A poll that outlasts two intervals is followed by the next turn on the grid, not by
    the missed ones back to back."""
    assert slow_poll_starts(takes=0.25) == [0.0, 0.3, 0.6, 0.9]


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

    timer = VirtualTimer(pollers=1)

    async def run() -> None:
        stop = asyncio.Event()
        async with httpx.AsyncClient() as client:
            sources = [
                # a real-time timeout long enough for a loaded machine: only submits may fail
                build_source(
                    probe_spec(
                        f"{health_server.url}/health", interval="20s", resend="20s", timeout="10s"
                    ),
                    client,
                ),
            ]
            task = asyncio.create_task(
                run_pollers(
                    sources, submit, clock=timer.datetime, stop=stop, on_error=on_error, timer=timer
                )
            )
            await timer.run_until(90)
            stop.set()
            await task

    asyncio.run(run())
    # Polls at 0, 20, ... 80 (virtual seconds); firing is sent at the first and re-sent at
    # each later one, and each submit fails: the loop goes on regardless.
    assert len(errors) == 5
    assert all(isinstance(error, RuntimeError) for _, error in errors), errors


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
        task = asyncio.create_task(
            run_pollers([], lambda s: None, clock=now, stop=stop, on_error=print)
        )
        await asyncio.sleep(0.05)
        assert not task.done(), "run_pollers returned before stop was set"
        stop.set()
        await asyncio.wait_for(task, timeout=1)

    asyncio.run(run())
