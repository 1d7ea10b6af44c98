"""Changing the policy of a running `onduty serve`: reload (SIGHUP and API), a shadow and a canary
candidate, promotion and rollback; an invalid bundle never activates."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests import run_cli
from tests.integration.server import Server

BASE = """
services:
  - {name: web, autonomy: act, instances: [web-1, web-2, web-3]}
correlation: {group_by: [instance, alertname]}
runbooks:
  - name: restart
    when: signal.labels.alertname == "InstanceDown"
    do: [{action: process.restart, target: "{{ signal.labels.instance }}"}]
policy:
  guardrails:
    - name: budget
      rate: {action: process.restart, max: MAX, per: 1h}
"""


def write(path: Path, budget: int) -> Path:
    path.write_text(BASE.replace("MAX", str(budget)))
    return path


def cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return run_cli.onduty("policy", *args, "--url", url, timeout=60)


def down(client: httpx.Client, instance: str) -> list[dict[str, object]]:
    labels = {"alertname": "InstanceDown", "instance": instance, "service": "web"}
    body = {"source": "t", "fingerprint": f"d-{instance}", "status": "firing", "labels": labels}
    assert client.post("/api/v1/signals", json=body).status_code == 202
    incidents = [i for i in client.get("/api/v1/incidents").json() if instance in i["title"]]
    return list(client.get(f"/api/v1/incidents/{incidents[0]['id']}").json()["timeline"])


def test_reload_shadow_canary_promote_rollback(tmp_path: Path) -> None:
    config = write(tmp_path / "onduty.yaml", 5)
    strict = write(tmp_path / "strict.yaml", 0)
    with Server(tmp_path / "policy.db", config=config) as server, server.client() as client:
        first = client.get("/api/v1/policy").json()

        shadow = cli("shadow", str(strict), url=server.url)
        assert shadow.returncode == 0, shadow.stderr
        timeline = down(client, "web-1")
        kinds = [e["type"] for e in timeline]
        assert "PolicyShadowDiverged" in kinds
        verdicts = [e["data"]["verdict"] for e in timeline if e["type"] == "PolicyEvaluated"]
        assert verdicts == ["allow"]  # the shadow is never enforced

        canary = cli("canary", str(strict), "--selector", 'service.name == "web"', url=server.url)
        assert canary.returncode == 0, canary.stderr
        timeline = down(client, "web-2")
        verdicts = [e["data"]["verdict"] for e in timeline if e["type"] == "PolicyEvaluated"]
        assert verdicts == ["deny"]  # the canary decides for web

        assert cli("rollback", url=server.url).returncode == 0  # drops the candidate
        assert client.get("/api/v1/policy").json()["candidate"] is None

        assert cli("shadow", str(strict), url=server.url).returncode == 0
        promoted = cli("promote", url=server.url)
        assert promoted.returncode == 0, promoted.stderr
        now = client.get("/api/v1/policy").json()
        assert now["version"] != first["version"] and now["candidate"] is None

        assert cli("rollback", url=server.url).returncode == 0  # back to the previous policy
        assert client.get("/api/v1/policy").json()["version"] == first["version"]

        # An invalid bundle never activates: the running policy stays.
        config.write_text(BASE.replace("MAX", "-1"))
        refused = cli("reload", url=server.url)
        assert refused.returncode == 2 and "422" in refused.stderr
        assert client.get("/api/v1/policy").json()["version"] == first["version"]

        # SIGHUP re-reads the file.
        write(config, 2)
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while client.get("/api/v1/policy").json()["version"] == first["version"]:
            assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
            time.sleep(0.05)
        assert client.get("/api/v1/policy").json()["source"] == str(config)
