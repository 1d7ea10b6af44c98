"""The supervisor example, end to end: a real supervisord runs the example app, `onduty serve`
probes it, and when the app is wedged onduty restarts it through supervisord's XML-RPC
interface, verifies that the probe passes again and resolves the incident."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from onduty.config import parse_duration
from tests.integration.server import Server
from tests.integration.supervisor import EXAMPLE, Supervised, example_supervisord

HEALED = ["ActionStarted", "ActionSucceeded", "VerificationPassed", "IncidentResolved"]


def example_config(directory: Path, supervised: Supervised) -> tuple[Path, float]:
    """The example's onduty.yaml pointed at this supervisord and app, probing every 300ms.
    Returns the file and the runbook's verification window in seconds."""
    document: dict[str, Any] = yaml.safe_load((EXAMPLE / "onduty.yaml").read_text())
    (probe,) = document["sources"]
    probe.update(url=f"{supervised.app_url}/health", interval="300ms", timeout="250ms")
    (actuator,) = document["actuators"]
    assert actuator["kind"] == "supervisor"
    assert actuator["password"] == "${ENV:SUPERVISOR_PASSWORD}"
    actuator["url"] = supervised.rpc_url
    (runbook,) = document["runbooks"]
    window = parse_duration(runbook["verify"]["signal_resolved_within"]).total_seconds()
    path = directory / "onduty.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path, window


def web_incident(client: httpx.Client) -> dict[str, Any] | None:
    incidents = [i for i in client.get("/api/v1/incidents").json() if i["service"] == "web"]
    assert len(incidents) <= 1, incidents
    if not incidents:
        return None
    found: dict[str, Any] = client.get(f"/api/v1/incidents/{incidents[0]['id']}").json()
    return found


def first_positions(timeline: list[dict[str, Any]], types: list[str]) -> list[int]:
    kinds = [event["type"] for event in timeline]
    return [kinds.index(kind) if kind in kinds else -1 for kind in types]


def test_a_wedged_app_is_restarted_through_supervisord_and_the_incident_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = secrets.token_hex(16)
    monkeypatch.setenv("SUPERVISOR_PASSWORD", password)  # onduty serve inherits it
    with example_supervisord(tmp_path, password) as supervised:
        config, window = example_config(tmp_path, supervised)
        before = supervised.info()
        with (
            Server(tmp_path / "onduty.db", config=config) as server,
            server.client() as client,
        ):
            assert httpx.post(f"{supervised.app_url}/break", timeout=2).status_code == 200
            assert supervised.health() == 500
            broken_at = time.monotonic()

            # The probe fires after two failures; from the action's success the runbook's
            # verification window bounds how long the healing may take.
            incident = None
            deadline = broken_at + 15 + window
            while time.monotonic() < deadline:
                incident = web_incident(client)
                if incident is not None and incident["status"] == "resolved":
                    break
                time.sleep(0.1)
            assert incident is not None, f"no incident was opened:\n{server.output()}"
            timeline = incident["timeline"]
            kinds = [event["type"] for event in timeline]
            assert incident["status"] == "resolved", (kinds, server.output())
            healed_in = time.monotonic() - broken_at

            positions = first_positions(timeline, HEALED)
            assert -1 not in positions and positions == sorted(positions), kinds
            assert kinds.count("ActionStarted") == 1
            assert "ActionFailed" not in kinds and "Escalated" not in kinds
            started = timeline[positions[0]]["data"]
            assert (started["action"], started["target"]) == ("process.restart", "web")
            assert "verified" in incident["resolution"]
            assert incident["actions"] == ["process.restart web"]

            after = supervised.info()
            assert after["statename"] == "RUNNING"
            assert after["pid"] != before["pid"], "the app was not restarted"
            assert supervised.health() == 200
            assert healed_in < window
            assert server.terminate() == 0, server.output()
