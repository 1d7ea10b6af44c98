"""Grafana Alerting's webhook contact point delivers to a real `onduty serve`: its documented
notification is accepted on its own route and on the Alertmanager route, every field of it
reaches the log, and the firing alert opens an incident."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onduty.api.auth import hash_token
from tests.integration.server import Server
from tests.sense.payloads_grafana import BODY, FIRING_EXTRAS, GRAFANA

VIEWER, GRAFANA_TOKEN, AM_TOKEN = "tok-grafana-viewer", "tok-grafana-ingest", "tok-am-ingest"
CONFIG = f"""
services:
  - {{name: checkout, autonomy: observe, instances: [checkout-1]}}
correlation: {{group_by: [service, alertname]}}
access:
  tokens:
    - {{name: vera, roles: [viewer], hash: "{hash_token(VIEWER)}"}}
  ingest:
    - {{name: grafana-prod, hash: "{hash_token(GRAFANA_TOKEN)}", routes: [grafana]}}
    - {{name: am, hash: "{hash_token(AM_TOKEN)}", routes: [alertmanager]}}
"""


def _post(server: Server, path: str, token: str = GRAFANA_TOKEN) -> Any:
    with server.client(token) as client:
        return client.post(path, content=BODY, headers={"Content-Type": "application/json"})


def test_grafanas_notification_reaches_the_incident_with_every_field(tmp_path: Path) -> None:
    config = tmp_path / "onduty.yaml"
    config.write_text(CONFIG)
    with Server(tmp_path / "grafana.db", config=config, token=VIEWER) as server:
        answer = _post(server, "/api/v1/signals/grafana")
        assert (answer.status_code, answer.json()) == (202, {"accepted": 2})
        # the credential names the grafana route only: the Alertmanager route is not its
        refused = _post(server, "/api/v1/signals/alertmanager")
        assert refused.status_code == 403, refused.text
        assert "grafana-prod may not send to the alertmanager route" in refused.json()["error"]
        # a contact point pointed at the Alertmanager route: before, `422 unsupported version,
        # expected "4"`
        answer = _post(server, "/api/v1/signals/alertmanager", AM_TOKEN)
        assert (answer.status_code, answer.json()) == (202, {"accepted": 2})

        with server.client() as client:
            incidents = client.get("/api/v1/incidents").json()
            assert [i["status"] for i in incidents] == ["open"]  # the resolved alert never fired
            incident = client.get(f"/api/v1/incidents/{incidents[0]['id']}").json()
            assert incident["service"] == "checkout"
            assert incident["title"] == "checkout in us-1 is short of memory"  # its summary
            assert any(e["type"] == "IncidentOpened" for e in incident["timeline"])
            received = client.get("/api/v1/events", params={"type": "SignalReceived"}).json()

    assert [event["actor"] for event in received] == ["grafana-prod"] * 2 + ["am"] * 2
    assert received[0]["data"] == received[2]["data"]  # the same signals by either route
    by_fingerprint = {event["data"]["fingerprint"]: event["data"] for event in received}
    firing, resolved = by_fingerprint["c6eadffa33fcdf37"], by_fingerprint["bc97ff14869b13e3"]
    alert = GRAFANA["alerts"][0]
    assert firing["source"] == "grafana"
    assert firing["status"] == "firing"
    assert firing["labels"] == alert["labels"]
    assert firing["annotations"] == {**FIRING_EXTRAS, **alert["annotations"]}
    assert firing["generator_url"] == alert["generatorURL"]
    assert firing["starts_at"].startswith("2024-05-01T11:51:03.157076")
    assert firing["ends_at"] is None
    opened = next(e for e in incident["timeline"] if e["type"] == "IncidentOpened")
    assert opened["data"]["fingerprint"] == "c6eadffa33fcdf37"
    assert (resolved["status"], resolved["source"]) == ("resolved", "grafana")
    assert resolved["ends_at"].startswith("2024-05-01T11:56:03.157076")
