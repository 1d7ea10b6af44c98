"""Retries and the circuit breaker with the real `http` actuator, against a local HTTP server
that answers 503 to the first requests of each path (or to all of them)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.server import Server

COOLDOWN = 3.0


class Endpoint(ThreadingHTTPServer):
    """Counts requests per (method, path); answers 503 to the first `failures[path]` of them
    (all of them for a path mapped to None), then 200."""

    def __init__(self, failures: dict[str, int | None]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.failures = failures
        self.seen: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Endpoint

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with self.server.lock:
            self.server.seen[self.command, self.path] += 1
            count = self.server.seen[self.command, self.path]
        failing = self.server.failures.get(self.path.rsplit("/", 1)[0], 0)
        status = 503 if failing is None or count <= failing else 200
        body = b"unavailable" if status == 503 else b"done"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint({"/flush": 2, "/restart": 1, "/drain": None})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def runbook(alertname: str, action: str) -> dict[str, Any]:
    return {
        "name": action.replace(".", "-"),
        "when": f'signal.labels.alertname == "{alertname}"',
        "do": [{"action": action, "target": "{{ signal.labels.instance }}"}],
    }


def write_config(directory: Path, endpoint: Endpoint) -> Path:
    def http(action: str, method: str, path: str) -> dict[str, Any]:
        url = f"{endpoint.url}{path}/{{{{ target }}}}"
        return {"kind": "http", "action": action, "method": method, "url": url, "timeout": "5s"}

    document = {
        "services": [{"name": "web", "autonomy": "act", "instances": ["web-1", "web-2", "web-3"]}],
        "correlation": {"group_by": ["service", "alertname", "instance", "n"]},
        "runbooks": [
            runbook("CacheStale", "cache.flush"),
            runbook("Wedged", "app.restart"),
            runbook("Overloaded", "lb.drain"),
        ],
        "policy": {"breaker": {"failures": 2, "cooldown": f"{COOLDOWN:g}s"}},
        "actuators": [
            http("cache.flush", "PUT", "/flush"),  # PUT: idempotent, retried
            http("app.restart", "POST", "/restart"),  # POST: run once
            http("lb.drain", "POST", "/drain"),
        ],
    }
    path = directory / "onduty.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def fire(client: httpx.Client, alertname: str, instance: str, n: int = 0) -> dict[str, Any]:
    """Post a new firing signal and return the incident it opened."""
    before = {i["id"] for i in client.get("/api/v1/incidents").json()}
    labels = {"alertname": alertname, "service": "web", "instance": instance, "n": str(n)}
    signal = {
        "source": "test",
        "fingerprint": f"{alertname}-{instance}-{n}",
        "status": "firing",
        "labels": labels,
    }
    assert client.post("/api/v1/signals", json=signal).status_code == 202
    (opened,) = [i for i in client.get("/api/v1/incidents").json() if i["id"] not in before]
    return dict(opened)


def settled(client: httpx.Client, incident: dict[str, Any], timeout: float = 10) -> list[Any]:
    """The incident's timeline once it was escalated or its action verified-or-resolved."""
    deadline = time.monotonic() + timeout
    while True:
        timeline: list[Any] = client.get(f"/api/v1/incidents/{incident['id']}").json()["timeline"]
        kinds = [event["type"] for event in timeline]
        if "Escalated" in kinds or "ActionSucceeded" in kinds:
            return timeline
        assert time.monotonic() < deadline, kinds
        time.sleep(0.05)


def only(timeline: list[Any], kind: str) -> dict[str, Any]:
    (event,) = [event for event in timeline if event["type"] == kind]
    data: dict[str, Any] = event["data"]
    return data


def test_idempotent_actions_are_retried_and_others_run_once(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    with (
        Server(tmp_path / "onduty.db", config=write_config(tmp_path, endpoint)) as server,
        server.client() as client,
    ):
        flushed = settled(client, fire(client, "CacheStale", "web-1"))
        restarted = settled(client, fire(client, "Wedged", "web-2"))

        # PUT: two 503s, then 200 on the third attempt.
        assert endpoint.seen["PUT", "/flush/web-1"] == 3
        assert "ActionFailed" not in [event["type"] for event in flushed]
        assert only(flushed, "ActionSucceeded")["output"].startswith("PUT ")
        assert only(flushed, "ActionStarted")["attempt"] == 1  # retries are not new starts

        # POST: one 503 and no second try, although the endpoint would now answer 200.
        assert endpoint.seen["POST", "/restart/web-2"] == 1
        assert "unexpected status 503" in only(restarted, "ActionFailed")["error"]
        assert "action failed" in only(restarted, "Escalated")["reason"]
        assert server.terminate() == 0, server.output()


def test_the_breaker_opens_after_two_failures_and_lets_one_trial_through_after_cooldown(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    with (
        Server(tmp_path / "onduty.db", config=write_config(tmp_path, endpoint)) as server,
        server.client() as client,
    ):

        def drain(n: int) -> tuple[str, list[Any]]:
            timeline = settled(client, fire(client, "Overloaded", "web-3", n))
            return only(timeline, "PolicyEvaluated")["verdict"], timeline

        # Two failures in a row on lb.drain web-3 open the breaker.
        for n in (1, 2):
            verdict, timeline = drain(n)
            assert verdict == "allow"
            assert "unexpected status 503" in only(timeline, "ActionFailed")["error"]
        opened_at = datetime.fromisoformat(
            next(e for e in timeline if e["type"] == "ActionFailed")["ts"]
        )
        assert endpoint.seen["POST", "/drain/web-3"] == 2

        # Open: the next proposal is denied and a human is paged; nothing is sent.
        verdict, timeline = drain(3)
        assert verdict == "deny"
        reason = only(timeline, "PolicyEvaluated")["reason"]
        assert reason.startswith("breaker: open after 2 failures of lb.drain on web-3"), reason
        assert "breaker:" in only(timeline, "Escalated")["reason"]
        assert "ActionStarted" not in [event["type"] for event in timeline]
        assert endpoint.seen["POST", "/drain/web-3"] == 2

        # The breaker is per action and target: another instance is still served.
        elsewhere = settled(client, fire(client, "Overloaded", "web-1", 3))
        assert only(elsewhere, "PolicyEvaluated")["verdict"] == "allow"
        assert endpoint.seen["POST", "/drain/web-1"] == 1

        # After the cool-down: half-open, one trial goes ahead (and fails again)...
        time.sleep(max(0.0, (opened_at - datetime.now(UTC)).total_seconds() + COOLDOWN + 0.2))
        verdict, timeline = drain(4)
        assert verdict == "allow"
        assert "ActionFailed" in [event["type"] for event in timeline]
        assert endpoint.seen["POST", "/drain/web-3"] == 3

        # ...so the breaker is open again.
        verdict, timeline = drain(5)
        assert verdict == "deny" and "breaker:" in only(timeline, "PolicyEvaluated")["reason"]
        assert endpoint.seen["POST", "/drain/web-3"] == 3
        assert server.terminate() == 0, server.output()
