"""A kill switch through `onduty serve` with real tokens: an operator stops a runbook mid-incident
and its next proposal is denied with the switch as the reason; bad input is a 422 naming the
field; a viewer may list switches but not set them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from onduty.api.auth import COOKIE, hash_token
from tests.integration.server import Server
from tests.integration.test_access import AM_TOKEN, alertmanager, cli

OPERATOR, VIEWER = "otto-0123456789", "vera-0123456789"
CONFIG = f"""
services:
  - {{name: search, autonomy: act, instances: [search-1, search-2, search-3]}}
correlation: {{group_by: [service, alertname, instance]}}
runbooks:
  - name: restart
    when: signal.labels.alertname == "InstanceDown"
    do: [{{action: process.restart, target: "{{{{ signal.labels.instance }}}}"}}]
access:
  tokens:
    - {{name: vera, roles: [viewer], hash: "{hash_token(VIEWER)}"}}
    - {{name: otto, roles: [operator], hash: "{hash_token(OPERATOR)}"}}
  ingest:
    - {{name: alertmanager-eu, hash: "{hash_token(AM_TOKEN)}", routes: [alertmanager]}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("kill-switch")
    (folder / "onduty.yaml").write_text(CONFIG)
    with Server(folder / "kill.db", config=folder / "onduty.yaml") as running:
        yield running


def verdicts_on(server: Server, target: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        with server.client(VIEWER) as client:
            response = client.get(
                "/api/v1/events", params={"type": "PolicyEvaluated", "limit": 10000}
            )
            proposed = client.get(
                "/api/v1/events", params={"type": "ActionProposed", "limit": 10000}
            )
        commands = {
            e["data"]["command_id"] for e in proposed.json() if e["data"]["target"] == target
        }
        found = [e["data"] for e in response.json() if e["data"]["command_id"] in commands]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def fire(server: Server, instance: str) -> None:
    with server.client(AM_TOKEN) as client:
        sent = client.post("/api/v1/signals/alertmanager", json=alertmanager(instance, "search"))
        assert sent.status_code == 202, sent.text


def test_a_kill_switch_stops_a_runbook_mid_incident(server: Server) -> None:
    fire(server, "search-1")
    assert [v["verdict"] for v in verdicts_on(server, "search-1")] == ["allow"]
    with server.client(VIEWER) as client:
        body = {"kind": "runbook", "name": "restart", "reason": "it makes things worse"}
        assert client.post("/api/v1/kill-switches", json=body).status_code == 403
    with server.client(OPERATOR) as client:
        body = {"kind": "runbook", "name": "restart", "reason": "it makes things worse"}
        response = client.post("/api/v1/kill-switches", json=body)
        assert response.status_code == 202, response.text
        assert response.json()["set_by"] == "otto"
    with server.client(VIEWER) as client:
        (listed,) = client.get("/api/v1/kill-switches").json()
    assert (listed["kind"], listed["name"], listed["set_by"]) == ("runbook", "restart", "otto")
    assert listed["reason"] == "it makes things worse"

    fire(server, "search-2")
    (denied,) = verdicts_on(server, "search-2")
    assert denied["verdict"] == "deny"
    assert denied["reason"] == (
        "kill-switch: kill switch on runbook restart (set by otto: it makes things worse)"
    )

    with server.client(OPERATOR) as client:
        assert client.delete("/api/v1/kill-switches/runbook/restart").status_code == 202
        assert client.delete("/api/v1/kill-switches/runbook/restart").status_code == 404
        assert client.get("/api/v1/kill-switches").json() == []
    fire(server, "search-3")
    assert [v["verdict"] for v in verdicts_on(server, "search-3")] == ["allow"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "switchboard", "name": "x"}, "kind"),
        ({"kind": "runbook", "name": ""}, "name"),
        ({"kind": "runbook"}, "name"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    server: Server, body: dict[str, Any], field: str
) -> None:
    with server.client(OPERATOR) as client:
        response = client.post("/api/v1/kill-switches", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", field]


def test_clearing_an_unknown_kind_is_a_422_naming_the_field(server: Server) -> None:
    with server.client(OPERATOR) as client:
        response = client.delete("/api/v1/kill-switches/switchboard/x")
    assert response.status_code == 422
    assert response.json()["field"] == "kind"


def test_the_cli_sets_lists_and_clears_a_switch(server: Server) -> None:
    url = server.url
    refused = cli("kill-switch", "set", "service", "search", url=url, token=VIEWER)
    assert refused.returncode != 0
    done = cli(
        "kill-switch", "set", "actuator", "process", "-m", "bad rollout", url=url, token=OPERATOR
    )
    assert done.returncode == 0, done.stderr
    assert "kill switch set on actuator process by otto" in done.stdout
    listed = cli("kill-switch", "list", url=url, token=VIEWER)
    assert "actuator process set by otto" in listed.stdout and "bad rollout" in listed.stdout
    wrong = cli("kill-switch", "clear", "switchboard", "process", url=url, token=OPERATOR)
    assert wrong.returncode != 0 and "KIND must be one of" in wrong.stderr
    cleared = cli("kill-switch", "clear", "actuator", "process", url=url, token=OPERATOR)
    assert cleared.returncode == 0, cleared.stderr
    assert "no kill switch is set" in cli("kill-switch", "list", url=url, token=VIEWER).stdout


def test_every_console_page_shows_an_active_switch(server: Server) -> None:
    pages = ("/", "/approvals", "/silences", "/services")

    def shown() -> list[bool]:
        with server.client() as client:
            client.cookies.set(COOKIE, VIEWER)
            answers = [client.get(page) for page in pages]
        assert all(answer.status_code == 200 for answer in answers)
        return ["kill switch: service search" in answer.text for answer in answers]

    assert shown() == [False] * len(pages)
    with server.client(OPERATOR) as client:
        body = {"kind": "service", "name": "search", "reason": "<b>db migration</b>"}
        assert client.post("/api/v1/kill-switches", json=body).status_code == 202
    assert shown() == [True] * len(pages)
    with server.client() as client:
        client.cookies.set(COOKIE, VIEWER)
        page = client.get("/").text
    assert "set by otto: &lt;b&gt;db migration&lt;/b&gt;" in page
    with server.client(OPERATOR) as client:
        assert client.delete("/api/v1/kill-switches/service/search").status_code == 202
    assert shown() == [False] * len(pages)
