"""The supervisor example: its actuators validate and its app answers as documented."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from onduty.act.specs import SupervisorSpec, parse_actuators
from onduty.config import parse_config
from tests.act.helpers import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "supervisor"


def test_the_example_configuration_is_valid() -> None:
    document = yaml.safe_load((EXAMPLE / "onduty.yaml").read_text())
    (spec,) = parse_actuators(document.pop("actuators"), plugin_kinds=())
    assert isinstance(spec, SupervisorSpec)
    assert spec.password == "${ENV:SUPERVISOR_PASSWORD}"
    config = parse_config(document, "examples/supervisor/onduty.yaml")
    assert [r.do[0].action for r in config.runbooks] == ["process.restart"]


def test_the_example_app_breaks_until_restarted() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "app.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the example app did not start"
                time.sleep(0.05)
        assert health.status_code == 200
        assert httpx.post(f"{url}/break", timeout=1).status_code == 200
        assert httpx.get(f"{url}/health", timeout=1).status_code == 500
    finally:
        process.terminate()
        process.wait(5)
