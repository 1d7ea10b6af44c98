"""`/readyz` end to end: a real `onduty serve` is ready when healthy, says which check fails and
why when its PostgreSQL store cannot be reached or its core falls behind, and is ready again
once they recover. The store is reached through a TCP proxy the test cuts: the machine's
PostgreSQL itself is never stopped."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from tests.bus.nats_server import PrivateNatsServer
from tests.integration.fleet import fleet, held
from tests.integration.server import Server
from tests.postgres import Schemas
from tests.waiting import wait_for

CONFIG = """
services:
  - {name: web, autonomy: act, instances: [web-1]}
server:
  readiness: {max_input_wait: 1s}
"""


class CuttableProxy:
    """Forwards a local port to PostgreSQL. `cut()` closes every connection and refuses new ones
    (as a database gone away); `mend()` forwards again."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, schema: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test?schema={schema}"

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def mend(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def readyz(server: Server) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", timeout=5)


def test_ready_lists_every_check_as_text_json_and_alertmanager_s_probe(tmp_path: Path) -> None:
    (tmp_path / "onduty.yaml").write_text(CONFIG)
    with Server(tmp_path / "r.db", config=tmp_path / "onduty.yaml") as server:
        answer = readyz(server)
        assert answer.status_code == 200
        assert answer.text == "ready\nlog: ok\npolicy: ok\ncore: ok\n"
        as_json = httpx.get(
            f"{server.url}/readyz", headers={"Accept": "application/json"}, timeout=5
        ).json()
        assert as_json["ready"] is True
        assert [c["check"] for c in as_json["checks"]] == ["log", "policy", "core"]
        assert httpx.get(f"{server.url}/-/ready", timeout=5).text == "OK"
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert 'onduty_ready{check="log"} 1.0' in metrics
        assert 'onduty_queue_depth{queue="core"} 0.0' in metrics


def test_a_core_that_falls_behind_is_not_ready_until_it_catches_up(tmp_path: Path) -> None:
    (tmp_path / "onduty.yaml").write_text(CONFIG)
    store = tmp_path / "r.db"
    with Server(store, config=tmp_path / "onduty.yaml") as server:
        blocker = sqlite3.connect(store, timeout=5, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the log's appends wait for this writer
        signal = {
            "source": "t",
            "fingerprint": "f",
            "status": "firing",
            "labels": {"alertname": "Down"},
        }
        sent: list[int] = []
        sender = threading.Thread(
            target=lambda: sent.append(
                httpx.post(f"{server.url}/api/v1/signals", json=signal, timeout=30).status_code
            )
        )
        sender.start()
        try:
            wait_for(lambda: readyz(server).status_code == 503)
            answer = readyz(server)
            assert answer.text.startswith("not ready: core\n")
            assert "core: failing for" in answer.text
            assert "for the core (at most 1s)" in answer.text
            assert "log: ok" in answer.text
            ready = httpx.get(f"{server.url}/-/ready", timeout=5)
            assert ready.status_code == 503 and "not ready: core" in ready.text
            metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
            assert 'onduty_ready{check="core"} 0.0' in metrics
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        sender.join(30)
        assert sent == [202]
        wait_for(lambda: readyz(server).status_code == 200)


@pytest.mark.usefixtures("postgres_server")
def test_a_store_that_cannot_be_reached_fails_the_log_check_until_it_is_back(
    tmp_path: Path, schemas: Schemas
) -> None:
    (tmp_path / "onduty.yaml").write_text(CONFIG)
    proxy = CuttableProxy()
    url = proxy.url(schemas.name(tmp_path))
    try:
        with Server(
            url, config=tmp_path / "onduty.yaml", log_path=tmp_path / "serve.log"
        ) as server:
            assert readyz(server).status_code == 200
            proxy.cut()
            wait_for(lambda: readyz(server).status_code == 503, timeout=10)
            answer = readyz(server)
            assert answer.text.startswith("not ready: log\n")
            assert f"127.0.0.1:{proxy.port}/test" in answer.text  # which store, never a password
            assert "policy: ok" in answer.text and "core: ok" in answer.text
            proxy.mend()
            wait_for(lambda: readyz(server).status_code == 200, timeout=10)
            assert readyz(server).text == "ready\nlog: ok\npolicy: ok\ncore: ok\n"
    finally:
        proxy.close()


@pytest.mark.usefixtures("postgres_server")
def test_a_fleet_node_is_not_ready_while_its_bus_is_disconnected(tmp_path: Path) -> None:
    nats = PrivateNatsServer(tmp_path / "nats")
    nats.start()
    try:
        with fleet(tmp_path, partitions=2, instances=10, bus=nats.url) as running:
            node = running.server("node").start()
            answer = readyz(node)
            assert answer.status_code == 200
            assert answer.text == "ready\nlog: ok\nbus: ok\npolicy: ok\ncore: ok\n"
            wait_for(lambda: held(node) == 2)
            nats.kill()
            wait_for(lambda: readyz(node).status_code == 503)
            answer = readyz(node)
            assert answer.text.startswith("not ready: bus\n")
            assert f"NATS at {nats.url}" in answer.text
            assert "log: ok" in answer.text
            nats.start()
            wait_for(lambda: readyz(node).status_code == 200)
    finally:
        nats.kill()
