"""The store holds no secret in clear: `onduty serve` runs a configuration with every kind of
secret (ingest tokens, an HMAC secret, PagerDuty routing keys in and out, an actuator's header,
a webhook's header, a Slack URL, SMTP credentials, user tokens), every one of them is used
(signals by each credential, an action, notifications on each channel, a rejected body carrying
a routing key), and then every file beside the store is scanned for each secret."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from onduty.api.auth import hash_token, sign
from tests.integration.server import Server, free_port

SECRETS = {
    "ONDUTY_TEST_ADMIN_TOKEN": "adm1n-" + uuid.uuid4().hex,
    "ONDUTY_TEST_AM_TOKEN": "am-" + uuid.uuid4().hex,
    "ONDUTY_TEST_PD_INGEST": "pd-in-" + uuid.uuid4().hex,
    "ONDUTY_TEST_CE_HMAC": "hmac-" + uuid.uuid4().hex,
    "ONDUTY_TEST_ACT_TOKEN": "act-" + uuid.uuid4().hex,
    "ONDUTY_TEST_HOOK_SECRET": "hook-" + uuid.uuid4().hex,
    "ONDUTY_TEST_SLACK_PATH": "T0" + uuid.uuid4().hex,
    "ONDUTY_TEST_PD_ROUTING": "pd-out-" + uuid.uuid4().hex,
    "ONDUTY_TEST_SMTP_PASSWORD": "smtp-" + uuid.uuid4().hex,
}


class Receiver(ThreadingHTTPServer):
    """What the actuator and the channels talk to: records each request, answers 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.path, dict(self.headers), body))
        answer = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def config(receiver: str, smtp_port: int) -> str:
    slack = receiver + "/slack/${ENV:ONDUTY_TEST_SLACK_PATH}"
    return f"""
services:
  - {{name: web, autonomy: act, instances: [web-1]}}
  - {{name: mail, autonomy: act, instances: [mail-1]}}
  - {{name: chat, autonomy: act, instances: [chat-1]}}
  - {{name: pager, autonomy: act, instances: [pager-1]}}
correlation: {{group_by: [service, alertname, instance], group_wait: 0s}}
runbooks:
  - name: restart-web
    when: signal.labels.alertname == "WebDown"
    do: [{{action: web.restart, target: "{{{{ signal.labels.instance }}}}", timeout: 5s}}]
escalation:
  default: [{{notify: [hook]}}]
  services:
    mail: [{{notify: [mail, hook]}}]
    chat: [{{notify: [chat]}}]
    pager: [{{notify: [pager]}}]
actuators:
  - kind: http
    action: web.restart
    url: {receiver}/restart
    headers: {{Authorization: "Bearer ${{ENV:ONDUTY_TEST_ACT_TOKEN}}"}}
channels:
  - {{kind: webhook, name: hook, url: "{receiver}/hook",
     headers: {{X-Hook-Secret: "${{ENV:ONDUTY_TEST_HOOK_SECRET}}"}}}}
  - {{kind: slack, name: chat, url: "{slack}"}}
  - {{kind: pagerduty, name: pager, url: "{receiver}/v2/enqueue",
     routing_key: "${{ENV:ONDUTY_TEST_PD_ROUTING}}"}}
  - {{kind: email, name: mail, host: 127.0.0.1, port: {smtp_port},
     from: onduty@example.com, to: [ops@example.com], retries: 0,
     username: onduty, password: "${{ENV:ONDUTY_TEST_SMTP_PASSWORD}}"}}
access:
  tokens:
    - {{name: root, roles: [admin], hash: "{hash_token(SECRETS["ONDUTY_TEST_ADMIN_TOKEN"])}"}}
  ingest:
    - {{name: am, hash: "{hash_token(SECRETS["ONDUTY_TEST_AM_TOKEN"])}", routes: [alertmanager]}}
    - {{name: pd, hash: "{hash_token(SECRETS["ONDUTY_TEST_PD_INGEST"])}", routes: [pagerduty]}}
    - {{name: ce, hmac_secret: "${{ENV:ONDUTY_TEST_CE_HMAC}}"}}
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def alert(service: str, alertname: str) -> dict[str, Any]:
    labels = {"alertname": alertname, "service": service, "instance": f"{service}-1"}
    return {
        "version": "4",
        "status": "firing",
        "receiver": "onduty",
        "groupKey": "{}",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                    "startsAt": "2026-01-01T00:00:00Z", "fingerprint": f"fp-{service}"}],
    }  # fmt: skip


def until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_no_secret_reaches_the_store(tmp_path: Path, receiver: Receiver) -> None:
    path = tmp_path / "onduty.yaml"
    path.write_text(config(receiver.url, free_port()))
    server = Server(tmp_path / "secrets.db", config=path, env=SECRETS)
    with server:
        am = {"Authorization": f"Bearer {SECRETS['ONDUTY_TEST_AM_TOKEN']}"}
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for service, name in [("web", "WebDown"), ("mail", "MailDown"), ("chat", "ChatDown"),
                                  ("pager", "PagerDown")]:  # fmt: skip
                sent = client.post("/api/v1/signals/alertmanager", json=alert(service, name),
                                   headers=am)  # fmt: skip
                assert sent.status_code == 202, sent.text
            payload = {"summary": "disk", "source": "db-1", "severity": "error"}
            routing = SECRETS["ONDUTY_TEST_PD_INGEST"]
            event = {"routing_key": routing, "event_action": "trigger", "payload": payload}
            assert client.post("/api/v1/signals/pagerduty", json=event).status_code == 202
            bad = {"routing_key": SECRETS["ONDUTY_TEST_PD_INGEST"], "event_action": "explode"}
            assert client.post("/api/v1/signals/pagerduty", json=bad).status_code == 422
            data = {"status": "firing", "labels": {"alertname": "Other", "instance": "x-1"}}
            cloudevent = {"specversion": "1.0", "id": "e-1", "source": "test",
                          "type": "com.example.alert", "data": data}  # fmt: skip
            body = json.dumps(cloudevent).encode()
            signed = {"Content-Type": "application/cloudevents+json",
                      "X-Onduty-Signature": sign(SECRETS["ONDUTY_TEST_CE_HMAC"], body)}  # fmt: skip
            assert client.post("/api/v1/signals/cloudevents", content=body,
                               headers=signed).status_code == 202  # fmt: skip
            admin = {"Authorization": f"Bearer {SECRETS['ONDUTY_TEST_ADMIN_TOKEN']}"}
            assert client.get("/api/v1/incidents", headers=admin).status_code == 200
        # each secret was used: the actuator and every channel were reached, mail was tried
        until(lambda: "/restart" in receiver.paths(), "the actuator's request")
        until(lambda: "/v2/enqueue" in receiver.paths(), "the PagerDuty channel")
        until(lambda: any(p.startswith("/slack/") for p in receiver.paths()), "the Slack channel")
        until(lambda: receiver.paths().count("/hook") >= 2, "the webhook (also mail's fallback)")
    headers = {path: sent for path, sent, _ in receiver.requests}
    assert headers["/restart"]["Authorization"].endswith(SECRETS["ONDUTY_TEST_ACT_TOKEN"])
    assert headers["/hook"]["X-Hook-Secret"] == SECRETS["ONDUTY_TEST_HOOK_SECRET"]
    enqueued = [b for p, _, b in receiver.requests if p == "/v2/enqueue"]
    assert SECRETS["ONDUTY_TEST_PD_ROUTING"].encode() in enqueued[0]

    stored = [f for f in tmp_path.iterdir() if f.name.startswith("secrets.db")]
    stored = [f for f in stored if f.is_file() and not f.name.endswith((".key", ".serve.log"))]
    assert any(f.name == "secrets.db" for f in stored)
    for file in stored:
        content = file.read_bytes()
        for name, secret in SECRETS.items():
            assert secret.encode() not in content, f"{name} is stored in clear in {file.name}"
