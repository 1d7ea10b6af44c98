"""The HTTP probe against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from onduty.events import Signal, SignalReceived
from onduty.sense.pollers import HttpProbe, fingerprint
from onduty.sense.probe import ProbeSource

from .conftest import HealthServer

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def spec(url: str, **fields: Any) -> HttpProbe:
    return HttpProbe.model_validate(
        {"kind": "http_probe", "name": "checkout", "url": url, **fields}
    )


async def polls(
    source_spec: HttpProbe,
    steps: list[tuple[timedelta, Any]],
    server: HealthServer | None = None,
    *,
    env: dict[str, str] | None = None,
) -> tuple[ProbeSource, list[list[Signal]]]:
    """Poll once per step at T0 + offset, after applying `server.set(**changes)`."""
    results: list[list[Signal]] = []
    async with httpx.AsyncClient() as client:
        source = ProbeSource(source_spec, client, env=env)
        for offset, changes in steps:
            if server is not None and changes:
                server.set(**changes)
            results.append(await source.poll(T0 + offset))
    return source, results


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def test_fires_after_n_failures_resends_and_resolves(health_server: HealthServer) -> None:
    probe = spec(
        f"{health_server.url}/health",
        failures_before_firing=3,
        labels={"service": "checkout", "instance": "checkout-1"},
    )
    source, results = asyncio.run(
        polls(
            probe,
            [
                (seconds(0), {"status": 200}),
                (seconds(30), {"status": 503}),
                (seconds(60), None),
                (seconds(90), None),  # third failure in a row: firing
                (seconds(120), None),  # still failing, within resend: nothing
                (seconds(390), None),  # 5 minutes after the first send: re-sent
                (seconds(420), None),
                (seconds(450), {"status": 200}),  # healthy: resolved
                (seconds(480), None),
            ],
            health_server,
        )
    )
    assert [len(batch) for batch in results] == [0, 0, 0, 1, 0, 1, 0, 1, 0]
    fired, resent, resolved = results[3][0], results[5][0], results[7][0]
    assert isinstance(fired, SignalReceived)
    assert fired.source == "probe"
    assert fired.status == "firing"
    assert fired.labels == {
        "alertname": "ProbeFailed",
        "probe": "checkout",
        "service": "checkout",
        "instance": "checkout-1",
    }
    assert fired.fingerprint == fingerprint(fired.labels) == source.fingerprint
    assert fired.starts_at == T0 + seconds(90)
    assert fired.ends_at is None
    assert fired.annotations["summary"] == (
        f"GET {health_server.url}/health: status 503 (expected 200)"
    )
    assert "failed 3 times in a row" in fired.annotations["description"]
    assert fired.generator_url == f"{health_server.url}/health"
    assert resent.status == "firing"
    assert resent.fingerprint == fired.fingerprint
    assert resent.starts_at == fired.starts_at
    assert resolved.status == "resolved"
    assert resolved.fingerprint == fired.fingerprint
    assert resolved.starts_at == fired.starts_at
    assert resolved.ends_at == T0 + seconds(450)
    assert (
        resolved.annotations["summary"]
        == f"GET {health_server.url}/health: healthy again (status 200)"
    )
    assert len(health_server.health_requests()) == 9


def test_a_failure_streak_shorter_than_n_sends_nothing(health_server: HealthServer) -> None:
    probe = spec(f"{health_server.url}/health", failures_before_firing=2)
    _, results = asyncio.run(
        polls(
            probe,
            [
                (seconds(0), {"status": 500}),
                (seconds(30), {"status": 200}),
                (seconds(60), {"status": 500}),
                (seconds(90), {"status": 200}),
            ],
            health_server,
        )
    )
    assert results == [[], [], [], []]


def test_connection_refused(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/health"
    _, results = asyncio.run(polls(spec(url), [(seconds(0), None)]))
    [signal] = results[0]
    assert signal.status == "firing"
    assert signal.annotations["summary"] == f"GET {url}: connection refused"


def test_timeout_is_enforced(health_server: HealthServer) -> None:
    probe = spec(f"{health_server.url}/health", timeout="300ms", interval="1s")
    health_server.set(delay=2.0)
    started = time.monotonic()
    _, results = asyncio.run(polls(probe, [(seconds(0), None)]))
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"the probe waited {elapsed:.2f}s despite a 300ms timeout"
    [signal] = results[0]
    assert signal.annotations["summary"] == (
        f"GET {health_server.url}/health: timed out after 300ms"
    )
    # The server recovers: the next probe resolves.
    health_server.set(delay=0.0)


def test_slow_then_fast_resolves(health_server: HealthServer) -> None:
    probe = spec(f"{health_server.url}/health", timeout="200ms", interval="1s")
    _, results = asyncio.run(
        polls(
            probe,
            [(seconds(0), {"delay": 1.0}), (seconds(1), {"delay": 0.0})],
            health_server,
        )
    )
    assert [[s.status for s in batch] for batch in results] == [["firing"], ["resolved"]]


def test_status_classes_and_head(health_server: HealthServer) -> None:
    probe = spec(f"{health_server.url}/health", method="HEAD", expect_status="2xx")
    _, results = asyncio.run(
        polls(
            probe,
            [(seconds(0), {"status": 204}), (seconds(30), {"status": 302})],
            health_server,
        )
    )
    assert results[0] == []
    [signal] = results[1]
    assert signal.annotations["summary"] == (
        f"HEAD {health_server.url}/health: status 302 (expected 2xx)"
    )
    assert {seen.method for seen in health_server.health_requests()} == {"HEAD"}


def test_fingerprint_is_stable_across_restarts(health_server: HealthServer) -> None:
    probe = spec(f"{health_server.url}/health", labels={"service": "checkout"})
    health_server.set(status=503)
    _, first = asyncio.run(polls(probe, [(seconds(0), None)]))
    _, second = asyncio.run(polls(probe, [(seconds(60), None)]))
    assert first[0][0].fingerprint == second[0][0].fingerprint
    other = spec(f"{health_server.url}/health", name="other", labels={"service": "checkout"})
    _, third = asyncio.run(polls(other, [(seconds(0), None)]))
    assert third[0][0].fingerprint != first[0][0].fingerprint


def test_secret_headers_are_sent_but_never_shown(
    health_server: HealthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "s3cr3t-token-7f1c9"
    file_secret = "file-secret-93ab2"
    secret_file = tmp_path / "secret"
    secret_file.write_text(file_secret + "\n")
    monkeypatch.setenv("ONDUTY_TEST_PROBE_TOKEN", token)
    probe = spec(
        f"{health_server.url}/health",
        headers={
            "Authorization": "Bearer ${ENV:ONDUTY_TEST_PROBE_TOKEN}",
            "X-Api-Key": "${FILE:" + str(secret_file) + "}",
        },
    )

    async def run() -> tuple[ProbeSource, list[list[Signal]], list[str]]:
        shown: list[str] = []
        async with httpx.AsyncClient() as client:
            source = ProbeSource(probe, client)
            batches = []
            for offset, status in ((0, 503), (30, 200)):
                health_server.set(status=status)
                batches.append(await source.poll(T0 + seconds(offset)))
                shown += [repr(source), str(source), repr(vars(source)), repr(source.last_result)]
            shown.append(repr(client))
        return source, batches, shown

    _, batches, shown = asyncio.run(run())
    sent = health_server.health_requests()
    assert sent[0].headers["Authorization"] == f"Bearer {token}"
    assert sent[0].headers["X-Api-Key"] == file_secret
    signals = [signal for batch in batches for signal in batch]
    assert [signal.status for signal in signals] == ["firing", "resolved"]
    texts = [
        *shown,
        repr(probe),
        probe.model_dump_json(),
        *(repr(signal) for signal in signals),
        *(signal.model_dump_json() for signal in signals),
    ]
    for text in texts:
        assert token not in text
        assert file_secret not in text
    # The configuration keeps the reference, not the value.
    assert "${ENV:ONDUTY_TEST_PROBE_TOKEN}" in probe.model_dump_json()
