"""The front door of `onduty serve`, end to end: host names, cross-site writes, the failure
throttle that never locks out a good credential, X-Forwarded-For only from trusted proxies, bad
bodies, slow bodies, no documentation pages, and a shutdown bounded under TLS."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onduty.api.auth import hash_token, sign
from tests.integration.server import Server
from tests.integration.test_access import self_signed

ADMIN = "root-0123456789abcdef"
INGEST = "alertmanager-0123456789abcdef"
PAGER = "pagerduty-0123456789abcdef"
HMAC_SECRET = "front-door-hmac-secret"
SERVICES = """
services:
  - {name: web, autonomy: act, instances: [web-1]}
"""
ACCESS = f"""
access:
  tokens:
    - {{name: root, roles: [admin], hash: "{hash_token(ADMIN)}"}}
  ingest:
    - {{name: am, hash: "{hash_token(INGEST)}"}}
    - {{name: pd, hash: "{hash_token(PAGER)}", routes: [pagerduty]}}
    - {{name: signer, hmac_secret: "${{ENV:ONDUTY_TEST_FRONT_HMAC}}"}}
  failures: {{max: 3, per: 1m}}
"""
ENV = {"ONDUTY_TEST_FRONT_HMAC": HMAC_SECRET}
JSON = {"Content-Type": "application/json"}


def native(instance: str, **labels: Any) -> dict[str, Any]:
    return {
        "source": "test",
        "fingerprint": f"front-{instance}",
        "status": "firing",
        "labels": {"alertname": "Down", "service": "web", "instance": instance, **labels},
    }


def events(client: httpx.Client, kind: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/events", params={"type": kind, "limit": 10_000})
    assert response.status_code == 200, response.text
    return list(response.json())


def from_address(server: Server, address: str, token: str | None = None) -> httpx.Client:
    """A client whose requests come from `address` (any of 127.0.0.0/8 is this machine)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.url, transport=transport, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Access control off (the default): loopback only, no tokens."""
    folder = tmp_path_factory.mktemp("front-open")
    (folder / "onduty.yaml").write_text(SERVICES + "server: {body_timeout: 1s}\n")
    with Server(
        folder / "open.db", "--allowed-host", "onduty.test", config=folder / "onduty.yaml"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Access control on, three failures a minute, short body deadline, four bodies at once
    before authentication, and one trusted proxy (127.0.0.3)."""
    folder = tmp_path_factory.mktemp("front-guarded")
    server_section = """
server:
  body_timeout: 1s
  max_unauthenticated: 4
  trusted_proxies: [127.0.0.3/32]
"""
    (folder / "onduty.yaml").write_text(SERVICES + ACCESS + server_section)
    with Server(folder / "guarded.db", config=folder / "onduty.yaml", env=ENV) as running:
        yield running


# --------------------------------------------------------------------------- cross-site writes

CANDIDATE = {"config": {"services": [{"name": "web", "autonomy": "observe"}]}, "mode": "shadow"}


def test_a_cross_site_write_is_refused_and_changes_nothing(open_server: Server) -> None:
    with open_server.client() as client:
        made = client.post("/api/v1/policy/candidate", json=CANDIDATE)
        assert made.status_code == 202, made.text
        assert client.get("/api/v1/policy").json()["candidate"] is not None
        activations = len(events(client, "PolicyActivated"))
        rollback = "/api/v1/policy/rollback"
        evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        # what a page of another site can send without asking first: no Origin check needed
        for headers, content in [
            ({"Content-Type": "text/plain"}, b"{}"),
            ({"Content-Type": "application/x-www-form-urlencoded"}, b"a=b"),
            ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x--\r\n"),
            ({}, b""),  # fetch(url, {method: "POST", mode: "no-cors"})
        ]:
            refused = client.post(rollback, content=content, headers=headers)
            assert refused.status_code == 415, (headers, refused.text)
            assert refused.json()["field"] == "Content-Type"
            # and with the headers every current browser adds
            refused = client.post(rollback, content=content, headers={**headers, **evil})
            assert refused.status_code == 403, (headers, refused.text)
            assert "cross-site" in refused.json()["error"]
        # JSON, said to come from another site, or from a sibling on another port
        for headers in [
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://localhost:3000"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ]:
            refused = client.post(rollback, json={}, headers=headers)
            assert refused.status_code == 403, (headers, refused.text)
        deleted = client.delete("/api/v1/silences/sil-x", headers={"Origin": "http://evil.example"})
        assert deleted.status_code == 403
        assert client.get("/api/v1/policy").json()["candidate"] is not None  # nothing changed
        assert len(events(client, "PolicyActivated")) == activations
        # this server's own pages, and clients that are no browser, still write
        own = {"Origin": open_server.url, "Sec-Fetch-Site": "same-origin"}
        assert client.post(rollback, json={}, headers=own).status_code == 202
        assert client.get("/api/v1/policy").json()["candidate"] is None


def test_ingest_senders_without_an_origin_still_deliver(open_server: Server) -> None:
    with open_server.client() as client:
        sent = client.post("/api/v1/signals", json=native("web-1"))
        assert sent.status_code == 202, sent.text
        refused = client.post(
            "/api/v1/signals", json=native("web-1"), headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert refused.status_code == 403


def test_the_cli_still_writes(open_server: Server) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "onduty", "policy", "reload", "--url", open_server.url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr  # a body-less POST, said to be JSON


# --------------------------------------------------------------------------- host names


def test_only_the_configured_host_names_are_answered(open_server: Server) -> None:
    with open_server.client() as client:
        for host in ("evil.example", "evil.example:8765", "localhost.evil.example"):
            refused = client.get("/api/v1/incidents", headers={"Host": host})
            assert refused.status_code == 421, host
            assert refused.json()["field"] == "Host"
            posted = client.post("/api/v1/signals", json=native("x"), headers={"Host": host})
            assert posted.status_code == 421
        # the loopback names, IP addresses and --allowed-host are answered
        for host in ("localhost", "127.0.0.1:1", "[::1]:8765", "onduty.test", "ONDUTY.test:80"):
            assert client.get("/api/v1/incidents", headers={"Host": host}).status_code == 200
        # the probes answer any name: they tell nothing
        for probe in ("/healthz", "/readyz", "/-/healthy", "/-/ready"):
            assert client.get(probe, headers={"Host": "evil.example"}).status_code == 200, probe


def test_a_bad_allowed_host_is_refused_at_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "onduty", "serve", "--store", str(tmp_path / "x.db"),
         "--allowed-host", "http://onduty.test:80"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--allowed-host" in result.stderr and "not a host name" in result.stderr
    assert not (tmp_path / "x.db").exists()


# --------------------------------------------------------------------------- documents


def test_no_documentation_pages_and_the_schema_only_with_a_token(
    open_server: Server, guarded_server: Server
) -> None:
    with open_server.client() as client:
        for path in ("/api/v1/docs", "/api/v1/redoc", "/docs", "/redoc"):
            assert client.get(path).status_code == 404, path
    with from_address(guarded_server, "127.0.0.5") as client:
        assert client.get("/api/v1/openapi.json").status_code == 401
    with from_address(guarded_server, "127.0.0.5", ADMIN) as client:
        assert client.get("/api/v1/openapi.json").status_code == 200


# --------------------------------------------------------------------------- the throttle


def test_good_credentials_still_work_from_an_address_that_keeps_failing(
    guarded_server: Server,
) -> None:
    address = "127.0.0.2"
    with from_address(guarded_server, address, "guess") as guessing:
        statuses = [guessing.get("/api/v1/incidents").status_code for _ in range(12)]
        assert statuses[:3] == [401, 401, 401] and set(statuses[3:]) == {429}
        ingest = guessing.post("/api/v1/signals", json=native("web-1"))
        assert ingest.status_code == 429 and int(ingest.headers["Retry-After"]) > 0
    # the same address: every credential that verifies is accepted
    with from_address(guarded_server, address, ADMIN) as admin:
        assert admin.get("/api/v1/incidents").status_code == 200
    with from_address(guarded_server, address, INGEST) as alertmanager:
        assert alertmanager.post("/api/v1/signals", json=native("web-1")).status_code == 202
    body = json.dumps(native("web-2")).encode()
    signed = {**JSON, "X-Onduty-Signature": sign(HMAC_SECRET, body)}
    with from_address(guarded_server, address) as signer:
        assert signer.post("/api/v1/signals", content=body, headers=signed).status_code == 202
        pagerduty = {
            "routing_key": PAGER,
            "event_action": "trigger",
            "payload": {"summary": "disk", "source": "web-3", "severity": "error"},
        }
        assert signer.post("/api/v1/signals/pagerduty", json=pagerduty).status_code == 202
        form = {"Origin": guarded_server.url}
        signed_in = signer.post("/signin", data={"token": ADMIN}, headers=form)
        assert signed_in.status_code == 303  # the console's sign-in too
        assert signer.post("/signin", data={"token": "guess"}, headers=form).status_code == 429
    with from_address(guarded_server, address, "guess") as guessing:
        assert guessing.get("/api/v1/incidents").status_code == 429  # bad ones stay throttled


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(guarded_server: Server) -> None:
    # a loopback peer is no proxy unless configured: whatever it says, its failures are its own
    with from_address(guarded_server, "127.0.0.1", "guess") as peer:
        statuses = [
            peer.get("/api/v1/incidents", headers={"X-Forwarded-For": f"10.1.1.{n}"}).status_code
            for n in range(5)
        ]
    assert statuses == [401, 401, 401, 429, 429]
    # 127.0.0.3 is a configured proxy: the address it forwards is the client
    with from_address(guarded_server, "127.0.0.3", "guess") as proxy:

        def status(client: str) -> int:
            headers = {"X-Forwarded-For": client}
            return proxy.get("/api/v1/incidents", headers=headers).status_code

        assert [status("10.2.2.2") for _ in range(4)] == [401, 401, 401, 429]
        assert status("10.3.3.3") == 401  # another client behind the same proxy


# --------------------------------------------------------------------------- bad bodies


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_deeply_nested_bodies_are_a_4xx_and_a_rejected_signal(open_server: Server) -> None:
    nested = deep(900)
    body = json.dumps(native("deep-1")).replace('"labels": {', f'"labels": {{"x": {nested}, ')
    before = len(open_server.output())
    with open_server.client() as client:
        refused = client.post("/api/v1/signals", content=body, headers=JSON)
        assert refused.status_code == 422, refused.text
        assert refused.json() == {"error": "expected a string, got an array", "field": "labels.x"}
        rejected = [
            e for e in events(client, "SignalRejected") if "front-deep-1" in e["data"]["raw"]
        ]
        assert len(rejected) == 1 and rejected[0]["data"]["field"] == "labels.x"
        others = {
            "/api/v1/signals/alertmanager": f'{{"version": "4", "alerts": [{nested}]}}',
            "/api/v1/signals/pagerduty": f'{{"event_action": {nested}}}',
            "/api/v1/signals/cloudevents": f'{{"specversion": "1.0", "id": {nested}}}',
            "/api/v1/silences": f'{{"matchers": {nested}, "comment": "x", "duration": "1m"}}',
            "/api/v1/policy/candidate": f'{{"config": {{"services": {nested}}}}}',
        }
        for path, text in others.items():
            kind = "application/cloudevents+json" if "cloudevents" in path else "application/json"
            answer = client.post(path, content=text, headers={"Content-Type": kind})
            assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text[:200])
            assert answer.headers["content-type"] == "application/json", path
        for text in (deep(100_000), '{"a": ' * 100_000):
            too_deep = client.post("/api/v1/signals", content=text, headers=JSON)
            assert too_deep.status_code in (400, 422), too_deep.text[:200]
            assert too_deep.headers["content-type"] == "application/json"
    time.sleep(0.2)
    logged = open_server.output()[before:]
    assert "Traceback" not in logged
    assert len(logged) < 2_000, logged[-2_000:]


# --------------------------------------------------------------------------- slow bodies


def slow(server: Server, path: str, headers: dict[str, str], source: str) -> socket.socket:
    """A request whose headers arrive, and then only the first bytes of its body."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=(
        source, 0
    ))  # fmt: skip
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 1000\r\n{head}\r\n{{".encode()
    )
    return sock


def status_of(sock: socket.socket, timeout: float) -> tuple[int, str]:
    sock.settimeout(timeout)
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    except TimeoutError:
        return 0, ""
    finally:
        sock.close()
    head = answer.decode("latin-1")
    return (int(head.split(" ", 2)[1]) if head else 0), head.lower()


def test_slow_bodies_before_authentication_time_out_and_cannot_crowd_out_senders(
    guarded_server: Server,
) -> None:
    started = time.monotonic()
    signature = {"X-Onduty-Signature": "sha256=" + "0" * 64}
    held = [slow(guarded_server, "/api/v1/signals", signature, "127.0.0.6") for _ in range(4)]
    time.sleep(0.3)
    # past the four bodies read at once before authentication: refused at once, not queued
    crowd = [slow(guarded_server, "/api/v1/signals/pagerduty", {}, "127.0.0.6") for _ in range(8)]
    answers = [status_of(sock, 3) for sock in crowd]
    assert [status for status, _ in answers] == [503] * 8  # not 408: they never waited
    assert all("retry-after: 1" in head for _, head in answers)
    # a sender with a token is not kept waiting
    with from_address(guarded_server, "127.0.0.6", INGEST) as sender:
        took = time.monotonic()
        assert sender.post("/api/v1/signals", json=native("web-4")).status_code == 202
        assert time.monotonic() - took < 2
    # the held ones: 408 once the body deadline (1 s) passes
    assert [status_of(sock, 5)[0] for sock in held] == [408] * 4
    assert time.monotonic() - started < 6
    body = json.dumps(native("web-5")).encode()
    signed = {**JSON, "X-Onduty-Signature": sign(HMAC_SECRET, body)}
    with from_address(guarded_server, "127.0.0.6") as signer:  # the slots are free again
        assert signer.post("/api/v1/signals", content=body, headers=signed).status_code == 202


def test_a_slow_body_times_out_with_access_control_off_too(open_server: Server) -> None:
    sock = slow(open_server, "/api/v1/silences", {}, "127.0.0.1")
    status, head = status_of(sock, 5)
    assert status == 408 and "connection: close" in head


# --------------------------------------------------------------------------- shutdown


def test_an_idle_tls_connection_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with Server(tmp_path / "tls.db", tls=(cert, key)) as server:
        kept = httpx.Client(base_url=server.url, verify=server.verify, timeout=5)
        assert kept.get("/healthz").status_code == 200  # keep-alive: the connection stays
        context = ssl.create_default_context(cafile=str(cert))
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        idle = context.wrap_socket(raw, server_hostname="127.0.0.1")  # says nothing more
        try:
            started = time.monotonic()
            assert server.terminate(timeout=25) == 0
            took = time.monotonic() - started
        finally:
            kept.close()
            idle.close()
    assert took < 8, f"shutdown took {took:.1f} s"
