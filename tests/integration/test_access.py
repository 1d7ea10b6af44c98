"""Access control end to end: `onduty serve` with tokens, every route against every role, ingest
credentials, the actor in the log, throttling, TLS, and the CLI with its token."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from onduty.api.auth import hash_token, sign, sign_body
from tests.integration.server import Server

TOKENS = {
    "viewer": "vera-0123456789",
    "operator": "otto-0123456789",
    "approver": "anna-0123456789",
    "admin": "root-0123456789",
}
NAMES = {"viewer": "vera", "operator": "otto", "approver": "anna", "admin": "root"}
AM_TOKEN = "alertmanager-0123456789"
CE_SECRET = "cloud-events-hmac-secret"
ENV = {"ONDUTY_TEST_ROOT_HASH": hash_token(TOKENS["admin"]), "ONDUTY_TEST_CE_HMAC": CE_SECRET}
CONFIG = f"""
services:
  - {{name: checkout, autonomy: approve, instances: [checkout-1, checkout-2]}}
  - {{name: search, autonomy: act, instances: [search-1, search-2]}}
correlation: {{group_by: [service, alertname, instance]}}
runbooks:
  - name: restart
    when: signal.labels.alertname == "InstanceDown"
    do: [{{action: process.restart, target: "{{{{ signal.labels.instance }}}}"}}]
policy:
  approvals: {{roles: [approver]}}
access:
  tokens:
    - {{name: vera, roles: [viewer], hash: "{hash_token(TOKENS["viewer"])}"}}
    - {{name: otto, roles: [operator], hash: "{hash_token(TOKENS["operator"])}"}}
    - {{name: anna, roles: [approver], hash: "{hash_token(TOKENS["approver"])}"}}
    - {{name: root, roles: [admin], hash_env: ONDUTY_TEST_ROOT_HASH}}
  ingest:
    - {{name: alertmanager-eu, hash: "{hash_token(AM_TOKEN)}", routes: [alertmanager]}}
    - {{name: cloud-events, hmac_secret: "${{ENV:ONDUTY_TEST_CE_HMAC}}"}}
  failures: {{max: 1000, per: 1m}}
"""
SILENCE = {"matchers": ['alertname="NeverFires"'], "comment": "table", "duration": "1m"}
ROLES = (None, "viewer", "operator", "approver", "admin")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("access")
    (folder / "onduty.yaml").write_text(CONFIG)
    # with tokens configured, a public address is allowed
    with Server(
        folder / "access.db", "--host", "0.0.0.0", config=folder / "onduty.yaml", env=ENV
    ) as running:
        yield running


def as_role(server: Server, role: str | None) -> httpx.Client:
    return server.client(TOKENS[role] if role else None)


def events_of(server: Server, kind: str) -> list[dict[str, Any]]:
    with as_role(server, "viewer") as client:
        response = client.get("/api/v1/events", params={"type": kind, "limit": 10000})
    assert response.status_code == 200, response.text
    return list(response.json())


def cli(
    *args: str, url: str, token: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "ONDUTY_TOKEN"}
    environment.update(COLUMNS="240", **env)
    if token is not None:
        environment["ONDUTY_TOKEN"] = token
    result = subprocess.run(
        [sys.executable, "-m", "onduty", *args, "--url", url],
        capture_output=True, text=True, timeout=60, check=False, env=environment,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result


# --------------------------------------------------------------------------- the route table

# (method, path, body, the role it needs, what a caller with that role gets)
WRITES: list[tuple[str, str, Any, str, int]] = [
    ("POST", "/api/v1/incidents/inc-nope/acknowledge", None, "operator", 404),
    ("POST", "/api/v1/silences", SILENCE, "operator", 202),
    ("DELETE", "/api/v1/silences/sil-nope", None, "operator", 404),
    ("POST", "/api/v1/kill-switches", {"kind": "service", "name": "nope"}, "operator", 202),
    ("DELETE", "/api/v1/kill-switches/runbook/nope", None, "operator", 404),
    ("POST", "/api/v1/approvals/apr-nope/approve", {"comment": "ok"}, "approver", 404),
    ("POST", "/api/v1/approvals/apr-nope/deny", None, "approver", 404),
    ("PUT", "/api/v1/services/nope/autonomy", {"level": "act"}, "admin", 404),
    ("PUT", "/api/v1/services/search/autonomy", {"level": "act"}, "admin", 200),  # unchanged
    ("POST", "/api/v1/policy/reload", None, "admin", 200),  # the file is unchanged
    ("POST", "/api/v1/policy/candidate", {"config": {"services": "no"}}, "admin", 422),
    ("POST", "/api/v1/policy/promote", None, "admin", 409),  # no candidate
    ("POST", "/api/v1/policy/rollback", None, "admin", 409),  # nothing to roll back to
]
HOLDS = {
    None: set(),
    "viewer": {"viewer"},
    "operator": {"viewer", "operator"},
    "approver": {"viewer", "approver"},
    "admin": {"viewer", "operator", "approver", "admin"},
}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "none")
@pytest.mark.parametrize(
    ("method", "path", "body", "needs", "allowed"),
    WRITES,
    ids=[f"{m} {p.removeprefix('/api/v1')}" for m, p, *_ in WRITES],
)
def test_every_write_route_for_every_role(
    server: Server, role: str | None, method: str, path: str, body: Any, needs: str, allowed: int
) -> None:
    expected = 401 if role is None else allowed if needs in HOLDS[role] else 403
    # a POST says it is JSON even without a body: the API refuses what a browser could send
    # from another site without asking first
    headers = {"Content-Type": "application/json"} if method == "POST" else None
    with as_role(server, role) as client:
        response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == expected, response.text
    assert response.headers["content-type"].startswith("application/json")
    if expected in (401, 403):
        assert response.json()["error"]
    if expected == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


READS = [
    ("/api/v1/incidents", 200),
    ("/api/v1/incidents/inc-nope", 404),
    ("/api/v1/approvals", 200),
    ("/api/v1/silences", 200),
    ("/api/v1/policy", 200),
    ("/api/v1/events?limit=1", 200),
    ("/api/v1/audit/verify", 200),
    ("/metrics", 200),
    ("/api/v1/openapi.json", 200),
    ("/api/v1/docs", 404),  # no documentation pages: they would load scripts from a CDN
    ("/api/v1/no-such-route", 404),
]


@pytest.mark.parametrize(("path", "status"), READS, ids=[p for p, _ in READS])
def test_every_read_route_needs_a_token_and_any_token_reads(
    server: Server, path: str, status: int
) -> None:
    with as_role(server, None) as client:
        assert client.get(path).status_code == 401
    with server.client("not-a-token") as client:
        assert client.get(path).status_code == 401
    with as_role(server, "viewer") as client:
        assert client.get(path).status_code == status


def test_the_probes_are_public(server: Server) -> None:
    with as_role(server, None) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


# --------------------------------------------------------------------------- ingest


def alertmanager(instance: str, service: str) -> dict[str, Any]:
    labels = {"alertname": "InstanceDown", "instance": instance, "service": service}
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "status": "firing",
        "receiver": "onduty",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {},
                "startsAt": "2026-01-05T09:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": f"fp-{instance}",
            }
        ],
    }


def cloudevent(event_id: str, instance: str) -> bytes:
    labels = {"alertname": "DiskFull", "instance": instance}
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": "/probe",
        "type": "com.example.alert",
        "data": {"status": "firing", "labels": labels},
    }
    return json.dumps(event).encode()


def test_ingest_takes_a_per_source_token_never_a_user_token(server: Server) -> None:
    path = "/api/v1/signals/alertmanager"
    body = alertmanager("search-9", "search")
    with as_role(server, None) as client:
        assert client.post(path, json=body).status_code == 401
    with as_role(server, "admin") as client:
        assert client.post(path, json=body).status_code == 401
    with server.client(AM_TOKEN) as client:
        assert client.post(path, json=body).status_code == 202
        # this credential is for Alertmanager only
        native = {"source": "x", "fingerprint": "x", "status": "firing", "labels": {}}
        refused = client.post("/api/v1/signals", json=native)
        assert refused.status_code == 403 and "alertmanager-eu" in refused.json()["error"]
    received = [e for e in events_of(server, "SignalReceived") if e["data"]["fingerprint"] == (
        "fp-search-9"
    )]  # fmt: skip
    assert [e["actor"] for e in received] == ["alertmanager-eu"]


def test_ingest_takes_an_hmac_signature_of_time_and_body(server: Server) -> None:
    path = "/api/v1/signals/cloudevents"
    headers = {"Content-Type": "application/cloudevents+json"}
    body = cloudevent("ce-1", "db-1")
    with as_role(server, None) as client:
        good = {**headers, "X-Onduty-Signature": sign(CE_SECRET, body)}
        assert client.post(path, content=body, headers=good).status_code == 202
        replayed = client.post(path, content=body, headers=good)  # a captured request again
        assert replayed.status_code == 409 and "already received" in replayed.json()["error"]
        tampered = body.replace(b"db-1", b"db-2")
        assert client.post(path, content=tampered, headers=good).status_code == 401
        wrong_key = {**headers, "X-Onduty-Signature": sign("guess", body)}
        assert client.post(path, content=body, headers=wrong_key).status_code == 401
        assert client.post(path, content=body, headers=headers).status_code == 401
        stale = {**headers, "X-Onduty-Signature": sign(CE_SECRET, body, timestamp=1_000_000)}
        skewed = client.post(path, content=body, headers=stale)
        assert skewed.status_code == 401 and "behind onduty's clock" in skewed.json()["error"]
        body_only = {**headers, "X-Onduty-Signature": sign_body(CE_SECRET, body)}
        down = client.post(path, content=body, headers=body_only)
        assert down.status_code == 401 and "must sign with a time" in down.json()["error"]
    received = [e for e in events_of(server, "SignalReceived") if "db-" in json.dumps(e["data"])]
    assert [(e["actor"], e["data"]["labels"]["instance"]) for e in received] == [
        ("cloud-events", "db-1")
    ]


# --------------------------------------------------------------------------- who did it


def test_an_approval_is_recorded_with_the_approvers_name_and_role(server: Server) -> None:
    with server.client(AM_TOKEN) as client:
        sent = client.post(
            "/api/v1/signals/alertmanager", json=alertmanager("checkout-2", "checkout")
        )
        assert sent.status_code == 202
    with as_role(server, "viewer") as client:
        pending = [
            a for a in client.get("/api/v1/approvals").json() if "checkout-2" in a["summary"]
        ]
        assert len(pending) == 1, pending
        approval = pending[0]
        refused = client.post(f"/api/v1/approvals/{approval['id']}/approve", json={})
        assert refused.status_code == 403
    with as_role(server, "approver") as client:
        answer = client.post(f"/api/v1/approvals/{approval['id']}/approve", json={"comment": "go"})
        assert answer.status_code == 202, answer.text
    granted = [e for e in events_of(server, "ApprovalGranted") if e["data"]["approval_id"] == (
        approval["id"]
    )]  # fmt: skip
    assert [(e["actor"], e["data"]["role"], e["data"]["comment"]) for e in granted] == [
        ("anna", "approver", "go")
    ]
    with as_role(server, "viewer") as client:
        incident = client.get(f"/api/v1/incidents/{approval['incident_id']}").json()
    verdicts = [
        e["data"]["verdict"] for e in incident["timeline"] if e["type"] == "PolicyEvaluated"
    ]
    assert verdicts == ["require_approval", "allow"]  # the core obeyed anna's answer


def test_acknowledge_and_silences_are_recorded_with_the_operators_name(server: Server) -> None:
    body = cloudevent("ce-ack", "db-7")
    headers = {
        "Content-Type": "application/cloudevents+json",
        "X-Onduty-Signature": sign(CE_SECRET, body),
    }
    with as_role(server, None) as client:
        assert (
            client.post("/api/v1/signals/cloudevents", content=body, headers=headers).status_code
            == 202
        )
    with as_role(server, "operator") as client:
        mine = [i for i in client.get("/api/v1/incidents").json() if "db-7" in i["title"]]
        assert len(mine) == 1 and mine[0]["status"] == "open", mine
        path = f"/api/v1/incidents/{mine[0]['id']}/acknowledge"
        acknowledged = client.post(path, json={"comment": "on it"})
        assert acknowledged.status_code == 202, acknowledged.text
        created = client.post("/api/v1/silences", json={**SILENCE, "created_by": "mallory"})
        assert created.status_code == 202
        silences = {s["id"]: s for s in client.get("/api/v1/silences").json()}
        assert silences[created.json()["id"]]["created_by"] == "otto"  # never the body's claim
        assert client.delete(f"/api/v1/silences/{created.json()['id']}").status_code == 202
    acks = [
        e for e in events_of(server, "Acknowledged") if e["data"]["incident_id"] == mine[0]["id"]
    ]
    assert [(e["actor"], e["data"]["comment"]) for e in acks] == [("otto", "on it")]
    expired = [e for e in events_of(server, "SilenceExpired")
               if e["data"]["silence_id"] == created.json()["id"]]  # fmt: skip
    assert [e["actor"] for e in expired] == ["otto"]


def test_autonomy_changes_by_an_admin_over_the_cli(server: Server) -> None:
    refused = cli("autonomy", "checkout", "act", url=server.url, token=TOKENS["operator"])
    assert refused.returncode == 2 and "403" in refused.stderr
    bad = cli("autonomy", "checkout", "wild", url=server.url, token=TOKENS["admin"])
    assert bad.returncode == 2 and "LEVEL" in bad.stderr
    changed = cli("autonomy", "checkout", "suggest", url=server.url, token=TOKENS["admin"])
    assert changed.returncode == 0, changed.stderr
    assert "approve → suggest" in changed.stdout
    with as_role(server, "admin") as client:
        restored = client.put("/api/v1/services/checkout/autonomy", json={"level": "approve"})
        assert restored.status_code == 202
        assert restored.json() == {
            "service": "checkout",
            "level": "approve",
            "previous": "suggest",
            "changed": True,
        }
        assert (
            client.put(
                "/api/v1/services/checkout/autonomy", json={"level": "everything"}
            ).status_code
            == 422
        )
    changes = [(e["actor"], e["data"]) for e in events_of(server, "AutonomyChanged")]
    assert changes == [
        ("root", {"service": "checkout", "level": "suggest", "previous": "approve"}),
        ("root", {"service": "checkout", "level": "approve", "previous": "suggest"}),
    ]


def test_the_cli_sends_its_token(server: Server, tmp_path: Path) -> None:
    missing = cli("policy", "status", url=server.url)
    assert missing.returncode == 2
    assert "401" in missing.stderr and "ONDUTY_TOKEN" in missing.stderr
    status = cli("policy", "status", url=server.url, token=TOKENS["viewer"])  # from ONDUTY_TOKEN
    assert status.returncode == 0, status.stderr

    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(CONFIG.partition("access:")[0].replace("[approver]", "[admin]"))
    shadow = cli("policy", "shadow", str(candidate), "--token", TOKENS["admin"], url=server.url)
    assert shadow.returncode == 0, shadow.stderr
    rollback = cli("policy", "rollback", url=server.url, token=TOKENS["admin"])
    assert rollback.returncode == 0, rollback.stderr
    activated = events_of(server, "PolicyActivated")
    assert [(e["actor"], e["data"]["role"]) for e in activated[-2:]] == [
        ("root", "shadow"),
        ("root", "withdrawn"),
    ]

    added = cli(
        "silence", "add", 'alertname="NeverFires"', "-m", "cli", url=server.url,
        token=TOKENS["operator"],
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.split()[1]
    expired = cli("silence", "expire", silence_id, url=server.url, token=TOKENS["operator"])
    assert expired.returncode == 0, expired.stderr
    with as_role(server, "viewer") as client:
        silences = {s["id"]: s for s in client.get("/api/v1/silences").json()}
    assert silences[silence_id]["created_by"] == "otto"  # the token's name, not `--by cli`
    refused = cli("ack", "inc-nope", url=server.url, token=TOKENS["viewer"])
    assert refused.returncode == 2 and "403" in refused.stderr
    unknown = cli("approve", "apr-nope", "--token", "nope", url=server.url)
    assert unknown.returncode == 2 and "not accepted" in unknown.stderr


def test_token_hash_prints_what_to_configure() -> None:
    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "onduty", "token", "hash", *args],
            input=stdin, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    hashed = run(stdin="s3cret-token\n")
    assert hashed.returncode == 0, hashed.stderr
    assert hashed.stdout.strip() == hash_token("s3cret-token")
    made = run("--new")
    assert made.returncode == 0, made.stderr
    lines = dict(line.split(":", 1) for line in made.stdout.strip().splitlines())
    token = lines["token"].strip()
    assert len(token) >= 40
    assert lines["hash"].strip() == hash_token(token)
    empty = run(stdin="")
    assert empty.returncode == 2 and "no token" in empty.stderr


# --------------------------------------------------------------------------- TLS and throttling


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def test_tls_and_the_failure_throttle(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = tmp_path / "onduty.yaml"
    config.write_text(
        CONFIG.replace("failures: {max: 1000, per: 1m}", "failures: {max: 3, per: 1m}")
    )
    with Server(tmp_path / "tls.db", config=config, env=ENV, tls=(cert, key)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with as_role(server, "viewer") as client:
            assert client.get("/api/v1/policy").status_code == 200
        with pytest.raises(httpx.ConnectError), httpx.Client(verify=True) as untrusting:
            untrusting.get(f"{server.url}/healthz")  # not signed by a CA the system trusts
        status = cli("policy", "status", url=server.url, token=TOKENS["viewer"],
                      SSL_CERT_FILE=str(cert))  # fmt: skip
        assert status.returncode == 0, status.stderr

        # repeated bad credentials from one address: 401 three times, then 429 for bad ones
        with server.client("guess-1") as client:
            for _ in range(2):
                assert client.get("/api/v1/incidents").status_code == 401
        with server.client() as client:
            bad = client.post("/api/v1/signals/alertmanager", json={}, headers={
                "Authorization": "Bearer guess-2"
            })  # fmt: skip
            assert bad.status_code == 401
            throttled = client.get("/api/v1/incidents", headers={"Authorization": "Bearer x"})
            assert throttled.status_code == 429
            assert 0 < int(throttled.headers["Retry-After"]) <= 60
            assert "too many" in throttled.json()["error"]
        with as_role(server, "admin") as client:
            assert client.get("/api/v1/incidents").status_code == 200  # a good token still works
            assert client.get("/healthz").status_code == 200
        with server.client(AM_TOKEN) as client:
            response = client.post("/api/v1/signals/alertmanager", json=alertmanager("x", "y"))
            assert response.status_code == 202
        assert server.terminate() == 0


def test_tls_files_must_be_readable_and_match(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "onduty", "serve", "--store", str(tmp_path / "x.db"), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    missing = serve("--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key))
    assert (
        missing.returncode == 2 and "--tls-cert" in missing.stderr and "nope.pem" in missing.stderr
    )
    alone = serve("--tls-cert", str(cert))
    assert alone.returncode == 2 and "both" in alone.stderr
    swapped = serve("--tls-cert", str(key), "--tls-key", str(cert))
    assert swapped.returncode == 2 and "PEM" in swapped.stderr
    for result in (missing, alone, swapped):
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before opening anything


def test_an_unset_hash_variable_stops_serve(tmp_path: Path) -> None:
    config = tmp_path / "onduty.yaml"
    config.write_text(CONFIG)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ONDUTY_TEST_")}
    environment["COLUMNS"] = "240"
    result = subprocess.run(
        [sys.executable, "-m", "onduty", "serve", "-c", str(config), "--store",
         str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=60, check=False, env=environment,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "access.tokens[3].hash_env" in result.stderr
    assert "ONDUTY_TEST_ROOT_HASH is not set" in result.stderr
