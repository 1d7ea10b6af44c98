"""`onduty config check` as a user meets it: a configuration that loads but would not do what it
seems to is warned about (exit 0), and a misspelt field is named with its line and the field
probably meant (exit 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

RUNBOOK = """
services:
  - {name: web, autonomy: act, instances: [web-1]}
runbooks:
  - name: restart
    when: signal.labels.alertname == "InstanceDown"
    do: [{action: process.restart, target: "{{ signal.labels.instance }}"}]
"""
CHANNEL = """
channels:
  - {kind: webhook, name: on-call, url: "http://127.0.0.1:9/hook"}
"""
ACTUATOR = """
actuators:
  - {kind: shell, action: process.*, argv: [/bin/true, "{{ target }}"], allow: [/bin/true]}
"""


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "onduty.yaml"
    path.write_text(text)
    return run_cli.onduty("config", "check", str(path), columns=400, timeout=60)


def warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def test_a_clean_configuration_has_no_warnings(tmp_path: Path) -> None:
    result = check(tmp_path, RUNBOOK + CHANNEL + ACTUATOR)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "valid" in result.stdout


def test_an_action_no_actuator_provides_is_a_warning(tmp_path: Path) -> None:
    result = check(tmp_path, RUNBOOK + CHANNEL)
    assert result.returncode == 0
    assert warnings(result) == [
        "warning: runbooks[0].do[0].action: no actuator provides 'process.restart' (only the "
        "simulated fleet of `onduty demo`, `onduty sim` and `serve --sim` carries it out): "
        "`onduty serve` would record every process.restart as failed; add an `actuators:` "
        "entry for it"
    ]


def test_an_escalation_that_reaches_no_channel_is_a_warning(tmp_path: Path) -> None:
    result = check(tmp_path, RUNBOOK + ACTUATOR)
    assert result.returncode == 0
    found = warnings(result)
    assert (
        "warning: escalation.default[0].notify: 'on-call' is not a configured channel (none is "
        "configured under `channels:`): nobody would be paged"
    ) in found
    misspelt = check(
        tmp_path,
        RUNBOOK + ACTUATOR + CHANNEL + "escalation:\n  default: [{notify: [on-cal]}]\n",
    )
    assert (
        "warning: escalation.default[0].notify: 'on-cal' is not a configured channel (the "
        "channels are on-call configured under `channels:`) (on-cal: did you mean on-call?): "
        "nobody would be paged"
    ) in warnings(misspelt)


def test_a_template_naming_a_label_that_does_not_exist_is_a_warning(tmp_path: Path) -> None:
    text = (RUNBOOK + CHANNEL + ACTUATOR).replace(
        "signal.labels.instance", "signal.labels.instanse"
    )
    found = warnings(check(tmp_path, text))
    assert found == [
        "warning: runbooks[0].do[0].target: label 'instanse' is not one this configuration uses "
        "(did you mean instance?); a signal without it fails to render"
    ]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            "{{ signl.labels.instance }}",
            "unknown variable 'signl' (did you mean signal?); a step's target may use signal, "
            "incident, service, now: rendering it would fail",
        ),
        (
            "{{ signal.lables.instance }}",
            "signal has no field 'lables' (did you mean labels?); the fields of signal are "
            "labels, annotations, status, source, fingerprint: rendering it would fail",
        ),
    ],
)
def test_a_template_naming_an_unknown_variable_is_a_warning(
    tmp_path: Path, target: str, expected: str
) -> None:
    text = (RUNBOOK + CHANNEL + ACTUATOR).replace("{{ signal.labels.instance }}", target)
    assert warnings(check(tmp_path, text)) == [f"warning: runbooks[0].do[0].target: {expected}"]


@pytest.mark.parametrize("text", ["", "# nothing yet\n"])
def test_an_empty_file_is_a_warning(tmp_path: Path, text: str) -> None:
    result = check(tmp_path, text)
    assert result.returncode == 0
    assert warnings(result)[0].endswith(
        "is empty: onduty would run on the built-in defaults alone (no services, no runbooks: "
        "it records and pages, and never acts)"
    )


def test_an_unknown_field_gets_its_line_and_the_field_meant(tmp_path: Path) -> None:
    text = RUNBOOK.replace("instances: [web-1]}", "instances: [web-1], autonomi: act}")
    text += CHANNEL.replace("url:", "urll:") + ACTUATOR.replace("allow:", "alow:")
    result = check(tmp_path, text + "runbook: []\n")
    assert result.returncode == 2
    problems = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert "- services[0].autonomi: unknown field (line 3; did you mean 'autonomy'?)" in problems
    assert "- channels[0].urll: unknown field (line 10; did you mean 'url'?)" in problems
    assert "- actuators[0].alow: unknown field (line 13; did you mean 'allow'?)" in problems
    assert "- runbook: unknown field (line 14; did you mean 'runbooks'?)" in problems
    assert "- channels[0].url: required field is missing (line 10)" in problems


def test_the_examples_say_what_serve_would_not_do(tmp_path: Path) -> None:
    """The demo's configuration is for the simulated fleet: checked, it says so."""
    text = (EXAMPLES / "demo" / "onduty.yaml").read_text()
    found = warnings(check(tmp_path, text))
    assert any("no actuator provides 'deploy.rollback'" in line for line in found)
    assert any("nobody would be paged" in line for line in found)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "store: sqlite:///onduty.db\nbus: nats://127.0.0.1:4222\n",
            "bus: nats:// carries signals to managers on several nodes, but store "
            "'sqlite:///onduty.db' is a file only one process can write",
        ),
        ("bus: kafka://127.0.0.1:9092\n", "bus: 'kafka://127.0.0.1:9092' is not a bus"),
        ("fleet: {region: eu.west}\n", "fleet.region: 'eu.west' must be a plain name"),
        ("fleet: {subjects: 'a..b'}\n", "fleet.subjects"),
        ("fleet: {partitions: 0}\n", "fleet.partitions"),
    ],
)
def test_a_deployment_that_cannot_work_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    result = check(tmp_path, text)
    assert result.returncode == 2
    assert problem in result.stderr


def test_a_fleet_on_postgresql_and_nats_is_valid(tmp_path: Path) -> None:
    text = "store: postgresql://127.0.0.1/onduty\nbus: nats://127.0.0.1:4222\n"
    result = check(tmp_path, text + "fleet: {partitions: 32, region: eu-west}\n")
    assert result.returncode == 0, result.stderr


def test_what_a_fleet_store_does_not_do_is_a_warning(tmp_path: Path) -> None:
    text = "store: postgresql://127.0.0.1/onduty\nretention: {keep: 30d}\n"
    result = check(tmp_path, text)
    assert result.returncode == 0
    assert any("retention.keep: sealing old events" in line for line in warnings(result))


def test_counting_across_the_fleet_on_one_process_is_a_warning(tmp_path: Path) -> None:
    guardrail = "{name: r, rate: {max: 2, per: 1h, across: fleet}}"
    result = check(tmp_path, f"policy: {{guardrails: [{guardrail}]}}\n")
    assert result.returncode == 0
    assert any("one manager is the whole fleet" in line for line in warnings(result))


def test_a_central_schema_must_be_named(tmp_path: Path) -> None:
    result = check(tmp_path, 'fleet: {central: "postgresql://127.0.0.1/onduty"}\n')
    assert result.returncode == 2
    assert "fleet.central: must be postgresql://HOST/DB?schema=NAME" in result.stderr
