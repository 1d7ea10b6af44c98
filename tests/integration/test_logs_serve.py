"""`onduty serve`'s log, end to end: an alert with hostile labels leads to an action that fails
(its program prints a secret and the hostile text), and to a page through a webhook that cannot
be reached (its URL and header hold secrets). Every line the server wrote is JSON; the lines
about the incident and its action carry their ids; no secret appears anywhere; the hostile text
appears only escaped."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests import run_cli
from tests.integration.server import Server, free_port

HOSTILE = "web-1\x1b[2J\x1b]0;owned\x07\u202eevil\n2026-01-05 INFO onduty: forged"
TOKEN = "logs-e2e-token-8d1c52"
"""The shell action's secret (it prints it)."""
HOOK_TOKEN = "logs-e2e-hook-3f9a77"
"""In the webhook's URL."""
HOOK_KEY = "logs-e2e-key-b02e41"
"""In the webhook's Authorization header."""
SECRETS = (TOKEN, HOOK_TOKEN, HOOK_KEY)

ACTION = """\
import os, sys
sys.stderr.write("cannot clean " + sys.argv[1] + " with " + os.environ["TOKEN"] + "\\n")
sys.exit(1)
"""


def config(directory: Path) -> Path:
    script = directory / "clean.py"
    script.write_text(ACTION)
    document: dict[str, Any] = {
        "services": [{"name": "web", "autonomy": "act", "instances": [HOSTILE]}],
        "correlation": {"group_by": ["service", "alertname"], "group_wait": "0s"},
        "runbooks": [
            {
                "name": "clean-up",
                "when": 'signal.labels.alertname == "DiskFull"',
                "do": [
                    {
                        "action": "disk.cleanup",
                        "target": "{{ signal.labels.instance }}",
                    }
                ],
            }
        ],
        "actuators": [
            {
                "kind": "shell",
                "action": "disk.cleanup",
                "argv": [sys.executable, str(script), "{{ target }}"],
                "allow": [sys.executable],
                "env": {"TOKEN": "${ENV:ONDUTY_LOGS_TOKEN}"},
                "timeout": "10s",
            }
        ],
        "channels": [
            {
                "kind": "webhook",
                "name": "on-call",
                "url": f"http://127.0.0.1:{free_port()}/hook?token=${{ENV:ONDUTY_LOGS_HOOK}}",
                "headers": {"Authorization": "Bearer ${ENV:ONDUTY_LOGS_KEY}"},
                "retries": 0,
                "timeout": "2s",
            }
        ],
        "escalation": {"default": [{"notify": ["on-call"], "wait": "5m"}]},
    }
    path = directory / "onduty.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_the_server_log_is_json_with_ids_and_without_secrets_or_raw_text(
    tmp_path: Path,
) -> None:
    env = {"ONDUTY_LOGS_TOKEN": TOKEN, "ONDUTY_LOGS_HOOK": HOOK_TOKEN, "ONDUTY_LOGS_KEY": HOOK_KEY}
    server = Server(tmp_path / "onduty.db", config=config(tmp_path), env=env)
    with server, server.client() as client:
        signal = {
            "source": "am\x1b[31m\u202e",
            "fingerprint": "disk-web-1",
            "status": "firing",
            "labels": {
                "alertname": "DiskFull",
                "service": "web",
                "instance": HOSTILE,
            },
            "annotations": {"summary": HOSTILE},
        }
        assert client.post("/api/v1/signals", json=signal).status_code == 202
        deadline = time.monotonic() + 30
        while True:
            kinds = [event["type"] for event in client.get("/api/v1/events").json()]
            if "ActionFailed" in kinds and "NotificationFailed" in kinds:
                break
            assert time.monotonic() < deadline, (kinds, server.output())
            time.sleep(0.1)
        events = client.get("/api/v1/events").json()
        assert server.terminate() == 0, server.output()
    output = server.output()

    lines = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    assert all({"timestamp", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's too

    (started,) = [e["data"] for e in events if e["type"] == "ActionStarted"]
    incident, command = started["incident_id"], started["command_id"]
    (action,) = [line for line in lines if line["message"].startswith("action disk.cleanup")]
    assert action["incident_id"] == incident and action["command_id"] == command
    assert action["outcome"] == "failed" and action["target"] == HOSTILE
    assert f"cannot clean {HOSTILE} with [redacted]" in action["message"]
    paged = [line for line in lines if "not delivered" in line["message"]]
    assert paged and all(line["incident_id"] == incident for line in paged)

    for secret in SECRETS:
        assert secret not in output, secret
    # the hostile text only escaped: no raw control, bidi or line-breaking character
    assert not [c for c in output if c in "\x1b\x07\r\u202e\u2028"]
    assert "web-1\\u001b[2J\\u001b]0;owned\\u0007\\u202eevil\\n2026-01-05" in output
    assert not [line for line in output.splitlines() if line.startswith("2026-01-05")]


def test_the_log_format_is_chosen_by_option_or_configuration(tmp_path: Path) -> None:
    refused = run_cli.onduty("serve", "--log-format", "xml", "--store", str(tmp_path / "x.db"))
    assert refused.returncode == 2 and "--log-format 'xml': use json or console" in refused.stderr

    configured = tmp_path / "onduty.yaml"
    configured.write_text("server: {log_format: console}\n")
    with Server(tmp_path / "console.db", config=configured) as server:
        assert server.terminate() == 0
    output = server.output()
    (ready,) = [line for line in output.splitlines() if " INFO onduty: ready: " in line]
    assert not ready.startswith("{")
    assert " INFO uvicorn.error: Application startup complete." in output

    with Server(tmp_path / "json.db", "--log-format", "json", config=configured) as server:
        assert server.terminate() == 0  # the option wins over the configuration
    assert all(json.loads(line) for line in server.output().splitlines())
