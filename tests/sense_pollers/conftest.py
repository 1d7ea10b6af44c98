"""Real servers on loopback for the poller tests: a flip-able HTTP health endpoint (which also
exposes Prometheus metrics) and a real Prometheus server scraping itself and that endpoint."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENSURE_PROMETHEUS = ROOT / "scripts" / "ensure_prometheus.sh"
PROMETHEUS_BIN = Path("/usr/bin/prometheus")


@dataclass
class Behaviour:
    """What the server does now; tests change it between requests."""

    status: int = 200
    delay: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    """Exposition lines for /metrics: series text (e.g. 'demo_flag{kind="a"}') → value."""


@dataclass
class Seen:
    path: str
    method: str
    headers: dict[str, str]
    at: float


class HealthServer:
    """A real HTTP server on 127.0.0.1 in a thread. GET/HEAD /health answers `status`;
    /metrics serves `metrics` in the Prometheus text format; anything else is a 503 HTML page.
    Every answer but /metrics comes after `delay` seconds. Every request is recorded."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner._handle(self, body=True)

            def do_HEAD(self) -> None:
                owner._handle(self, body=False)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (a probe timeout) is expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self.behaviour, key, value)

    def health_requests(self) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.requests if seen.path == "/health"]

    def _handle(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        with self._lock:
            behaviour = Behaviour(
                self.behaviour.status, self.behaviour.delay, dict(self.behaviour.metrics)
            )
            self.requests.append(
                Seen(handler.path, handler.command, dict(handler.headers.items()), time.monotonic())
            )
        path = handler.path.split("?", 1)[0]
        if behaviour.delay and path != "/metrics":
            time.sleep(behaviour.delay)
        if path == "/health":
            payload = b"ok\n" if behaviour.status < 400 else b"unhealthy\n"
            status, content_type = behaviour.status, "text/plain"
        elif path == "/metrics":
            lines = [f"{series} {value}" for series, value in sorted(behaviour.metrics.items())]
            payload = ("\n".join(lines) + "\n").encode() if lines else b""
            status, content_type = 200, "text/plain; version=0.0.4"
        else:
            payload = b"<html><body><h1>Service Unavailable</h1></body></html>"
            status, content_type = 503, "text/html"
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if body:
            handler.wfile.write(payload)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    server = HealthServer()
    try:
        yield server
    finally:
        server.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


# --------------------------------------------------------------------------- Prometheus


@dataclass
class PrometheusServer:
    url: str
    exporter: HealthServer
    process: subprocess.Popen[bytes]
    log_path: Path
    install_seconds: float
    ready_seconds: float

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def wait_for(self, promql: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until `promql` returns exactly `count` series."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if len(result) == count:
                return result
            time.sleep(0.2)
        pytest.fail(f"{promql} returned {len(result)} series, not {count}, after {timeout}s")


def _log_tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-30:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus on loopback that scrapes itself and the exporter every second.
    Installed with scripts/ensure_prometheus.sh when missing; failing to start fails the test."""
    started = time.monotonic()
    if not PROMETHEUS_BIN.exists():
        done = subprocess.run(
            ["bash", str(ENSURE_PROMETHEUS)],
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0 or not PROMETHEUS_BIN.exists():
            pytest.fail(
                f"{ENSURE_PROMETHEUS.name} could not install Prometheus "
                f"(exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
    install_seconds = time.monotonic() - started

    exporter = HealthServer()
    root = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = root / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 900ms\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: prometheus\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
        "  - job_name: exporter\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter.port}']\n"
    )
    log_path = root / "prometheus.log"
    url = f"http://127.0.0.1:{port}"
    ready_started = time.monotonic()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                str(PROMETHEUS_BIN),
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--query.lookback-delta=10s",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = PrometheusServer(url, exporter, process, log_path, install_seconds, 0.0)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"prometheus exited with {process.returncode} before it was ready:\n"
                    + _log_tail(log_path)
                )
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("prometheus was not ready within 30s:\n" + _log_tail(log_path))
            time.sleep(0.1)
        # Both targets have been scraped at least once before any test queries.
        server.wait_for('up{job=~"prometheus|exporter"} == 1', count=2, timeout=15)
        server.ready_seconds = time.monotonic() - ready_started
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        exporter.close()
        shutil.rmtree(root / "data", ignore_errors=True)
