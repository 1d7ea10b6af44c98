"""The senders' own client libraries against a real `onduty serve`, and every field they send
reaching the incident.

- PagerDuty's official Python client (`pagerduty.EventsApiV2Client`) speaks https only and posts
  to `<base URL>/v2/enqueue`: served over TLS (a certificate made here, which the client is told
  to trust), with the routing key as the source's ingest token.
- The CloudEvents SDK (`cloudevents`): binary mode (its default: `ce-*` headers, the data as the
  body, JSON or not), structured mode and a batch of its structured events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pagerduty
import pytest
from cloudevents.core.bindings.http import HTTPMessage, to_binary_event, to_structured_event
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import conversion as legacy_conversion
from cloudevents.v1.http import CloudEvent as LegacyCloudEvent

from onduty.api.auth import hash_token
from tests.integration.server import Server
from tests.integration.test_access import self_signed

VIEWER = "viewer-0123456789abcdef"
PD_KEY = "pd-routing-0123456789abcdef"  # the PagerDuty source's ingest token: its routing key
CE_TOKEN = "cloudevents-0123456789abcdef"
CONFIG = f"""
services:
  - {{name: checkout, autonomy: observe, instances: [checkout-1]}}
  - {{name: payments, autonomy: observe, instances: [pay-1]}}
correlation: {{group_by: [service, alertname, instance]}}
access:
  tokens:
    - {{name: vera, roles: [viewer], hash: "{hash_token(VIEWER)}"}}
  ingest:
    - {{name: pager, hash: "{hash_token(PD_KEY)}", routes: [pagerduty]}}
    - {{name: events, hash: "{hash_token(CE_TOKEN)}", routes: [cloudevents]}}
  failures: {{max: 1000, per: 1m}}
"""
CE_PATH = "/api/v1/signals/cloudevents"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("clients")
    (folder / "onduty.yaml").write_text(CONFIG)
    cert, key = self_signed(folder)
    with Server(
        folder / "clients.db", config=folder / "onduty.yaml", tls=(cert, key), token=VIEWER
    ) as running:
        yield running


def pager(server: Server, routing_key: str = PD_KEY, base: str = "") -> pagerduty.EventsApiV2Client:
    """PagerDuty's client, pointed at onduty (`base`: the path of the base URL) and trusting
    its self-signed certificate (`verify` goes to the client's underlying HTTP client)."""
    client = pagerduty.EventsApiV2Client(
        routing_key, base_url=server.url + base, verify=server.verify, timeout=10
    )
    client.max_http_attempts = 1  # an answer is final here: no retries with back-off
    return client


def wait_for_incident(server: Server, **wanted: str) -> dict[str, Any]:
    """The incident (its full view) whose fields include `wanted`, once it exists."""
    deadline = time.monotonic() + 15
    with server.client() as client:
        while True:
            listing = client.get("/api/v1/incidents").json()
            found = [i for i in listing if all(i.get(k) == v for k, v in wanted.items())]
            if found:
                return dict(client.get(f"/api/v1/incidents/{found[0]['id']}").json())
            assert time.monotonic() < deadline, f"no incident with {wanted}: {listing}"
            time.sleep(0.1)


def wait_for_status(server: Server, incident_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    with server.client() as client:
        while True:
            incident = dict(client.get(f"/api/v1/incidents/{incident_id}").json())
            if incident["status"] == status:
                return incident
            assert time.monotonic() < deadline, incident
            time.sleep(0.1)


def signals_of(server: Server, incident: dict[str, Any]) -> list[dict[str, Any]]:
    """The SignalReceived events (from the log) of the signals the incident holds."""
    fingerprints = {e["data"].get("fingerprint") for e in incident["timeline"]} - {None}
    with server.client() as client:
        events = client.get("/api/v1/events", params={"type": "SignalReceived", "limit": 10000})
    assert events.status_code == 200, events.text
    return [e["data"] for e in events.json() if e["data"]["fingerprint"] in fingerprints]


def changes(incident: dict[str, Any]) -> list[str]:
    return [e["data"]["change"] for e in incident["timeline"] if e["type"] == "IncidentUpdated"]


# --------------------------------------------------------------------------- PagerDuty


def test_pagerduty_official_client_trigger_acknowledge_resolve(server: Server) -> None:
    details = {
        "error_ratio": 0.073,
        "region": "eu-west-1",
        "owner": {"team": "payments", "slack": "#payments-oncall"},
        "top_paths": ["/cart", "/pay"],
        "note": "Zahlungsfehler über 5 % — 支付",
        "summary": "a detail that shares the summary's name",
    }
    links = [{"href": "https://runbooks.example.com/checkout", "text": "Runbook ✓"}]
    images = [{"src": "https://grafana.example.com/r/5xx.png", "href": "https://g.example.com/d"}]
    with pager(server) as client:  # base URL: the server itself; it posts to /v2/enqueue
        key = client.trigger(
            "Checkout 5xx above 5% — Zürich",
            "checkout-1",
            dedup_key="checkout/5xx",
            severity="critical",
            payload={"component": "checkout", "group": "payments", "class": "HighErrorRate"},
            custom_details=details,
            links=links,
            images=images,
        )
    assert key == "checkout/5xx"  # onduty answers as PagerDuty does
    incident = wait_for_incident(server, service="checkout", status="open")
    assert incident["title"]

    [signal] = signals_of(server, incident)
    assert signal["labels"] == {
        "alertname": "HighErrorRate",
        "source": "checkout-1",
        "severity": "critical",
        "component": "checkout",
        "group": "payments",
        "service": "checkout",
        "instance": "checkout-1",
    }
    assert signal["annotations"] == {
        "summary": "Checkout 5xx above 5% — Zürich",
        "error_ratio": "0.073",
        "region": "eu-west-1",
        "owner": '{"slack":"#payments-oncall","team":"payments"}',
        "top_paths": '["/cart","/pay"]',
        "note": "Zahlungsfehler über 5 % — 支付",
        "custom_details.summary": "a detail that shares the summary's name",
        "links": json.dumps(links, separators=(",", ":"), ensure_ascii=False),
        "images": json.dumps(images, separators=(",", ":"), sort_keys=True),
    }
    assert PD_KEY not in json.dumps(signal)  # the routing key is a credential, never kept

    with pager(server) as client:
        assert client.acknowledge(key) == key
    deadline = time.monotonic() + 15
    while "acknowledged" not in changes(incident):
        assert time.monotonic() < deadline, incident
        time.sleep(0.1)
        incident = wait_for_status(server, incident["id"], "open")

    # the same client with the route's own path as its base URL
    with pager(server, base="/api/v1/signals/pagerduty") as client:
        assert client.resolve(key) == key
    resolved = wait_for_status(server, incident["id"], "resolved")
    assert resolved["resolved_at"] is not None


def test_pagerduty_aliases_check_the_routing_key_like_the_route(server: Server) -> None:
    unknown = pager(server, routing_key="not-a-known-key-000")
    with unknown, pytest.raises(pagerduty.HttpError) as refused:
        unknown.trigger("x", "h", severity="info")
    assert refused.value.response.status_code == 401
    other = pager(server, routing_key=CE_TOKEN, base="/api/v1/signals/pagerduty")
    with other, pytest.raises(pagerduty.HttpError) as wrong_route:
        other.trigger("x", "h")
    assert wrong_route.value.response.status_code == 403
    # the aliases take no other body than PagerDuty's, and no bearer token is needed
    with httpx.Client(base_url=server.url, verify=server.verify) as plain:
        answer = plain.post("/v2/enqueue", json={"routing_key": PD_KEY, "event_action": "x"})
        assert answer.status_code == 422 and answer.json()["field"] == "event_action"


# --------------------------------------------------------------------------- CloudEvents


def send(server: Server, message: HTTPMessage | tuple[dict[str, str], bytes]) -> httpx.Response:
    headers, body = (message.headers, message.body) if isinstance(message, HTTPMessage) else message
    with server.client(CE_TOKEN) as client:
        return client.post(CE_PATH, content=body, headers=headers)


def test_cloudevents_sdk_binary_mode_without_labels_keeps_every_field(server: Server) -> None:
    data = {
        "service": "payments",
        "instance": "pay-1",
        "alertname": "HighLatency",
        "severity": "warning",
        "summary": "p99 über 2 s — 東京",
        "latency": {"p99_ms": 2300, "window": "5m"},
        "paging": True,
    }
    event = CloudEvent(
        {
            "type": "com.example.alert.firing",
            "source": "/monitoring/latency",
            "subject": "pay-1/api",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
        data,
    )
    message = to_binary_event(event)  # the SDK's default mode
    assert "content-type" not in {h.lower() for h in message.headers}  # JSON, undeclared
    answer = send(server, message)
    assert answer.status_code == 202, answer.text
    incident = wait_for_incident(server, service="payments", status="open")
    [signal] = signals_of(server, incident)
    assert signal["labels"] == {
        "service": "payments",
        "instance": "pay-1",
        "alertname": "HighLatency",
        "severity": "warning",
        "source": "/monitoring/latency",
        "subject": "pay-1/api",
    }
    assert signal["annotations"] == {
        "summary": "p99 über 2 s — 東京",
        "latency": '{"p99_ms":2300,"window":"5m"}',
        "paging": "true",
        "ce.type": "com.example.alert.firing",
        "ce.traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    assert signal["delivery_id"] == f"/monitoring/latency/{event.get_id()}"

    # resolved by an event in structured mode
    resolve = CloudEvent(
        {
            "type": "com.example.alert.resolved",
            "source": "/monitoring/latency",
            "subject": "pay-1/api",
        },
        {k: data[k] for k in ("service", "instance", "alertname", "severity")},
    )
    assert send(server, to_structured_event(resolve)).status_code == 202
    resolved = wait_for_status(server, incident["id"], "resolved")
    assert [s["status"] for s in signals_of(server, resolved)] == ["firing", "resolved"]


def test_cloudevents_sdk_binary_mode_data_that_is_not_json(server: Server) -> None:
    attributes = {"source": "/deploys", "subject": "checkout"}
    text = CloudEvent(
        {**attributes, "type": "com.example.deploy.text", "datacontenttype": "text/plain"},
        "checkout v1.42 ausgerollt ✓",
    )
    raw = CloudEvent(
        {
            **attributes,
            "type": "com.example.deploy.bytes",
            "datacontenttype": "application/octet-stream",
        },
        b"\x00\xffbinary",
    )
    for event in (text, raw):
        assert send(server, to_binary_event(event)).status_code == 202
    with server.client() as client:
        events = client.get("/api/v1/events", params={"type": "SignalReceived", "limit": 10000})
    by_type = {e["data"]["labels"]["alertname"]: e["data"] for e in events.json()}
    assert by_type["com.example.deploy.text"]["annotations"] == {
        "data": "checkout v1.42 ausgerollt ✓",
        "ce.datacontenttype": "text/plain",
    }
    assert by_type["com.example.deploy.bytes"]["annotations"] == {
        "data_base64": "AP9iaW5hcnk=",
        "ce.datacontenttype": "application/octet-stream",
    }


def test_cloudevents_sdk_structured_batch_and_the_legacy_api(server: Server) -> None:
    def alert(instance: str, type_: str = "com.example.alert.firing") -> CloudEvent:
        return CloudEvent(
            {"type": type_, "source": "/monitoring/disk"},
            {"service": "checkout", "instance": instance, "alertname": "DiskFull"},
        )

    structured = to_structured_event(alert("checkout-1"))
    assert structured.headers["content-type"] == "application/cloudevents+json"
    assert send(server, structured).status_code == 202
    # the SDK has no batch mode: a batch is an array of its structured events
    fmt = JSONFormat()
    batch = [alert("checkout-2"), alert("checkout-1", "com.example.alert.resolved")]
    body = b"[" + b",".join(fmt.write(event) for event in batch) + b"]"
    answer = send(server, ({"content-type": "application/cloudevents-batch+json"}, body))
    assert answer.status_code == 202 and answer.json()["accepted"] == 2
    # the 1.x API, still in the SDK (its ce-time is not percent-encoded)
    legacy = LegacyCloudEvent(
        {"type": "com.example.alert.firing", "source": "/legacy"},
        {"service": "checkout", "instance": "checkout-9", "alertname": "DiskFull"},
    )
    headers, body = legacy_conversion.to_binary(legacy)
    assert send(server, (dict(headers), body)).status_code == 202

    with server.client() as client:
        events = client.get("/api/v1/events", params={"type": "SignalReceived", "limit": 10000})
    disk = [e["data"] for e in events.json() if e["data"]["labels"].get("alertname") == "DiskFull"]
    assert [(s["labels"]["instance"], s["status"]) for s in disk] == [
        ("checkout-1", "firing"),
        ("checkout-2", "firing"),
        ("checkout-1", "resolved"),
        ("checkout-9", "firing"),
    ]
    assert all(s["labels"]["service"] == "checkout" for s in disk)
