"""Backpressure: when the ingest queue is full, senders are told to retry (429 with
Retry-After) instead of onduty buffering without bound; what was accepted is all in the log."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from onduty.log import open_log
from tests.integration.server import Server
from tests.integration.test_serve import alertmanager

ROUNDS = 20
SENDERS = 12


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    store = tmp_path / "pressure.db"
    server = Server(store, "--max-pending", "1").start()
    statuses: list[int] = []
    retry_after: list[str | None] = []
    accepted = 0
    lock = threading.Lock()

    def send(round_: int, sender: int) -> None:
        nonlocal accepted
        alerts = [(f"i-{round_}-{sender}-{n}", "firing") for n in range(50)]
        with httpx.Client(base_url=server.url, timeout=10) as client:
            response = client.post("/api/v1/signals/alertmanager", json=alertmanager(alerts))
        with lock:
            statuses.append(response.status_code)
            if response.status_code == 202:
                accepted += 50
            else:
                retry_after.append(response.headers.get("retry-after"))
                assert "error" in response.json()

    try:
        for round_ in range(ROUNDS):
            senders = [threading.Thread(target=send, args=(round_, n)) for n in range(SENDERS)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(30)
            if 429 in statuses:
                break
    finally:
        assert server.terminate() == 0
    assert set(statuses) <= {202, 429}, statuses
    assert 429 in statuses, "the queue never filled"
    assert all(value == "1" for value in retry_after)
    log = open_log(str(store))
    try:
        received = sum(1 for event in log.read() if event.type == "SignalReceived")
    finally:
        log.close()
    assert received == accepted
