"""Golden deliveries, as the real senders write them, shared by the format tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson

RECEIVED_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ROUTING_KEY = "R0f2a9c8e7d6b5a4938271605f4e3d2c"  # shaped like a PagerDuty integration key

ALERTMANAGER: dict[str, Any] = {
    "receiver": "onduty",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "HighErrorRate",
                "instance": "checkout-7f9c:8080",
                "job": "checkout",
                "service": "checkout",
                "severity": "critical",
            },
            "annotations": {
                "summary": "5xx ratio above 5% on checkout-7f9c",
                "runbook_url": "https://runbooks.example.com/checkout/high-error-rate",
            },
            "startsAt": "2024-05-01T11:52:26.739266876Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=job%3Acheckout_5xx%3Aratio"
            "+%3E+0.05&g0.tab=1",
            "fingerprint": "1a30ba71cca2921f",
        },
        {
            "status": "resolved",
            "labels": {
                "alertname": "HighErrorRate",
                "instance": "checkout-2b1d:8080",
                "job": "checkout",
                "service": "checkout",
                "severity": "critical",
            },
            "annotations": {"summary": "5xx ratio above 5% on checkout-2b1d"},
            "startsAt": "2024-05-01T11:40:11.5+02:00",
            "endsAt": "2024-05-01T11:58:41.1Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=job%3Acheckout_5xx%3Aratio",
            "fingerprint": "c6eadffa33fcdf37",
        },
        {
            "status": "firing",
            "labels": {
                "alertname": "HighErrorRate",
                "instance": "checkout-0a3e:8080",
                "job": "checkout",
                "service": "checkout",
                "severity": "critical",
            },
            "annotations": {},
            "startsAt": "2024-05-01T11:59:56Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": "bc97ff14869b13e3",
        },
    ],
    "groupLabels": {"alertname": "HighErrorRate", "service": "checkout"},
    "commonLabels": {
        "alertname": "HighErrorRate",
        "job": "checkout",
        "service": "checkout",
        "severity": "critical",
    },
    "commonAnnotations": {},
    "externalURL": "http://alertmanager-0:9093",
    "version": "4",
    "groupKey": '{}/{severity="critical"}:{alertname="HighErrorRate", service="checkout"}',
    "truncatedAlerts": 0,
}

PAGERDUTY_TRIGGER: dict[str, Any] = {
    "routing_key": ROUTING_KEY,
    "event_action": "trigger",
    "dedup_key": "checkout/high-error-rate",
    "payload": {
        "summary": "Checkout 5xx ratio above 5% in eu-west-1",
        "timestamp": "2024-05-01T11:52:26.739+0000",
        "source": "checkout-7f9c.prod.example.com",
        "severity": "critical",
        "component": "checkout",
        "group": "payments",
        "class": "HighErrorRate",
        "custom_details": {
            "error_ratio": 0.073,
            "threshold": 5,
            "paging": True,
            "region": "eu-west-1",
            "top_paths": ["/cart", "/pay"],
            "owner": {"team": "payments", "slack": "#payments-oncall"},
        },
    },
    "images": [
        {
            "src": "https://grafana.example.com/render/checkout-5xx.png",
            "href": "https://grafana.example.com/d/checkout",
            "alt": "5xx ratio",
        }
    ],
    "links": [{"href": "https://runbooks.example.com/checkout/high-error-rate", "text": "Runbook"}],
    "client": "Prometheus",
    "client_url": "http://prometheus:9090/alerts",
}

PAGERDUTY_ACKNOWLEDGE: dict[str, Any] = {
    "routing_key": ROUTING_KEY,
    "event_action": "acknowledge",
    "dedup_key": "checkout/high-error-rate",
}

PAGERDUTY_RESOLVE: dict[str, Any] = {
    "routing_key": ROUTING_KEY,
    "event_action": "resolve",
    "dedup_key": "checkout/high-error-rate",
}

CLOUDEVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "8d5c7e3a-4b1f-4f0e-9a57-0c1d2e3f4a5b",
    "source": "//monitoring.example.com/rules/disk",
    "type": "com.example.alert.firing",
    "subject": "db-1",
    "time": "2024-05-01T11:55:00Z",
    "datacontenttype": "application/json",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "data": {
        "alertname": "DiskFillingUp",
        "labels": {"service": "db", "instance": "db-1", "severity": "warning"},
        "annotations": {"summary": "Disk /var/lib/postgresql will be full within 4h"},
    },
}

CLOUDEVENT_BATCH: list[dict[str, Any]] = [
    CLOUDEVENT,
    {
        "specversion": "1.0",
        "id": "evt-0002",
        "source": "//monitoring.example.com/rules/disk",
        "type": "com.example.alert.resolved",
        "time": "2024-05-01T11:58:00+01:00",
        "data": {
            "fingerprint": "disk-db-2",
            "labels": {"service": "db", "instance": "db-2"},
        },
    },
    {
        "specversion": "1.0",
        "id": "evt-0003",
        "source": "urn:example:deploys",
        "type": "com.example.deploy.finished",
        "datacontenttype": "text/plain",
        "data": "checkout v1.42 rolled out",
    },
]

NATIVE: dict[str, Any] = {
    "source": "probe",
    "fingerprint": "probe:checkout:http",
    "status": "firing",
    "labels": {"alertname": "ProbeFailed", "service": "checkout"},
    "annotations": {"summary": "GET /health failed 3 times"},
    "starts_at": "2024-05-01T13:58:00+02:00",
    "generator_url": "https://probes.example.com/checkout",
    "delivery_id": "probe-run-918",
}

NATIVE_LIST: list[dict[str, Any]] = [
    NATIVE,
    {
        "source": "probe",
        "fingerprint": "probe:db:tcp",
        "status": "resolved",
        "starts_at": "2024-05-01T11:00:00Z",
        "ends_at": "2024-05-01T11:30:00Z",
    },
    {"source": "pager", "fingerprint": "pd:42", "status": "acknowledged"},
]


def dump(value: Any) -> bytes:
    """JSON as any sender might write it: big integers included, non-ASCII escaped."""
    return json.dumps(value).encode()


def many_alerts(count: int) -> bytes:
    """An Alertmanager notification of `count` alerts of about 1 KB each."""
    template = ALERTMANAGER["alerts"][0]
    alerts = []
    for position in range(count):
        alert = orjson.loads(orjson.dumps(template))
        alert["labels"]["instance"] = f"checkout-{position}:8080"
        alert["annotations"]["description"] = "The 5xx ratio is above threshold. " * 12
        alert["fingerprint"] = f"{position:016x}"
        if position % 3 == 0:
            alert["status"] = "resolved"
            alert["endsAt"] = "2024-05-01T11:59:00Z"
        alerts.append(alert)
    return dump({**ALERTMANAGER, "alerts": alerts})
