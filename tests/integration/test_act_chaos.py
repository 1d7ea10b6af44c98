"""Chaos: `onduty serve` is SIGKILLed while a slow, non-idempotent shell action runs, then
restarted on the same log. The action must never run twice: without a way to check its
outcome it is recorded as unknown and escalated; with `check_argv` it is reconciled from what
the check says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.integration.server import Server

SLEEP = 5.0
"""How long the action keeps running after it has taken effect."""

ACTION = """\
import os, sys, time
runs, markers, command_id = sys.argv[1:4]
with open(runs, "a") as out:
    out.write(f"{command_id} {os.getpid()}\\n")
open(os.path.join(markers, command_id), "w").close()
time.sleep(float(sys.argv[4]))
"""

CHECK = """\
import os, sys
markers, command_id = sys.argv[1:3]
sys.exit(0 if os.path.exists(os.path.join(markers, command_id)) else 1)
"""

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def write_config(directory: Path, *, check: bool) -> Path:
    script, markers = directory / "restart.py", directory / "markers"
    script.write_text(ACTION)
    markers.mkdir()
    argv = [sys.executable, str(script), str(directory / "runs.log"), str(markers)]
    actuator: dict[str, Any] = {
        "kind": "shell",
        "action": "process.restart",
        "argv": [*argv, "{{ command_id }}", str(SLEEP)],
        "allow": [sys.executable],
        "timeout": "30s",
    }
    if check:
        checker = directory / "check.py"
        checker.write_text(CHECK)
        actuator["check_argv"] = [sys.executable, str(checker), str(markers), "{{ command_id }}"]
    document = {
        "services": [{"name": "web", "autonomy": "act", "instances": ["web-1"]}],
        "correlation": {"group_by": ["service", "alertname", "instance"]},
        "runbooks": [
            {
                "name": "restart-down-instance",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
                "verify": {"signal_resolved_within": "5m"},
            }
        ],
        "actuators": [actuator],
    }
    path = directory / "onduty.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def events(client: httpx.Client, kind: str, command_id: str | None = None) -> list[Any]:
    """The logged events of one type (about one command, when given)."""
    found: list[Any] = client.get("/api/v1/events", params={"type": kind}).json()
    return [e for e in found if command_id in (None, e["data"].get("command_id"))]


def runs(directory: Path) -> list[str]:
    path = directory / "runs.log"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def leftover_actions(tmp_path: Path) -> Iterator[None]:
    """The killed server's action runs on in its own session; make sure none outlives the
    test."""
    yield
    for line in runs(tmp_path):
        pid = int(line.split()[1])
        try:
            if b"restart.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass  # it has finished


def kill_while_the_action_runs(directory: Path, config: Path) -> tuple[str, float]:
    """Start serve, fire InstanceDown for web-1, SIGKILL serve once the action is durably
    started and its program is running. Returns the command id and when the program began."""
    server = Server(directory / "onduty.db", config=config)
    with server, server.client() as client:
        response = client.post(
            "/api/v1/signals",
            json={
                "source": "chaos",
                "fingerprint": "down-web-1",
                "status": "firing",
                "labels": {"alertname": "InstanceDown", "service": "web", "instance": "web-1"},
            },
        )
        assert response.status_code == 202, response.text
        (started,) = wait_for("ActionStarted", lambda: events(client, "ActionStarted"))
        wait_for("the action's program to run", lambda: runs(directory))
        began = time.monotonic()
        server.kill()
    command_id: str = started["data"]["command_id"]
    return command_id, began


def audit_verify(store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onduty", "audit", "verify", "--store", str(store)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.usefixtures("leftover_actions")
def test_an_action_in_doubt_without_a_check_is_escalated_never_rerun(tmp_path: Path) -> None:
    config = write_config(tmp_path, check=False)
    command_id, began = kill_while_the_action_runs(tmp_path, config)

    with Server(tmp_path / "onduty.db", config=config) as server, server.client() as client:
        unknown = wait_for(
            "ActionOutcomeUnknown", lambda: events(client, "ActionOutcomeUnknown", command_id)
        )
        assert "not idempotent" in unknown[0]["data"]["reason"]
        # Long enough for a second run to have started and written its line.
        time.sleep(max(0.0, began + SLEEP + 2 - time.monotonic()))

        assert len(runs(tmp_path)) == 1, runs(tmp_path)
        assert len(events(client, "ActionStarted", command_id)) == 1
        assert not events(client, "ActionSucceeded", command_id)
        assert not events(client, "ActionFailed", command_id)
        escalated = [e["data"]["reason"] for e in events(client, "Escalated", command_id)]
        assert len(escalated) == 1 and "outcome unknown" in escalated[0], escalated
        (incident,) = client.get("/api/v1/incidents").json()
        assert incident["escalations"] == escalated
        assert server.terminate() == 0, server.output()

    audited = audit_verify(tmp_path / "onduty.db")
    assert audited.returncode == 0, audited.stdout + audited.stderr


@pytest.mark.usefixtures("leftover_actions")
def test_an_action_in_doubt_with_a_check_is_reconciled_as_succeeded(tmp_path: Path) -> None:
    config = write_config(tmp_path, check=True)
    command_id, began = kill_while_the_action_runs(tmp_path, config)

    with Server(tmp_path / "onduty.db", config=config) as server, server.client() as client:
        wait_for("ActionSucceeded", lambda: events(client, "ActionSucceeded", command_id))
        time.sleep(max(0.0, began + SLEEP + 2 - time.monotonic()))

        assert len(runs(tmp_path)) == 1, runs(tmp_path)
        assert len(events(client, "ActionStarted", command_id)) == 1
        assert not events(client, "ActionOutcomeUnknown")
        assert not events(client, "Escalated")
        (incident,) = client.get("/api/v1/incidents").json()
        assert incident["status"] == "open" and incident["actions"] == ["process.restart web-1"]
        assert server.terminate() == 0, server.output()

    audited = audit_verify(tmp_path / "onduty.db")
    assert audited.returncode == 0, audited.stdout + audited.stderr
