"""A fleet node under load while its dependencies restart, on private servers of its own: with
NATS down, ingest answers 503 with Retry-After (nothing half-accepted) and recovers by itself
once NATS is back; with PostgreSQL down, the bus still takes signals durably, and the managers
fold and carry on once the database is back. Every signal acknowledged is acted on, once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.bus.nats_server import PrivateNatsServer
from tests.integration.fleet import fleet, held, signal_body, wait_for
from tests.integration.private_postgres import PrivatePostgres

pytestmark = pytest.mark.slow


class Load:
    """Signals for unique instances, one after the other, until stopped: what was answered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted: list[str] = []
        self.refused: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(100_000):
                if self._stop.is_set():
                    return
                instance = f"web-{i}"
                try:
                    answer = client.post(f"{self.url}/api/v1/signals", json=signal_body(instance))
                except httpx.TransportError:
                    self.refused.append((0, None))
                    continue
                if answer.status_code == 202:
                    self.accepted.append(instance)
                else:
                    self.refused.append((answer.status_code, answer.headers.get("retry-after")))
                time.sleep(0.01)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def accepted_since(self, count: int, timeout: float) -> None:
        goal = len(self.accepted) + count
        wait_for(lambda: len(self.accepted) >= goal, timeout, f"{count} more signals accepted")


def test_ingest_rides_out_restarts_of_nats_and_postgresql(tmp_path: Path) -> None:
    bus = PrivateNatsServer(tmp_path / "nats")
    database = PrivatePostgres()
    bus.start()
    database.start()
    try:
        with fleet(
            tmp_path, partitions=4, instances=2_000, database=database.url, bus=bus.url,
            cleanup=False,
        ) as f:  # fmt: skip
            node = f.server("node").start()
            wait_for(lambda: held(node) == 4, 20, "every partition held")
            with Load(node.url) as load:
                load.accepted_since(20, 20)
                bus.kill()
                wait_for(lambda: load.refused, 10, "a refusal while NATS is down")
                time.sleep(1)
                bus.start()
                load.accepted_since(20, 30)  # recovered by itself
                while_nats_down = list(load.refused)
                database.stop()
                time.sleep(2)
                load.accepted_since(5, 20)  # the bus still takes them while the store is down
                database.start()
                wait_for(lambda: held(node) == 4, 30, "partitions held again")
                load.accepted_since(20, 30)
            assert while_nats_down
            assert all(status == 503 and after for status, after in while_nats_down), (
                while_nats_down
            )
            accepted = set(load.accepted)

            def all_acted_on() -> bool:
                return set(f.runs()) >= accepted

            wait_for(all_acted_on, 60, "every accepted signal acted on")
            assert [target for target, count in f.runs().items() if count > 1] == []
            audited = f.audit()
            assert audited.returncode == 0, audited.stderr
            assert node.terminate() == 0
    finally:
        bus.kill()
        database.remove()
