"""An escalation names the similar incidents and what fixed them, end to end: `onduty serve`
rolls back payments-api for two memory incidents, each verified when its alert resolves; a
third memory incident that no runbook matches is escalated, and the page a real webhook
receiver gets carries "2 similar incidents; a deploy.rollback of payments-api fixed 2 of
them". An escalation with nothing alike before it goes out as the core wrote it, and the API and
the incident page show the same incidents."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.server import Server

SUMMARY = "2 similar incidents; a deploy.rollback of payments-api fixed 2 of them"


class Pages:
    """A webhook receiver on loopback: keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = ""

    def escalations(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for body in self.bodies if body.get("kind") == "escalation"]


@pytest.fixture
def pages() -> Iterator[Pages]:
    state = Pages()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.bodies.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/page"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def config(directory: Path, hook: str) -> Path:
    document: dict[str, Any] = {
        "services": [
            {
                "name": "payments-api",
                "autonomy": "act",
                "instances": [f"payments-api-{n}" for n in (1, 2, 3)],
            }
        ],
        "correlation": {"group_by": ["service", "alertname"], "group_wait": "0s"},
        "runbooks": [
            {
                "name": "roll-back-bad-deploy",
                "when": 'signal.labels.alertname == "HighMemory" && signal.labels.region == "eu"',
                "do": [{"action": "deploy.rollback", "target": "{{ signal.labels.service }}"}],
                "verify": {"signal_resolved_within": "60s"},
            }
        ],
        "actuators": [
            {
                "kind": "shell",
                "action": "deploy.rollback",
                "argv": [sys.executable, "-c", "pass"],
                "allow": [sys.executable],
                "timeout": "20s",
            }
        ],
        "channels": [
            {"kind": "webhook", "name": "on-call", "url": hook, "retries": 0, "timeout": "5s"}
        ],
        "escalation": {"default": [{"notify": ["on-call"], "wait": "10m"}]},
    }
    path = directory / "onduty.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def signal(number: int, status: str, region: str, alertname: str = "HighMemory") -> dict[str, Any]:
    instance = f"payments-api-{number}"
    return {
        "source": "prometheus",
        "fingerprint": f"{alertname}-{instance}",
        "status": status,
        "labels": {
            "alertname": alertname,
            "service": "payments-api",
            "instance": instance,
            "region": region,
        },
        "annotations": {"summary": f"{instance} uses 94% of its memory"},
    }


def wait_for(what: Callable[[], Any], describe: Callable[[], str], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        assert time.monotonic() < deadline, describe()
        time.sleep(0.1)


def test_an_escalation_names_what_fixed_the_similar_incidents(tmp_path: Path, pages: Pages) -> None:
    server = Server(tmp_path / "onduty.db", config=config(tmp_path, pages.url))
    with server, server.client() as client:

        def events(kind: str) -> list[dict[str, Any]]:
            listed: list[dict[str, Any]] = client.get("/api/v1/events").json()
            return [event for event in listed if event["type"] == kind]

        def post(body: dict[str, Any]) -> None:
            answer = client.post("/api/v1/signals", json=body)
            assert answer.status_code == 202, answer.text

        # nothing alike closed yet: the escalation goes out as the core wrote it
        post(signal(1, "firing", "eu", alertname="DiskFull"))
        (first,) = wait_for(pages.escalations, server.output)
        assert first["message"].startswith(first["title"] + ": ")
        assert "\n" not in first["message"] and "similar" not in first["message"]

        # two memory incidents, each rolled back and verified when its alert resolves
        for number in (1, 2):
            post(signal(number, "firing", "eu"))
            wait_for(lambda n=number: len(events("ActionSucceeded")) >= n, server.output)
            post(signal(number, "resolved", "eu"))
            wait_for(lambda n=number: len(events("VerificationPassed")) >= n, server.output)
            wait_for(lambda n=number: len(events("IncidentResolved")) >= n, server.output)

        # a third in another region: no runbook matches, a person is paged
        post(signal(3, "firing", "us"))
        wait_for(lambda: len(pages.escalations()) >= 2, server.output)
        page = pages.escalations()[-1]
        assert page["title"] == "payments-api-3 uses 94% of its memory"
        lines = page["message"].split("\n")
        assert len(lines) == 2 and lines[1] == SUMMARY, page["message"]

        # the API and the console show the same incidents
        incident = page["incident_id"]
        rolled_back = [event["data"]["incident_id"] for event in events("VerificationPassed")]
        similar = client.get(f"/api/v1/incidents/{incident}/similar").json()
        assert similar["summary"] == SUMMARY
        assert {item["incident_id"] for item in similar["similar"]} == set(rolled_back)
        for item in similar["similar"]:
            assert item["actions"] == [
                {
                    "action": "deploy.rollback",
                    "target": "payments-api",
                    "runbook": "roll-back-bad-deploy",
                    "outcome": "verified",
                    "undone": False,
                }
            ]
        console = client.get(f"/incidents/{incident}")
        assert console.status_code == 200 and SUMMARY in console.text
        for other in rolled_back:
            assert f'href="/incidents/{other}"' in console.text
        assert server.terminate() == 0, server.output()

    # after the restart (from the read models' snapshot) the same answer
    with Server(tmp_path / "onduty.db", config=config(tmp_path, pages.url)) as again:
        answer = httpx.get(f"{again.url}/api/v1/incidents/{incident}/similar", timeout=10)
        assert answer.json()["summary"] == SUMMARY
        assert again.terminate() == 0, again.output()
