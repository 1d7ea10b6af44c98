"""A real Prometheus delivers straight to a real `onduty serve`, no Alertmanager in between:
onduty serves the part of Alertmanager's API v2 that Prometheus's notifier uses. A rule that
fires opens an incident; when it stops firing the incident resolves; and when Prometheus dies
with the rule still firing, the incident resolves once the alert's `endsAt` passes."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from onduty.api.auth import hash_token
from tests.integration.server import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = Path("/usr/bin/prometheus")
VIEWER, INGEST = "tok-prom-viewer", "tok-prom-ingest"
CONFIG = f"""
services:
  - {{name: web, autonomy: observe, instances: [web-1]}}
correlation: {{group_by: [service, alertname]}}
access:
  tokens:
    - {{name: vera, roles: [viewer], hash: "{hash_token(VIEWER)}"}}
  ingest:
    - {{name: prometheus-eu, hash: "{hash_token(INGEST)}", routes: [prometheus]}}
"""
RULES = """
groups:
  - name: onduty
    interval: 1s
    rules:
      - alert: SwitchOn
        expr: onduty_test_switch > 0
        labels: {service: web, severity: page}
        annotations: {summary: "the switch of {{ $labels.instance }} is on"}
"""
T = TypeVar("T")


def ensure_prometheus() -> None:
    if not PROMETHEUS.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_prometheus.sh")], check=True)
    assert PROMETHEUS.exists(), "prometheus could not be installed"


class Switch:
    """A scrape target on loopback whose one metric, `onduty_test_switch`, the test sets."""

    def __init__(self) -> None:
        self.value = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = f"onduty_test_switch {owner.value}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s")


@pytest.fixture
def switch() -> Iterator[Switch]:
    target = Switch()
    try:
        yield target
    finally:
        target.close()


def start_prometheus(folder: Path, onduty: Server, switch: Switch) -> subprocess.Popen[bytes]:
    ensure_prometheus()
    port = free_port()
    (folder / "rules.yml").write_text(RULES)
    (folder / "prometheus.yml").write_text(
        f"""
global: {{scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}}
rule_files: [{folder / "rules.yml"}]
alerting:
  alertmanagers:
    - api_version: v2
      timeout: 5s
      authorization: {{type: Bearer, credentials: {INGEST}}}
      static_configs: [{{targets: ["127.0.0.1:{onduty.port}"]}}]
scrape_configs:
  - job_name: switch
    static_configs: [{{targets: ["127.0.0.1:{switch.port}"]}}]
"""
    )
    with (folder / "prometheus.log").open("wb") as output:
        process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--rules.alert.resend-delay=1s",
                "--rules.alert.for-grace-period=1s",
            ],
            stdout=subprocess.DEVNULL,
            stderr=output,
            stdin=subprocess.DEVNULL,
        )
    return process


def test_a_rule_firing_and_stopping_opens_and_resolves_an_incident(
    tmp_path: Path, switch: Switch
) -> None:
    config = tmp_path / "onduty.yaml"
    config.write_text(CONFIG)
    with Server(tmp_path / "prom.db", config=config, token=VIEWER) as onduty:
        # Alertmanager's probes, public like /healthz; the alerts route wants its credential
        assert httpx.get(f"{onduty.url}/-/healthy").text == "OK"
        assert httpx.get(f"{onduty.url}/-/ready").status_code == 200
        assert httpx.post(f"{onduty.url}/api/v2/alerts", json=[]).status_code == 401
        prometheus = start_prometheus(tmp_path, onduty, switch)
        client = onduty.client()
        try:

            def incident(status: str) -> dict[str, Any] | None:
                assert prometheus.poll() is None or status == "resolved", "prometheus exited"
                listed = client.get("/api/v1/incidents", params={"status": "all"}).json()
                return listed[0] if listed and listed[0]["status"] == status else None

            def received() -> list[dict[str, Any]]:
                found = client.get("/api/v1/events", params={"type": "SignalReceived"})
                events: list[dict[str, Any]] = found.json()
                return events

            # 1. the rule fires: Prometheus posts the alert, an incident opens
            switch.value = 1
            opened = wait_for("an open incident", lambda: incident("open"))
            assert opened["service"] == "web"
            assert opened["title"] == f"the switch of 127.0.0.1:{switch.port} is on"
            first = received()[0]
            assert first["actor"] == "prometheus-eu"  # the ingest token Prometheus sent
            data = first["data"]
            assert (data["source"], data["status"]) == ("prometheus", "firing")
            assert data["labels"] == {
                "alertname": "SwitchOn",
                "instance": f"127.0.0.1:{switch.port}",
                "job": "switch",
                "service": "web",
                "severity": "page",
            }
            assert "onduty_test_switch" in data["generator_url"]
            valid = datetime.fromisoformat(data["ends_at"]) - datetime.fromisoformat(first["ts"])
            assert 0 < valid.total_seconds() <= 10  # four resend delays, as Prometheus computes

            # 2. the rule stops firing: Prometheus says resolved, the incident resolves
            switch.value = 0
            resolved = wait_for("the incident resolved", lambda: incident("resolved"))
            assert resolved["id"] == opened["id"]
            last = [e for e in received() if e["data"]["status"] == "resolved"][-1]
            assert last["actor"] == "prometheus-eu"

            # 3. it fires again, then Prometheus dies: no re-send, no resolution from it; the
            # alert's endsAt passes and onduty resolves it on its own
            switch.value = 1
            again = wait_for("a second open incident", lambda: incident("open"))
            os.kill(prometheus.pid, signal.SIGKILL)
            prometheus.wait(10)
            killed_at = time.monotonic()
            gone = wait_for("the incident resolved at endsAt", lambda: incident("resolved"))
            assert gone["id"] == again["id"]
            assert time.monotonic() - killed_at < 12
            expired = [e for e in received() if e["data"]["status"] == "resolved"][-1]
            assert expired["actor"] == "onduty"
            assert expired["data"]["labels"]["alertname"] == "SwitchOn"
        finally:
            client.close()
            if prometheus.poll() is None:
                prometheus.kill()
                prometheus.wait(10)


def test_an_alert_firing_across_a_restart_still_expires(tmp_path: Path) -> None:
    """The alerts onduty must expire survive a restart: the log says which are firing."""
    config = tmp_path / "onduty.yaml"
    config.write_text(CONFIG)
    ingest = {"Authorization": f"Bearer {INGEST}"}
    alert = {"labels": {"alertname": "Restarted", "service": "web"}}
    onduty = Server(tmp_path / "restart.db", config=config, token=VIEWER).start()
    try:
        until = datetime.now(UTC) + timedelta(seconds=2)
        posted = httpx.post(
            f"{onduty.url}/api/v2/alerts",
            json=[{**alert, "endsAt": until.isoformat()}],
            headers=ingest,
        )
        assert posted.status_code == 202, posted.text
        assert onduty.terminate() == 0
        time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()))  # down past endsAt
        onduty.start()
        restarted = time.monotonic()
        with onduty.client() as client:

            def resolved() -> dict[str, Any] | None:
                listed = client.get("/api/v1/incidents").json()
                return listed[0] if listed and listed[0]["status"] == "resolved" else None

            assert client.get("/api/v1/incidents").json()[0]["status"] == "open"
            wait_for("the incident resolved after the restart", resolved, timeout=10)
            # it had one validity window (2 s) from the restart to be re-sent
            assert time.monotonic() - restarted >= 1.5
            events = client.get("/api/v1/events", params={"type": "SignalReceived"}).json()
        assert [e["actor"] for e in events] == ["prometheus-eu", "onduty"]
    finally:
        if onduty.process is not None and onduty.process.poll() is None:
            onduty.kill()
