"""The Alertmanager silence actuator against a real Prometheus Alertmanager on loopback."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onduty.act.alertmanager import AlertmanagerSilenceActuator
from onduty.act.specs import AlertmanagerSilenceSpec, OutcomeUnknown
from tests.act.helpers import action, free_port, undo

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path("/usr/bin/prometheus-alertmanager")

CONFIG = """
route:
  receiver: nobody
receivers:
  - name: nobody
"""


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not BINARY.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_alertmanager.sh")], check=True)
    assert BINARY.exists(), "prometheus-alertmanager could not be installed"
    directory = tmp_path_factory.mktemp("alertmanager")
    (directory / "alertmanager.yml").write_text(CONFIG)
    port = free_port()
    with (directory / "alertmanager.log").open("wb") as log:
        process = subprocess.Popen(
            [
                str(BINARY),
                f"--config.file={directory / 'alertmanager.yml'}",
                f"--storage.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (directory / "alertmanager.log").read_text()
            assert time.monotonic() < deadline, "Alertmanager did not become ready"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def make(url: str, **fields: Any) -> AlertmanagerSilenceActuator:
    spec = AlertmanagerSilenceSpec.model_validate(
        {"kind": "alertmanager.silence", "url": url, **fields}
    )
    return AlertmanagerSilenceActuator(spec)


def silence(url: str, silence_id: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{url}/api/v2/silence/{silence_id}", timeout=5).json()
    return result


def test_create_check_and_expire_a_silence(alertmanager: str) -> None:
    actuator = make(alertmanager)
    assert actuator.idempotent and actuator.can_check
    assert actuator.check("cmd-silence-1") is None
    command = action(
        "web-1",
        {
            "matchers": ['alertname="InstanceDown"', 'instance="{{ target }}"', 'job=~"web|api"'],
            "duration": "30m",
            "comment": "restarting web-1",
        },
        name="alertmanager.silence",
        command_id="cmd-silence-1",
    )
    outcome = actuator.run(command)
    assert outcome.ok, outcome.error
    silence_id = outcome.output.split()[1]
    created = silence(alertmanager, silence_id)
    assert created["createdBy"] == "onduty"
    assert created["comment"] == "restarting web-1 (onduty_command_id=cmd-silence-1)"
    assert created["status"]["state"] == "active"
    assert sorted(
        (m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in created["matchers"]
    ) == [
        ("alertname", "InstanceDown", False, True),
        ("instance", "web-1", False, True),
        ("job", "web|api", True, True),
    ]
    found = actuator.check("cmd-silence-1")
    assert found is not None and found.ok
    assert found.output == f"silence {silence_id} (active)"

    again = actuator.run(command)  # a second run finds the first one's silence
    assert again.ok
    assert again.output == f"silence {silence_id} (already created by this command)"
    listed = httpx.get(f"{alertmanager}/api/v2/silences", timeout=5).json()
    assert sum("cmd-silence-1" in s["comment"] for s in listed) == 1

    for _ in range(2):  # expiring is idempotent
        expired = actuator.run(undo("cmd-silence-1", name="alertmanager.expire"))
        assert expired.ok, expired.error
    assert silence(alertmanager, silence_id)["status"]["state"] == "expired"
    found = actuator.check("cmd-silence-1")
    assert found is not None and found.output == f"silence {silence_id} (expired)"


def test_an_expire_action_takes_the_silence_id(alertmanager: str) -> None:
    actuator = make(alertmanager)
    outcome = actuator.run(
        action(
            "db-1", {"matchers": ['instance="db-1"']}, name="alertmanager.silence", command_id="c2"
        )
    )
    silence_id = outcome.output.split()[1]
    expired = actuator.run(action("db-1", {"expire": silence_id}, name="alertmanager.expire"))
    assert expired.ok, expired.error
    assert expired.output == f"silence {silence_id} expired"
    assert silence(alertmanager, silence_id)["status"]["state"] == "expired"
    missing = actuator.run(
        action(
            "db-1", {"expire": "00000000-0000-0000-0000-000000000000"}, name="alertmanager.expire"
        )
    )
    assert not missing.ok
    assert missing.error == "alertmanager: no silence 00000000-0000-0000-0000-000000000000"


def test_a_hostile_target_cannot_widen_the_silence(alertmanager: str) -> None:
    actuator = make(alertmanager)
    target = 'x", alertname=~".*'
    outcome = actuator.run(
        action(
            target,
            {"matchers": ['instance="{{ target }}"', 'host=~"{{ target }}.*"']},
            name="alertmanager.silence",
            command_id="c3",
        )
    )
    assert outcome.ok, outcome.error
    created = silence(alertmanager, outcome.output.split()[1])
    assert sorted((m["name"], m["value"]) for m in created["matchers"]) == [
        ("host", 'x", alertname=~"\\.\\*.*'),
        ("instance", target),
    ]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "refused: params.matchers: expected a list of matchers"),
        ({"matchers": ["not a matcher"]}, "refused: params.matchers[0]: 'not a matcher' is not"),
        ({"matchers": ['a="b"'], "duration": "3d"}, "refused: params.duration: 3d is not between"),
        ({"matchers": ['a="{{ params.nope }}"']}, "refused: params.matchers[0]"),
    ],
)
def test_bad_parameters_are_refused(alertmanager: str, params: dict[str, Any], reason: str) -> None:
    outcome = make(alertmanager).run(action(params=params, name="alertmanager.silence"))
    assert not outcome.ok
    assert outcome.error.startswith(reason), outcome.error


def test_alertmanager_refusing_a_silence_is_a_failure(alertmanager: str) -> None:
    outcome = make(alertmanager).run(
        action(params={"matchers": ['a=~".*"']}, name="alertmanager.silence", command_id="c4")
    )
    assert not outcome.ok
    assert outcome.error.startswith(f"POST {alertmanager}/api/v2/silences: unexpected status 400")


def test_an_unreachable_alertmanager_leaves_the_outcome_unknown() -> None:
    actuator = make(f"http://127.0.0.1:{free_port()}", timeout="2s")
    with pytest.raises(OutcomeUnknown, match="connection refused"):
        actuator.check("cmd-1")
    outcome = actuator.run(action(params={"matchers": ['a="b"']}, name="alertmanager.silence"))
    assert not outcome.ok and outcome.error.endswith("connection refused")
