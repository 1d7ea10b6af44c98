"""The HTTP actuator against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from onduty.act.http import HttpActuator
from onduty.act.specs import HttpSpec, OutcomeUnknown
from tests.act.helpers import action, free_port

SECRET = "tok-9f8e7d6c5b4a"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    requests: list[Seen] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes = b"") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout tests)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            state.requests.append(Seen(self.command, self.path, dict(self.headers), body))
            path = self.path
            if path.startswith("/slow"):
                state.release.wait(10)
                self._answer(200)
            elif path.startswith("/fail"):
                echoed = f"internal error; you sent {self.headers.get('Authorization')}\n"
                self._answer(500, (echoed + "x" * 5000).encode())
            elif path.startswith("/check/"):
                command_id = path.removeprefix("/check/")
                if command_id == "weird":
                    self._answer(503, b"maintenance")
                else:
                    self._answer(200 if command_id in state.done else 404, b"{}")
            else:
                self._answer(202, json.dumps({"accepted": path}).encode())

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def make(server: Server, **fields: Any) -> HttpActuator:
    fields["url"] = server.url + fields.get("url", "/api/items/{{ target }}/restart")
    if "check_url" in fields:
        fields["check_url"] = server.url + fields["check_url"]
    spec = HttpSpec.model_validate({"kind": "http", "action": "process.restart", **fields})
    return HttpActuator(spec, env={"ONDUTY_TEST_API_TOKEN": SECRET})


def test_success(server: Server) -> None:
    actuator = make(
        server,
        headers={"Authorization": "Bearer ${ENV:ONDUTY_TEST_API_TOKEN}", "X-Caller": "onduty"},
        body={"replicas": "{{ params.replicas }}", "why": "incident {{ incident_id }}"},
    )
    outcome = actuator.run(action("web-1", {"replicas": 3}))
    assert outcome.ok, outcome.error
    assert outcome.output.startswith(f"POST {server.url}/api/items/web-1/restart: 202")
    (seen,) = server.requests
    assert seen.method == "POST"
    assert seen.headers["Authorization"] == f"Bearer {SECRET}"
    assert seen.headers["X-Caller"] == "onduty"
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == {"replicas": 3, "why": "incident inc-1"}
    assert SECRET not in repr(actuator)
    assert SECRET not in outcome.output


def test_a_path_traversal_target_stays_one_encoded_segment(server: Server) -> None:
    actuator = make(server)
    for target in ("../admin", "../../admin?x=1#y", "a/b"):
        assert actuator.run(action(target)).ok
    paths = [seen.path for seen in server.requests]
    assert paths == [
        "/api/items/..%2Fadmin/restart",
        "/api/items/..%2F..%2Fadmin%3Fx%3D1%23y/restart",
        "/api/items/a%2Fb/restart",
    ]
    outcome = actuator.run(action(".."))
    assert not outcome.ok
    assert outcome.error.startswith("refused: url")
    assert len(server.requests) == 3


def test_an_unexpected_status_names_it_with_a_truncated_redacted_body(server: Server) -> None:
    actuator = make(
        server, url="/fail/{{ target }}", headers={"Authorization": "${ENV:ONDUTY_TEST_API_TOKEN}"}
    )
    outcome = actuator.run(action("web-1"))
    assert not outcome.ok
    assert outcome.error.startswith(
        f"POST {server.url}/fail/web-1: unexpected status 500: internal error; "
        "you sent [redacted] xxx"
    )
    assert outcome.error.endswith("…")
    assert len(outcome.error) < 700
    assert SECRET not in outcome.error
    assert SECRET not in outcome.output
    assert server.requests[0].headers["Authorization"] == SECRET


def test_expected_statuses_are_configurable(server: Server) -> None:
    actuator = make(server, expect_status=[200])
    outcome = actuator.run(action())
    assert not outcome.ok
    assert "unexpected status 202" in outcome.error


def test_a_timeout_is_a_failure(server: Server) -> None:
    actuator = make(
        server,
        url="/slow/{{ target }}",
        timeout="300ms",
        headers={"X-Token": "${ENV:ONDUTY_TEST_API_TOKEN}"},
    )
    outcome = actuator.run(action())
    assert not outcome.ok
    assert outcome.error == f"POST {server.url}/slow/web-1: timed out after 300ms"
    outcome = make(server, url="/slow/{{ target }}").run(action(timeout_s=0.2))
    assert outcome.error.endswith("timed out after 200ms")


def test_connection_refused_is_a_failure() -> None:
    port = free_port()
    spec = HttpSpec.model_validate(
        {"kind": "http", "action": "a.b", "url": f"http://127.0.0.1:{port}/x", "timeout": "2s"}
    )
    outcome = HttpActuator(spec).run(action())
    assert outcome == type(outcome)(
        False, error=f"POST http://127.0.0.1:{port}/x: connection refused"
    )


def test_check_url_tells_whether_an_earlier_run_took_effect(server: Server) -> None:
    actuator = make(server, check_url="/check/{{ command_id }}")
    assert actuator.can_check
    assert actuator.check("cmd-1") is None
    server.done.add("cmd-1")
    found = actuator.check("cmd-1")
    assert found is not None and found.ok
    with pytest.raises(OutcomeUnknown, match="unexpected status 503"):
        actuator.check("weird")
    assert not make(server).can_check


def test_a_shared_client_is_used_and_left_open(server: Server) -> None:
    spec = HttpSpec.model_validate(
        {"kind": "http", "action": "a.b", "method": "PUT", "url": server.url + "/x/{{ target }}"}
    )
    with httpx.Client() as client:
        actuator = HttpActuator(spec, client)
        assert actuator.idempotent
        assert actuator.run(action("one")).ok
        assert actuator.run(action("two")).ok
        assert not client.is_closed
    assert [seen.path for seen in server.requests] == ["/x/one", "/x/two"]
