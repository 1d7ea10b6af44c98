"""Silences over the API and the CLI, and pollers feeding a running `onduty serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.integration.server import Server

CONFIG = """
services:
  - {name: search, autonomy: act, instances: [search-1, search-2]}
correlation: {group_by: [service, alertname, instance]}
runbooks:
  - name: restart
    when: signal.labels.alertname == "InstanceDown"
    do: [{action: process.restart, target: "{{ signal.labels.instance }}"}]
"""


def cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onduty", *args, "--url", url],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "COLUMNS": "240"},
    )  # fmt: skip


def down(instance: str) -> dict[str, object]:
    return {
        "source": "test",
        "fingerprint": f"down-{instance}",
        "status": "firing",
        "labels": {"alertname": "InstanceDown", "instance": instance, "service": "search"},
    }


def timeline(client: httpx.Client, instance: str) -> list[dict[str, object]]:
    incidents = client.get("/api/v1/incidents").json()
    mine = [i for i in incidents if instance in i["title"]]
    assert len(mine) == 1, incidents
    return list(client.get(f"/api/v1/incidents/{mine[0]['id']}").json()["timeline"])


def test_a_silence_mutes_until_it_is_expired(tmp_path: Path) -> None:
    config = tmp_path / "onduty.yaml"
    config.write_text(CONFIG)
    with Server(tmp_path / "silence.db", config=config) as server, server.client() as client:
        added = cli(
            "silence", "add", 'instance="search-1"', "--comment", "kernel upgrade",
            "--duration", "2h", "--maintenance", "--by", "alice", url=server.url,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        silence_id = added.stdout.split()[1]
        listed = cli("silence", "list", url=server.url)
        assert silence_id in listed.stdout and "kernel upgrade" in listed.stdout

        assert client.post("/api/v1/signals", json=down("search-1")).status_code == 202
        assert client.post("/api/v1/signals", json=down("search-2")).status_code == 202
        muted = timeline(client, "search-1")
        changes = [e["data"].get("change") for e in muted]  # type: ignore[union-attr]
        assert "muted" in changes
        assert not any(e["type"] == "ActionProposed" for e in muted)
        detail = next(e for e in muted if e["data"].get("change") == "muted")  # type: ignore[union-attr]
        assert "maintenance window" in str(detail["data"]) and "alice" in str(detail["data"])
        assert any(e["type"] == "ActionProposed" for e in timeline(client, "search-2"))

        expired = cli("silence", "expire", silence_id, url=server.url)
        assert expired.returncode == 0, expired.stderr
        after = timeline(client, "search-1")
        assert "unmuted" in [e["data"].get("change") for e in after]  # type: ignore[union-attr]
        assert any(e["type"] == "ActionProposed" for e in after)
        again = cli("silence", "expire", silence_id, url=server.url)
        assert again.returncode == 2 and "404" in again.stderr


def test_bad_silences_are_refused(tmp_path: Path) -> None:
    with Server(tmp_path / "bad.db") as server, server.client() as client:
        broken = client.post(
            "/api/v1/silences", json={"matchers": ["service=~"], "comment": "x", "duration": "1h"}
        )
        assert broken.status_code == 422
        assert "matchers" in broken.text
        no_end = client.post("/api/v1/silences", json={"matchers": ['a="b"'], "comment": "x"})
        assert no_end.status_code == 422
        refused = cli("silence", "add", "nonsense", "--comment", "x", url=server.url)
        assert refused.returncode == 2 and "422" in refused.stderr


def test_pagerduty_clients_get_their_acknowledgement(tmp_path: Path) -> None:
    with Server(tmp_path / "pd.db") as server, server.client() as client:
        response = client.post(
            "/api/v1/signals/pagerduty",
            json={
                "routing_key": "rk",
                "event_action": "trigger",
                "dedup_key": "abc",
                "payload": {"summary": "s", "source": "h", "severity": "error"},
            },
        )
        assert response.status_code == 202
        assert response.json()["dedup_key"] == "abc"
        assert response.json()["status"] == "success"


class Health(BaseHTTPRequestHandler):
    healthy = True

    def do_GET(self) -> None:
        self.send_response(200 if Health.healthy else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_probe_source_opens_and_resolves_an_incident(
    tmp_path: Path, health_server: str
) -> None:
    config = tmp_path / "onduty.yaml"
    config.write_text(
        CONFIG
        + f"""
sources:
  - kind: http_probe
    name: search-1-health
    url: {health_server}
    interval: 200ms
    timeout: 100ms
    labels: {{service: search, instance: search-1}}
"""
    )
    Health.healthy = False
    with Server(tmp_path / "probe.db", config=config) as server, server.client() as client:

        def incidents(status: str) -> list[dict[str, object]]:
            found = client.get("/api/v1/incidents", params={"status": status}).json()
            return [
                i for i in found if "ProbeFailed" in str(i["title"]) or i["service"] == "search"
            ]

        deadline = time.monotonic() + 15
        while not incidents("open") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert incidents("open"), "the failing probe did not open an incident"
        Health.healthy = True
        while not incidents("resolved") and time.monotonic() < deadline + 15:
            time.sleep(0.1)
        assert incidents("resolved"), "the recovered probe did not resolve the incident"
