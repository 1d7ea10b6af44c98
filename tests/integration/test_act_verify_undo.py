"""Verification failure with real actuators: the runbook's action succeeds but fixes nothing
(the alert keeps firing), so when the verification window closes onduty records the failure,
runs the runbook's undo step (a real program) and escalates to a human."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.server import Server

WINDOW = 2.0
"""The runbook's `verify.signal_resolved_within`, in seconds."""

ACTION = """\
import sys
with open(sys.argv[1], "a") as out:
    out.write(" ".join(sys.argv[2:]) + "\\n")
"""

FAILED_AND_UNDONE = ["ActionStarted", "ActionSucceeded", "VerificationFailed", "Escalated"]
UNDO = ["UndoStarted", "UndoFinished"]


@dataclass
class Run:
    incident: dict[str, Any]
    events: list[dict[str, Any]]
    """The whole log, in order."""
    undo_marker: Path


def config(directory: Path) -> Path:
    script = directory / "append.py"
    script.write_text(ACTION)

    def shell(action: str, name: str) -> dict[str, Any]:
        """Appends `<action> <target> <command id>` to `<name>.log` and exits 0."""
        argv = [sys.executable, str(script), str(directory / f"{name}.log")]
        return {
            "kind": "shell",
            "action": action,
            "argv": [*argv, "{{ action }}", "{{ target }}", "{{ command_id }}"],
            "allow": [sys.executable],
            "timeout": "10s",
        }

    document = {
        "services": [{"name": "web", "autonomy": "act", "instances": ["web-1"]}],
        "correlation": {"group_by": ["service", "alertname", "instance"]},
        "runbooks": [
            {
                "name": "reload-config",
                "when": 'signal.labels.alertname == "HighErrorRate"',
                "do": [{"action": "config.reload", "target": "{{ signal.labels.instance }}"}],
                "verify": {"signal_resolved_within": f"{WINDOW:g}s"},
                "undo": [{"action": "config.restore", "target": "{{ signal.labels.instance }}"}],
            }
        ],
        "actuators": [shell("config.reload", "reload"), shell("config.restore", "restore")],
    }
    path = directory / "onduty.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def ts(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["ts"])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One run: the alert fires and never resolves; wait for the escalation after the
    verification window (it fires on the real clock)."""
    directory = tmp_path_factory.mktemp("verify-undo")
    with (
        Server(directory / "onduty.db", config=config(directory)) as server,
        server.client() as client,
    ):
        response = client.post(
            "/api/v1/signals",
            json={
                "source": "test",
                "fingerprint": "errors-web-1",
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "service": "web", "instance": "web-1"},
            },
        )
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + WINDOW + 10

        while True:
            events: list[dict[str, Any]] = client.get("/api/v1/events").json()
            kinds = [event["type"] for event in events]
            if "UndoFinished" in kinds and "Escalated" in kinds:
                break
            assert time.monotonic() < deadline, (kinds, server.output())
            time.sleep(0.1)
        (listed,) = client.get("/api/v1/incidents").json()
        incident = client.get(f"/api/v1/incidents/{listed['id']}").json()
        assert server.terminate() == 0, server.output()
        yield Run(incident, events, directory / "restore.log")


def test_the_action_ran_but_verification_failed_after_the_window(run: Run) -> None:
    by_type = {event["type"]: event for event in run.events}
    assert (run.undo_marker.parent / "reload.log").read_text().startswith("config.reload web-1 ")
    succeeded, failed = by_type["ActionSucceeded"], by_type["VerificationFailed"]
    waited = (ts(failed) - ts(succeeded)).total_seconds()
    assert WINDOW <= waited < WINDOW + 2, waited
    assert "did not resolve" in failed["data"]["reason"]


def test_the_undo_step_ran_for_real_and_a_human_was_paged(run: Run) -> None:
    kinds = [event["type"] for event in run.events]
    order = [kinds.index(kind) for kind in ["VerificationFailed", *UNDO]]
    assert order == sorted(order), kinds
    command_id = next(e for e in run.events if e["type"] == "ActionStarted")["data"]["command_id"]
    started = next(e for e in run.events if e["type"] == "UndoStarted")["data"]
    finished = next(e for e in run.events if e["type"] == "UndoFinished")["data"]
    assert started["of_command_id"] == finished["of_command_id"] == command_id
    assert (started["action"], started["target"]) == ("config.restore", "web-1")
    assert finished["ok"] is True, finished
    assert run.undo_marker.read_text() == f"config.restore web-1 {finished['command_id']}\n"

    escalated = [e["data"] for e in run.events if e["type"] == "Escalated"]
    assert len(escalated) == 1 and escalated[0]["command_id"] == command_id
    assert "did not fix it" in escalated[0]["reason"]
    assert run.incident["status"] == "open"
    assert run.incident["escalations"] == [escalated[0]["reason"]]


def test_the_incident_timeline_tells_the_whole_story(run: Run) -> None:
    kinds = [event["type"] for event in run.incident["timeline"]]
    order = [kinds.index(kind) if kind in kinds else -1 for kind in FAILED_AND_UNDONE]
    assert -1 not in order and order == sorted(order), kinds
    undo = [kind for kind in kinds if kind in UNDO]
    assert undo == UNDO, kinds
    undone = next(e for e in run.incident["timeline"] if e["type"] == "UndoFinished")
    assert undone["data"]["ok"] is True
