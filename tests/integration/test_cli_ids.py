"""IDs people copy are whole, and any unique beginning of one will do (as with git commits):
`onduty approve`, `deny`, `ack` and `silence expire` against a real `onduty serve`, each with a
unique prefix, an ambiguous one (exit 2 naming the candidates) and one that matches nothing
(exit 2); and the tables show every ID whole even on a narrow terminal."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests import run_cli
from tests.integration.server import Server

CONFIG = """
services:
  - {name: checkout, autonomy: approve, instances: [checkout-1, checkout-2, checkout-3]}
correlation: {group_by: [service, alertname, instance]}
runbooks:
  - name: restart
    when: signal.labels.alertname == "InstanceDown"
    do: [{action: process.restart, target: "{{ signal.labels.instance }}"}]
"""


def onduty(*args: str, columns: int = 240) -> subprocess.CompletedProcess[str]:
    return run_cli.onduty(*args, columns=columns, timeout=60, unset=("ONDUTY_TOKEN", "ONDUTY_URL"))


def unique_prefix(whole: str, others: list[str]) -> str:
    """The shortest beginning of `whole` that no other ID has (never `whole` itself)."""
    for size in range(len(whole.split("-", maxsplit=1)[0]) + 2, len(whole)):
        if not any(other.startswith(whole[:size]) for other in others if other != whole):
            return whole[:size]
    raise AssertionError(f"no unique prefix of {whole} among {others}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("ids")
    (folder / "onduty.yaml").write_text(CONFIG)
    with Server(folder / "ids.db", config=folder / "onduty.yaml") as running:
        with running.client() as client:
            for instance in ("checkout-1", "checkout-2", "checkout-3"):
                signal = {
                    "source": "test",
                    "fingerprint": f"down-{instance}",
                    "status": "firing",
                    "labels": {"alertname": "InstanceDown", "instance": instance},
                }
                assert client.post("/api/v1/signals", json=signal).status_code == 202
            for reason in ("upgrade", "backup"):
                silence = {"matchers": [f'job="{reason}"'], "comment": reason, "duration": "1h"}
                assert client.post("/api/v1/silences", json=silence).status_code == 202
        yield running


def listed(server: Server, path: str) -> list[dict[str, Any]]:
    with server.client() as client:
        response = client.get(path)
    assert response.status_code == 200, response.text
    return list(response.json())


def test_approve_and_deny_take_a_unique_prefix(server: Server) -> None:
    pending = [item["id"] for item in listed(server, "/api/v1/approvals")]
    assert len(pending) == 3, pending
    ambiguous = onduty("approve", "apr-", "--url", server.url)
    assert ambiguous.returncode == 2
    assert "ambiguous" in ambiguous.stderr
    assert all(whole in ambiguous.stderr for whole in pending)  # the candidates, named
    none = onduty("deny", "apr-zzzz", "--url", server.url)
    assert none.returncode == 2
    assert "no pending approval matches 'apr-zzzz'" in none.stderr

    first, second = pending[0], pending[1]
    approved = onduty("approve", unique_prefix(first, pending), "--url", server.url)
    assert approved.returncode == 0, approved.stderr
    assert f"approved {first}" in approved.stdout  # the whole ID it answered
    denied = onduty("deny", unique_prefix(second, pending), "--url", server.url)
    assert denied.returncode == 0, denied.stderr
    assert f"denied {second}" in denied.stdout
    still = [item["id"] for item in listed(server, "/api/v1/approvals")]
    assert first not in still and second not in still and len(still) == 1
    # an answered approval is no longer a candidate: its prefix matches nothing now
    again = onduty("approve", unique_prefix(first, pending), "--url", server.url)
    assert again.returncode == 2 and "no pending approval matches" in again.stderr


def test_ack_takes_a_unique_prefix_of_an_open_incident(server: Server) -> None:
    open_ids = [item["id"] for item in listed(server, "/api/v1/incidents?status=open")]
    assert len(open_ids) == 3, open_ids
    ambiguous = onduty("ack", "inc-", "--url", server.url)
    assert ambiguous.returncode == 2
    assert "ambiguous" in ambiguous.stderr
    assert all(whole in ambiguous.stderr for whole in open_ids)
    none = onduty("ack", "inc-zzzz", "--url", server.url)
    assert none.returncode == 2 and "no open incident matches 'inc-zzzz'" in none.stderr

    chosen = open_ids[-1]
    acked = onduty("ack", unique_prefix(chosen, open_ids), "-m", "mine", "--url", server.url)
    assert acked.returncode == 0, acked.stderr
    assert f"acknowledged {chosen}" in acked.stdout
    with server.client() as client:
        timeline = client.get(f"/api/v1/incidents/{chosen}").json()["timeline"]
    assert [e["data"]["comment"] for e in timeline if e["type"] == "Acknowledged"] == ["mine"]


def test_silence_expire_takes_a_unique_prefix(server: Server) -> None:
    current = [item["id"] for item in listed(server, "/api/v1/silences?state=active")]
    assert len(current) == 2, current
    ambiguous = onduty("silence", "expire", "sil-", "--url", server.url)
    assert ambiguous.returncode == 2
    assert "ambiguous" in ambiguous.stderr
    assert all(whole in ambiguous.stderr for whole in current)
    none = onduty("silence", "expire", "sil-zzzz", "--url", server.url)
    assert none.returncode == 2
    assert "no active or pending silence matches 'sil-zzzz'" in none.stderr

    chosen = current[0]
    expired = onduty("silence", "expire", unique_prefix(chosen, current), "--url", server.url)
    assert expired.returncode == 0, expired.stderr
    assert f"expired {chosen}" in expired.stdout
    left = [item["id"] for item in listed(server, "/api/v1/silences?state=active")]
    assert left == [current[1]]
    whole = onduty("silence", "expire", current[1], "--url", server.url)  # a whole ID still works
    assert whole.returncode == 0 and f"expired {current[1]}" in whole.stdout


@pytest.mark.parametrize("columns", [60, 100])
def test_tables_show_ids_whole_on_a_narrow_terminal(server: Server, columns: int) -> None:
    incidents = [item["id"] for item in listed(server, "/api/v1/incidents")]
    silences = [item["id"] for item in listed(server, "/api/v1/silences?state=all")]
    pending = listed(server, "/api/v1/approvals")
    tables = {
        "incidents": (
            onduty("incidents", "--store", str(server.store), columns=columns),
            incidents,
        ),
        "silences": (
            onduty("silence", "list", "--state", "all", "--url", server.url, columns=columns),
            silences,
        ),
        "approvals": (
            onduty("approvals", "--url", server.url, columns=columns),
            [item["id"] for item in pending] + [item["incident_id"] for item in pending],
        ),
    }
    for name, (result, ids) in tables.items():
        assert result.returncode == 0, (name, result.stderr)
        assert ids, name
        lines = result.stdout.splitlines()
        for whole in ids:
            # on one line, uncut: what a user selects and copies is the whole ID
            assert any(whole in line for line in lines), (name, whole, result.stdout)
