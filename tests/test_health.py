"""The readiness checks one by one (`onduty.health`), on a real service, a real PostgreSQL and a
real NATS server; `/readyz` end to end is in tests/integration/test_readiness.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from onduty.act import ActuatorRegistry
from onduty.bus import BusSettings
from onduty.bus.nats import NatsBus
from onduty.config import Config, parse_config_text
from onduty.events import ActionFailed, ActionStarted, ActionSucceeded, Payload, make_event
from onduty.health import (
    CheckResult,
    Health,
    PostgresProbe,
    SQLiteProbe,
    core_check,
    is_ready,
    log_check,
    policy_check,
    report,
)
from onduty.log.memory import MemoryEventLog
from onduty.obs import Metrics
from onduty.runtime import Input, Runtime, RuntimeStopped, SystemClock
from onduty.service import Service
from onduty.workers import WorkerPool
from tests.bus.nats_server import PrivateNatsServer
from tests.postgres import SERVER

CONFIG = """
services:
  - {name: web, autonomy: act, instances: [web-1]}
server:
  readiness: {max_input_wait: 300ms, max_queued: 3}
"""


def config(text: str = CONFIG) -> Config:
    return parse_config_text(text)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(config(), str(tmp_path / "h.db"))
    running.start()
    yield running
    running.stop()


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_check_says_why_and_since_when_and_recovers() -> None:
    ticks = Ticks()
    answer: list[str | None] = [None]
    health = Health([("log", lambda: answer[0]), ("policy", lambda: None)], now=ticks)
    assert [r.ok for r in health.check_all()] == [True, True]
    answer[0] = "the store is gone"
    health.check_all()
    ticks.now += 12
    log, policy = health.check_all()
    assert log == CheckResult("log", False, "the store is gone", 12.0)
    assert policy.ok
    assert report([log, policy]) == (
        "not ready: log\nlog: failing for 12s: the store is gone\npolicy: ok\n"
    )
    answer[0] = None
    assert all(r.ok for r in health.check_all())
    answer[0] = "again"
    ticks.now += 5
    assert health.check_all()[0].failing_for == 0.0  # counted from the new failure


def test_a_check_that_is_not_required_is_reported_without_making_onduty_unready() -> None:
    health = Health([("log", lambda: "the store is gone"), ("bus", lambda: None)], optional=["log"])
    results = health.check_all()
    assert is_ready(results)
    assert report(results) == (
        "ready\nlog: failing for 0s: the store is gone (not required to be ready)\nbus: ok\n"
    )
    assert health.ok("log") == 0.0


def test_a_check_that_raises_fails_with_the_error_and_text_stays_data() -> None:
    def broken() -> str | None:
        raise RuntimeError("boom\x1b[31m")

    (result,) = Health([("bus", broken)]).check_all()
    assert not result.ok
    assert "RuntimeError: boom" in result.reason
    assert "\x1b" not in result.line()


def test_sqlite_probe_wants_the_file_there(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"")
    assert SQLiteProbe(path)() is None
    path.unlink()
    assert SQLiteProbe(path)() == f"the store file {path} is gone"


@pytest.mark.usefixtures("postgres_server")
def test_postgres_probe_answers_and_is_asked_at_most_once_a_second() -> None:
    ticks = Ticks()
    probe = PostgresProbe(f"{SERVER}?schema=unused", every=1.0, now=ticks)
    assert probe() is None
    probe.close()
    probe._conninfo = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens there
    assert probe() is None  # the answer of a moment ago
    ticks.now += 1.5
    problem = probe()
    assert problem == "the store postgresql://postgres@127.0.0.1:1/test cannot be reached"


def test_postgres_probe_that_gets_no_answer_fails_within_its_timeout() -> None:
    import socket

    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    port = silent.getsockname()[1]
    try:
        probe = PostgresProbe(f"postgresql://postgres@127.0.0.1:{port}/test", timeout=0.3)
        started = time.monotonic()
        problem = probe()
        assert time.monotonic() - started < 1.0
        assert problem is not None and "has not answered for" in problem
        assert "has not answered" in (probe() or "")  # the question is still out
    finally:
        silent.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_log_fails_once_an_append_failed() -> None:
    service = Service(config(), ":memory:")  # the core's thread dies with the append
    service.start()
    assert log_check(service, None)() is None
    assert service.log is not None and service.loop is not None
    service.log.close()  # appends are refused from now on
    future = service.loop.offer([Input(ActionFailed(command_id="x", error="e"), "x")])
    assert future is not None
    with pytest.raises(RuntimeStopped):
        future.result(timeout=10)
    problem = log_check(service, None)()
    assert problem is not None
    assert problem.startswith("an append failed, the core stopped: RuntimeError: the event log")
    core = core_check(service, service.config.server.readiness)()
    assert core is not None and core.startswith("the core stopped: RuntimeStopped")
    service.loop.stop()  # its thread has ended (with the append's error) within this test


def test_the_core_fails_while_an_input_waits_too_long_and_recovers(service: Service) -> None:
    check = core_check(service, service.config.server.readiness)
    assert check() is None
    runtime, loop = service.runtime, service.loop
    assert runtime is not None and loop is not None
    with runtime._lock:  # the core's thread cannot hand inputs to the runtime meanwhile
        future = loop.offer([Input(ActionSucceeded(command_id="nothing"), "x")])
        time.sleep(0.5)
        problem = check()
        assert problem is not None
        assert problem.startswith("the oldest input has waited")
        assert problem.endswith("for the core (at most 0.3s)")
        for _ in range(4):
            loop.offer([Input(ActionSucceeded(command_id="nothing"), "x")])
        assert check() == "4 inputs wait for the core (at most 3)"
    assert future is not None
    future.result(timeout=10)
    deadline = time.monotonic() + 5
    while check() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert check() is None


def test_the_core_fails_when_it_has_not_started(tmp_path: Path) -> None:
    idle = Service(config(), str(tmp_path / "i.db"))
    assert core_check(idle, idle.config.server.readiness)() == "the core has not started"
    assert policy_check(idle)() == "onduty is starting"


def test_without_an_active_policy_onduty_is_not_ready(service: Service) -> None:
    assert policy_check(service)() is None
    runtime, _ = Runtime.open(MemoryEventLog(), SystemClock(), ActuatorRegistry())
    service.runtime, kept = runtime, service.runtime  # a core that never had a policy
    try:
        assert policy_check(service)() == "no policy is active"
    finally:
        service.runtime = kept


def test_the_service_exports_each_check_as_a_gauge(service: Service) -> None:
    health = service.health
    assert health.names == ["log", "policy", "core"]
    assert [r.ok for r in health.check_all()] == [True, True, True]
    registry = service.metrics.registry
    for name in health.names:
        assert registry.get_sample_value("onduty_ready", {"check": name}) == 1.0
    assert registry.get_sample_value("onduty_queue_depth", {"queue": "core"}) == 0.0
    assert registry.get_sample_value("onduty_checkpoint_age_seconds") is not None


def test_a_bus_reports_its_connection(tmp_path: Path) -> None:
    nats = PrivateNatsServer(tmp_path / "js")
    nats.start()
    settings = BusSettings(partitions=1, reconnect_wait=0.1, stream="READYZ", prefix="readyz")

    async def scenario() -> list[str | None]:
        bus = await NatsBus.connect([nats.url], settings)
        seen = [bus.connection_problem()]
        nats.kill()
        for _ in range(100):
            if bus.connection_problem() is not None:
                break
            await asyncio.sleep(0.05)
        seen.append(bus.connection_problem())
        nats.start()
        for _ in range(100):
            if bus.connection_problem() is None:
                break
            await asyncio.sleep(0.05)
        seen.append(bus.connection_problem())
        await bus.close()
        seen.append(bus.connection_problem())
        return seen

    try:
        connected, lost, back, closed = asyncio.run(scenario())
    finally:
        nats.kill()
    assert connected is None
    assert lost is not None and nats.url in lost
    assert back is None
    assert closed == "the connection to NATS is closed"


def test_breakers_open_after_the_policy_s_failures_and_close_on_a_success() -> None:
    metrics = Metrics()
    at = datetime(2026, 1, 5, 9, tzinfo=UTC)

    def feed(seq: int, body: Payload) -> None:
        metrics.observe(make_event(body, id=f"e{seq}", ts=at + timedelta(seconds=seq), stream="s"))

    labels = {"actuator": "k8s", "action": "k8s.rollout_restart", "target": "web"}
    for n in range(3):
        feed(2 * n, ActionStarted(command_id=f"c{n}", incident_id="i", action=labels["action"],
                                  target="web"))  # fmt: skip
        feed(2 * n + 1, ActionFailed(command_id=f"c{n}", error="no"))
        expected = 1.0 if n == 2 else 0.0  # the default policy opens at 3 failures
        assert metrics.registry.get_sample_value("onduty_breaker_open", labels) == expected
    feed(10, ActionStarted(command_id="c9", incident_id="i", action=labels["action"], target="web"))
    feed(11, ActionSucceeded(command_id="c9"))
    assert metrics.registry.get_sample_value("onduty_breaker_open", labels) == 0.0


def test_worker_pool_counts_calls_waiting_for_a_thread() -> None:
    pool = WorkerPool(workers=1, per_actuator=1)
    release = threading.Event()
    pool("a", release.wait)
    pool("a", lambda: None)
    deadline = time.monotonic() + 5
    while pool.waiting != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.waiting == 1
    release.set()
    pool.close()
    assert pool.waiting == 0
