"""`onduty serve` end to end, over HTTP: every wire format, every error case, shutdown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.server import Server

AM = {"Content-Type": "application/json"}
CONFIG = """
services:
  - {name: checkout, tier: critical, autonomy: approve, instances: [checkout-1, checkout-2]}
  - {name: search, autonomy: act, instances: [search-1, search-2, search-3]}
correlation: {group_by: [service, alertname, instance]}
runbooks:
  - name: restart
    when: signal.labels.alertname == "InstanceDown"
    do: [{action: process.restart, target: "{{ signal.labels.instance }}"}]
"""


def native(instance: str, status: str = "firing", **extra: str) -> dict[str, object]:
    return {
        "source": "test",
        "fingerprint": f"down-{instance}",
        "status": status,
        "labels": {"alertname": "InstanceDown", "instance": instance, **extra},
    }


def alertmanager(alerts: list[tuple[str, str]], group_status: str = "firing") -> dict[str, object]:
    zero = "0001-01-01T00:00:00Z"
    return {
        "version": "4",
        "groupKey": '{}:{alertname="InstanceDown"}',
        "truncatedAlerts": 0,
        "status": group_status,
        "receiver": "onduty",
        "groupLabels": {"alertname": "InstanceDown"},
        "commonLabels": {"alertname": "InstanceDown"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "InstanceDown", "instance": instance, "service": "search"},
                "annotations": {"summary": f"{instance} is down"},
                "startsAt": "2026-01-05T09:00:00Z",
                "endsAt": zero if status == "firing" else "2026-01-05T09:05:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": f"fp{instance}",
            }
            for instance, status in alerts
        ],
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> object:
    folder = tmp_path_factory.mktemp("serve")
    (folder / "onduty.yaml").write_text(CONFIG)
    with Server(
        folder / "serve.db", "--max-body", "65536", config=folder / "onduty.yaml"
    ) as running:
        yield running


def events_of(client: httpx.Client, kind: str) -> list[dict[str, object]]:
    response = client.get("/api/v1/events", params={"type": kind, "limit": 10000})
    assert response.status_code == 200
    return list(response.json())


def test_probes(server: Server) -> None:
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "onduty_signals_ingested_total" in metrics.text


def test_native_signal_opens_an_incident(server: Server) -> None:
    with server.client() as client:
        accepted = client.post("/api/v1/signals", json=native("search-1", service="search"))
        assert accepted.status_code == 202, accepted.text
        assert accepted.json() == {"accepted": 1}
        incidents = client.get("/api/v1/incidents", params={"status": "all"}).json()
        found = [i for i in incidents if "search-1" in i["title"]]
        assert found, incidents
        detail = client.get(f"/api/v1/incidents/{found[0]['id']}").json()
        kinds = [event["type"] for event in detail["timeline"]]
        assert kinds[:3] == ["IncidentOpened", "IncidentUpdated", "ActionProposed"]
        assert "PolicyEvaluated" in kinds


def test_alertmanager_webhook_takes_each_alerts_own_status(server: Server) -> None:
    with server.client() as client:
        first = alertmanager([("search-2", "firing"), ("search-3", "firing")])
        assert client.post("/api/v1/signals/alertmanager", json=first).status_code == 202
        # the group says "firing", but search-2's own status is resolved
        second = alertmanager([("search-2", "resolved"), ("search-3", "firing")])
        assert client.post("/api/v1/signals/alertmanager", json=second).status_code == 202
        received = [
            (e["data"]["fingerprint"], e["data"]["status"])  # type: ignore[index]
            for e in events_of(client, "SignalReceived")
        ]
        assert ("fpsearch-2", "resolved") in received
        assert received.count(("fpsearch-3", "firing")) == 2


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "field"),
    [
        ("/api/v1/signals", {"Content-Type": "text/plain"}, b"{}", 415, None),
        ("/api/v1/signals/alertmanager", {}, b'{"version": "4"}', 415, None),
        ("/api/v1/signals", AM, b"{not json", 400, None),
        ("/api/v1/signals", AM, json.dumps({"source": "x", "status": "firing"}).encode(), 422,
         "fingerprint"),
        ("/api/v1/signals/alertmanager", AM, json.dumps({"version": "3", "alerts": []}).encode(),
         422, "version"),
        ("/api/v1/signals/pagerduty", AM, json.dumps({"event_action": "trigger"}).encode(), 422,
         "routing_key"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_the_field_named(
    server: Server, path: str, headers: dict[str, str], body: bytes, status: int, field: str | None
) -> None:
    with server.client() as client:
        response = client.post(path, content=body, headers=headers)
        assert response.status_code == status, response.text
        problem = response.json()
        assert problem["error"]
        if field is not None:
            assert field in (problem["field"] or "") + problem["error"]


def test_oversize_body_is_413(server: Server) -> None:
    with server.client() as client:
        big = json.dumps([native(f"search-{n}") for n in range(2000)]).encode()
        assert len(big) > 65536
        response = client.post("/api/v1/signals", content=big, headers=AM)
        assert response.status_code == 413
        assert "limit" in response.json()["error"]


def test_rejected_json_is_kept_as_an_event_with_secrets_redacted(server: Server) -> None:
    with server.client() as client:
        body = {"routing_key": "R0UT1NGSECRET", "event_action": "explode"}
        response = client.post("/api/v1/signals/pagerduty", json=body)
        assert response.status_code == 422
        rejected = events_of(client, "SignalRejected")
        assert rejected
        last = rejected[-1]["data"]
        assert last["source"] == "pagerduty"  # type: ignore[index]
        assert "R0UT1NGSECRET" not in json.dumps(rejected)
    tail = subprocess.run(
        [sys.executable, "-m", "onduty", "events", "tail", "--store", str(server.store),
         "--type", "SignalRejected"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert tail.returncode == 0
    assert "SignalRejected" in tail.stdout


def test_pagerduty_trigger_acknowledge_resolve(server: Server) -> None:
    event = {
        "routing_key": "abc123",
        "dedup_key": "disk-full-db-9",
        "payload": {"summary": "disk full", "source": "db-9", "severity": "critical"},
    }
    with server.client() as client:
        for action in ("trigger", "acknowledge", "resolve"):
            response = client.post(
                "/api/v1/signals/pagerduty", json={**event, "event_action": action}
            )
            assert response.status_code == 202, response.text
        statuses = [
            e["data"]["status"]  # type: ignore[index]
            for e in events_of(client, "SignalReceived")
            if e["data"]["fingerprint"] == "pd:disk-full-db-9"  # type: ignore[index]
        ]
        assert statuses == ["firing", "acknowledged", "resolved"]
        assert "abc123" not in json.dumps(events_of(client, "SignalReceived"))


def test_cloudevents_single_batch_and_duplicates(server: Server) -> None:
    def cloudevent(event_id: str, status: str = "firing") -> dict[str, object]:
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": "/monitoring/probe",
            "type": "com.example.alert",
            "data": {"status": status, "labels": {"alertname": "Probe", "instance": "x-1"}},
        }

    with server.client() as client:
        single = client.post(
            "/api/v1/signals/cloudevents",
            content=json.dumps(cloudevent("e-1")),
            headers={"Content-Type": "application/cloudevents+json"},
        )
        assert single.status_code == 202, single.text
        batch = client.post(
            "/api/v1/signals/cloudevents",
            content=json.dumps([cloudevent("e-1"), cloudevent("e-2", "resolved")]),
            headers={"Content-Type": "application/cloudevents-batch+json"},
        )
        assert batch.status_code == 202, batch.text
        opened = [
            e for e in events_of(client, "IncidentUpdated")
            if e["data"]["change"] == "signal_resolved"  # type: ignore[index]
        ]  # fmt: skip
        assert opened  # e-2 resolved the incident e-1 opened; the repeated e-1 changed nothing


def test_approval_over_the_api(server: Server) -> None:
    with server.client() as client:
        signal = native("checkout-2", service="checkout")
        assert client.post("/api/v1/signals", json=signal).status_code == 202
        pending = client.get("/api/v1/approvals").json()
        mine = [a for a in pending if "checkout-2" in a["summary"]]
        assert len(mine) == 1, pending
        approval_id = mine[0]["id"]
        assert client.post(f"/api/v1/approvals/{approval_id}/approve", json={}).status_code == 202
        assert client.post(f"/api/v1/approvals/{approval_id}/approve", json={}).status_code == 404
        assert client.post("/api/v1/approvals/apr-nope/deny", json={}).status_code == 404
        incident = client.get(f"/api/v1/incidents/{mine[0]['incident_id']}").json()
        verdicts = [
            e["data"]["verdict"] for e in incident["timeline"] if e["type"] == "PolicyEvaluated"
        ]
        assert verdicts == ["require_approval", "allow"]


def test_audit_verify_over_http(server: Server) -> None:
    with server.client() as client:
        report = client.get("/api/v1/audit/verify").json()
        assert report["intact"] is True and report["events"] > 0


def test_sigterm_drains_and_exits_0(tmp_path: Path) -> None:
    store = tmp_path / "term.db"
    server = Server(store).start()
    with server.client() as client:
        for n in range(20):
            assert client.post("/api/v1/signals", json=native(f"x-{n}")).status_code == 202
    assert server.terminate() == 0
    verify = subprocess.run(
        [sys.executable, "-m", "onduty", "audit", "verify", "--store", str(store)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr


def test_serve_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onduty", "serve", "--host", "0.0.0.0", "--store",
         str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "loopback" in result.stderr
