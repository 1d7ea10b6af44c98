"""The two-person rule end to end, against a started `onduty serve` with real tokens: two people
complete one approval over HTTP and with `onduty approve`; raising a service's autonomy takes
two admins while lowering it takes one; token names that differ only in case are refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from onduty.api.auth import hash_token
from tests import run_cli
from tests.integration.server import Server

TOKENS = {
    "alice": "alice-token-5e1f0c2b9a77",
    "bob": "bob-token-0d4c8e6f2a19",
    "vera": "vera-token-93b2d7c1e5a0",
    "root": "root-token-7a6e1d0c4b38",
    "ruth": "ruth-token-2c9f5b8a1e64",
}
ROLES = {"alice": "approver", "bob": "approver", "vera": "viewer", "root": "admin", "ruth": "admin"}
INGEST = "ingest-token-4f7b0e2d9c15"


def config_text(tokens: dict[str, str] | None = None) -> str:
    tokens = tokens or {name: f"[{role}]" for name, role in ROLES.items()}
    hashes = {name: hash_token(TOKENS.get(name, f"{name}-other-token-1c")) for name in tokens}
    listed = "\n".join(
        f'    - {{name: {name}, roles: {roles}, hash: "{hashes[name]}"}}'
        for name, roles in tokens.items()
    )
    return f"""
services:
  - name: checkout
    tier: critical
    autonomy: approve
    instances: [checkout-1, checkout-2, checkout-3]
  - {{name: search, autonomy: suggest, instances: [search-1]}}
correlation: {{group_by: [service, alertname, instance]}}
runbooks:
  - name: restart
    when: signal.labels.alertname == "InstanceDown"
    do: [{{action: process.restart, target: "{{{{ signal.labels.instance }}}}"}}]
actuators:
  - kind: shell
    action: process.restart
    argv: [/bin/true, "{{{{ target }}}}"]
    allow: [/bin/true]
policy:
  approvals: {{required: 2, roles: [approver], timeout: 10m}}
access:
  tokens:
{listed}
  ingest:
    - {{name: monitoring, hash: "{hash_token(INGEST)}"}}
  failures: {{max: 1000, per: 1m}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("two-person")
    (folder / "onduty.yaml").write_text(config_text())
    with Server(folder / "two.db", config=folder / "onduty.yaml") as running:
        yield running


def signal(server: Server, instance: str) -> dict[str, Any]:
    """Report `instance` down; the pending approval request for its restart."""
    body = {
        "source": "test",
        "fingerprint": f"down-{instance}",
        "status": "firing",
        "labels": {"alertname": "InstanceDown", "service": "checkout", "instance": instance},
    }
    with server.client(INGEST) as client:
        assert client.post("/api/v1/signals", json=body).status_code == 202
    with server.client(TOKENS["vera"]) as client:
        mine = [a for a in client.get("/api/v1/approvals").json() if instance in a["summary"]]
    assert len(mine) == 1, mine
    return dict(mine[0])


def pending(server: Server, name: str) -> dict[str, dict[str, Any]]:
    with server.client(TOKENS[name]) as client:
        listed = client.get("/api/v1/approvals")
    assert listed.status_code == 200, listed.text
    return {item["id"]: item for item in listed.json()}


def verdicts(server: Server, incident_id: str) -> list[tuple[str, str]]:
    with server.client(TOKENS["vera"]) as client:
        incident = client.get(f"/api/v1/incidents/{incident_id}").json()
    return [
        (e["data"]["verdict"], e["data"]["reason"])
        for e in incident["timeline"]
        if e["type"] == "PolicyEvaluated"
    ]


def cli(*args: str, url: str, token: str) -> subprocess.CompletedProcess[str]:
    return run_cli.onduty(*args, "--url", url, timeout=60, env={"ONDUTY_TOKEN": token})


def test_two_people_complete_one_approval_over_http(server: Server) -> None:
    request = signal(server, "checkout-1")
    approval_id = request["id"]
    assert (request["required"], request["approved_by"]) == (2, [])
    path = f"/api/v1/approvals/{approval_id}/approve"
    with server.client(TOKENS["alice"]) as alice:
        # a double click: one answer is recorded, the other is told it already was
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda _: alice.post(path, json={"comment": "ok"}), range(2)))
        assert sorted(r.status_code for r in both) == [202, 409], [r.text for r in both]
        first = next(r for r in both if r.status_code == 202)
        assert first.json()["status"] == "1 of 2: approved by alice, waiting for another approver"
        # the request is still there, for bob, saying where it stands
        waiting = pending(server, "bob")[approval_id]
        assert waiting["approved_by"] == ["alice"]
        assert waiting["status"] == "1 of 2: approved by alice, waiting for another approver"
        again = alice.post(path, json={})
        assert again.status_code == 409, again.text
        assert "alice has already approved" in again.json()["error"]
        assert alice.post(f"/api/v1/approvals/{approval_id}/deny", json={}).status_code == 409
    with server.client(TOKENS["bob"]) as bob:
        second = bob.post(path, json={})
        assert second.status_code == 202, second.text
        assert second.json()["outcome"] == "granted"
        assert second.json()["status"] == "approved by alice and bob"
        late = bob.post(path, json={})
        assert late.status_code == 404 and "approved by alice and bob" in late.json()["error"]
    assert approval_id not in pending(server, "vera")
    assert verdicts(server, request["incident_id"]) == [
        ("require_approval", "autonomy: checkout needs a human to approve"),
        ("allow", "autonomy: approved by alice and bob"),
    ]


def test_onduty_approve_from_two_identities(server: Server) -> None:
    request = signal(server, "checkout-2")
    approval_id = request["id"]
    first = cli("approve", approval_id, url=server.url, token=TOKENS["alice"])
    assert first.returncode == 0, first.stderr
    assert "1 of 2: approved by alice, waiting for another approver" in first.stdout
    listed = cli("approvals", url=server.url, token=TOKENS["bob"])
    assert listed.returncode == 0, listed.stderr
    assert approval_id in listed.stdout and "approved by alice" in listed.stdout
    twice = cli("approve", approval_id, url=server.url, token=TOKENS["alice"])
    assert twice.returncode == 2
    assert "409" in twice.stderr and "alice has already approved" in twice.stderr
    second = cli("approve", approval_id, url=server.url, token=TOKENS["bob"])
    assert second.returncode == 0, second.stderr
    assert "approved by alice and bob" in second.stdout
    assert [v for v, _ in verdicts(server, request["incident_id"])] == [
        "require_approval",
        "allow",
    ]


def autonomy_changes(server: Server, service: str) -> list[dict[str, Any]]:
    with server.client(TOKENS["vera"]) as client:
        found = client.get("/api/v1/events", params={"type": "AutonomyChanged", "limit": 1000})
    return [e for e in found.json() if e["data"]["service"] == service]


def test_raising_autonomy_takes_as_many_admins_as_approvals_and_lowering_one(
    server: Server,
) -> None:
    path = "/api/v1/services/search/autonomy"
    with server.client(TOKENS["root"]) as root:
        asked = root.put(path, json={"level": "act"})
        assert asked.status_code == 202, asked.text
        assert (asked.json()["changed"], asked.json()["pending"]) == (False, True)
        assert asked.json()["status"].startswith("1 of 2: asked by root, waiting for another")
        request_id = asked.json()["request_id"]
        assert root.put(path, json={"level": "act"}).status_code == 409  # not twice alone
        confirm = f"/api/v1/autonomy/requests/{request_id}/confirm"
        assert root.post(confirm, json={}).status_code == 409
    assert autonomy_changes(server, "search") == []  # one admin changed nothing
    for name, offered in (("ruth", 1), ("root", 0)):  # the console offers it to the others
        with server.client(TOKENS[name]) as client:
            page = client.get("/fragments/services")
        assert page.status_code == 200, page.text
        assert "1 of 2: asked by root, waiting for another admin" in page.text
        assert page.text.count(f"/api/v1/autonomy/requests/{request_id}/confirm") == offered
    with server.client(TOKENS["vera"]) as viewer:
        listed = viewer.get("/api/v1/autonomy/requests").json()
        assert [(r["id"], r["confirmed_by"]) for r in listed] == [(request_id, ["root"])]
        assert viewer.post(confirm, json={}).status_code == 403
    with server.client(TOKENS["ruth"]) as ruth:
        confirmed = ruth.put(path, json={"level": "act"})
        assert confirmed.status_code == 202, confirmed.text
        assert confirmed.json()["changed"] is True
    assert [(e["actor"], e["data"]["level"]) for e in autonomy_changes(server, "search")] == [
        ("ruth", "act")
    ]
    with server.client(TOKENS["vera"]) as viewer:
        found = viewer.get("/api/v1/events", params={"type": "AutonomyRaiseConfirmed"}).json()
    assert [(e["actor"], e["data"]["request_id"]) for e in found] == [("ruth", request_id)]
    assert listed[0]["status"].startswith("1 of 2: asked by root")
    # lowering is always safe: one admin, at once
    with server.client(TOKENS["root"]) as root:
        lowered = root.put(path, json={"level": "suggest"})
        assert lowered.status_code == 202 and lowered.json()["changed"] is True
        raised = root.put(path, json={"level": "approve"})
        assert raised.json()["pending"] is True
    with server.client(TOKENS["ruth"]) as ruth:
        # a lowering while a raise waits voids the raise: nobody can confirm it any more
        assert ruth.put(path, json={"level": "observe"}).json()["changed"] is True
        void = ruth.post(
            f"/api/v1/autonomy/requests/{raised.json()['request_id']}/confirm", json={}
        )
        assert void.status_code == 404 and "superseded" in void.json()["error"]
    later = cli("autonomy", "search", "act", url=server.url, token=TOKENS["ruth"])
    assert later.returncode == 0, later.stderr
    assert "raise to act requested" in later.stdout and "waiting for another admin" in later.stdout
    assert [e["data"]["level"] for e in autonomy_changes(server, "search")] == [
        "act",
        "suggest",
        "observe",
    ]


def test_token_names_that_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "onduty.yaml"
    config.write_text(config_text({"alice": "[approver]", "Alice": "[approver]"}))
    checked = subprocess.run(
        [sys.executable, "-m", "onduty", "config", "check", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 2, checked.stdout
    said = checked.stdout + checked.stderr
    assert "tokens[1].name" in said and "'Alice' is already the name of tokens[0]" in said
    served = subprocess.run(
        [sys.executable, "-m", "onduty", "serve", "-c", str(config), "--port", "0",
         "--store", str(tmp_path / "never.db")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert served.returncode == 2, served.stderr
    assert "tokens[1].name" in served.stderr and "names ignore case" in served.stderr
