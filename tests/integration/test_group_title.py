"""End to end: OOM-killed pods of one service, posted to a running `onduty serve`, are one
incident whose API answer and console page are titled by what the pods share, with their
count — not by the first pod's summary."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.server import Server

CONFIG = """
services:
  - {name: svc-0, autonomy: act}
correlation:
  group_by: [service, alertname]
"""

PODS = 12


def oom(number: int) -> dict[str, object]:
    return {
        "source": "k8s",
        "fingerprint": f"oom-pod-{number}",
        "status": "firing",
        "labels": {"alertname": "PodOOMKilled", "service": "svc-0", "pod": f"pod-{number}"},
        "annotations": {"summary": f"pod-{number} OOM killed"},
    }


def test_oom_killed_pods_are_one_incident_titled_by_what_they_share(tmp_path: Path) -> None:
    config = tmp_path / "onduty.yaml"
    config.write_text(CONFIG)
    with Server(tmp_path / "onduty.db", config=config) as server, server.client() as client:
        sent = client.post("/api/v1/signals", json=[oom(104 + n) for n in range(PODS)])
        assert sent.status_code == 202, sent.text
        deadline = time.monotonic() + 15
        while True:
            listed = client.get("/api/v1/incidents").json()
            if listed and listed[0]["signals"] == PODS:
                break
            assert time.monotonic() < deadline, listed
            time.sleep(0.1)
        (incident,) = listed
        assert incident["title"] == f"PodOOMKilled on svc-0: {PODS} pods"
        one = client.get(f"/api/v1/incidents/{incident['id']}").json()
        assert one["title"] == f"PodOOMKilled on svc-0: {PODS} pods"
        page = client.get(f"/incidents/{incident['id']}")
        assert f"PodOOMKilled on svc-0: {PODS} pods" in page.text
        retitles = client.get(
            "/api/v1/events", params={"type": "IncidentUpdated", "limit": 1000}
        ).json()
        assert [e["data"]["detail"] for e in retitles if e["data"]["change"] == "retitled"] == [
            "PodOOMKilled on svc-0"
        ]
        assert server.terminate() == 0
