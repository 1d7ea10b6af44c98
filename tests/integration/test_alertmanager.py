"""A real Prometheus Alertmanager on loopback delivers to onduty through its webhook receiver:
alerts are grouped into the expected incidents and resolve when Alertmanager says resolved."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.server import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path("/usr/bin/prometheus-alertmanager")

CONFIG = """
services:
  - {name: search, autonomy: act, instances: [search-1, search-2, search-3]}
  - {name: payments, autonomy: act, instances: [payments-1]}
correlation: {group_by: [service, alertname]}
"""


def ensure_alertmanager() -> None:
    if not BINARY.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_alertmanager.sh")], check=True)
    assert BINARY.exists(), "prometheus-alertmanager could not be installed"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, Server]]:
    ensure_alertmanager()
    config = tmp_path / "onduty.yaml"
    config.write_text(CONFIG)
    onduty = Server(tmp_path / "am.db", config=config).start()
    port = free_port()
    (tmp_path / "alertmanager.yml").write_text(
        f"""
route:
  receiver: onduty
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: onduty
    webhook_configs:
      - url: {onduty.url}/api/v1/signals/alertmanager
        send_resolved: true
"""
    )
    with (tmp_path / "alertmanager.log").open("wb") as output:
        process = subprocess.Popen(
            [
                str(BINARY),
                f"--config.file={tmp_path / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "alertmanager.log").read_text()
            assert time.monotonic() < deadline, "Alertmanager did not become ready"
            time.sleep(0.1)
        yield url, onduty
    finally:
        process.terminate()
        process.wait(10)
        onduty.terminate()
        save_log(tmp_path / "am.db")


def save_log(store: Path) -> None:
    """With ONDUTY_SAVE_LOG set (scripts/golden.py sets it), keep a copy of the store there:
    it becomes the golden log tests/test_golden.py replays."""
    target = os.environ.get("ONDUTY_SAVE_LOG")
    if not target:
        return
    for suffix in ("", "-wal", "-shm"):
        part = store.with_name(store.name + suffix)
        if part.exists():
            shutil.copyfile(part, target + suffix)


def post_alerts(url: str, alerts: list[dict[str, str]], resolved: bool) -> None:
    now = datetime.now(UTC)
    body = [
        {
            "labels": labels,
            "annotations": {"summary": f"{labels['alertname']} on {labels['instance']}"},
            "startsAt": (now - timedelta(minutes=5)).isoformat(),
            "endsAt": (
                now - timedelta(seconds=1) if resolved else now + timedelta(hours=1)
            ).isoformat(),
            "generatorURL": "http://prometheus.example/graph",
        }
        for labels in alerts
    ]
    response = httpx.post(f"{url}/api/v2/alerts", json=body, timeout=5)
    assert response.status_code == 200, response.text


def wait_for(check: object, what: str, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()  # type: ignore[operator]
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_alertmanager_webhook_to_incidents(alertmanager: tuple[str, Server]) -> None:
    am_url, onduty = alertmanager
    alerts = [
        {"alertname": "InstanceDown", "service": "search", "instance": "search-1"},
        {"alertname": "InstanceDown", "service": "search", "instance": "search-2"},
        {"alertname": "HighLatency", "service": "payments", "instance": "payments-1"},
    ]
    post_alerts(am_url, alerts, resolved=False)
    with onduty.client() as client:

        def incidents() -> list[dict[str, object]]:
            found = client.get("/api/v1/incidents", params={"status": "all"}).json()
            return found if sum(int(i["signals"]) for i in found) == 3 else []

        found = wait_for(incidents, "three signals in onduty")
        assert isinstance(found, list)
        by_title = {str(i["service"]): i for i in found}
        assert sorted(by_title) == ["payments", "search"]
        assert by_title["search"]["signals"] == 2  # grouped by service and alertname
        assert all(i["status"] == "open" for i in found)

        post_alerts(am_url, alerts, resolved=True)

        def resolved() -> bool:
            current = client.get("/api/v1/incidents", params={"status": "all"}).json()
            return bool(current) and all(i["status"] == "resolved" for i in current)

        wait_for(resolved, "Alertmanager's resolved notifications")
        received = client.get(
            "/api/v1/events", params={"type": "SignalReceived", "limit": 1000}
        ).json()
        assert {e["data"]["status"] for e in received} == {"firing", "resolved"}
        assert all(e["data"]["source"] == "alertmanager" for e in received)
