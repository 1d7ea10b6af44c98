"""`onduty policy check` and `onduty policy test`: exit codes, messages, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from onduty.cli.policy import policy_app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policy"
CONFIG = EXAMPLES / "onduty.yaml"


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(policy_app, list(args), env={"COLUMNS": "240"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def with_guardrails(tmp_path: Path, *guardrails: dict[str, Any]) -> Path:
    document = yaml.safe_load(CONFIG.read_text())
    document["policy"]["guardrails"] = list(guardrails)
    path = tmp_path / "onduty.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_check_clean_exits_0() -> None:
    result = invoke("check", str(CONFIG), "--now", "2026-06-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert "clean" in result.stdout
    assert "17 guardrails, no problems" in result.stdout


def test_check_with_warnings_only_exits_0(tmp_path: Path) -> None:
    path = with_guardrails(
        tmp_path, {"name": "ghost", "when": 'service.name == "nonexistent"', "effect": "deny"}
    )
    result = invoke("check", str(path))
    assert result.exit_code == 0, result.output
    assert "rule ghost: false in every representative context" in result.stdout
    assert "(position 17)" in result.stdout
    assert "0 errors, 1 warning" in result.stdout


def test_check_with_errors_exits_2_and_points_at_the_position(tmp_path: Path) -> None:
    path = with_guardrails(
        tmp_path,
        {"name": "typo", "when": 'servce.tier == "critical"', "effect": "deny"},
        {"name": "types", "when": "service.tier > 3", "effect": "deny"},
    )
    result = invoke("check", str(path))
    assert result.exit_code == 2, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("error") and "rule typo: unknown variable 'servce'" in line
               and line.endswith("(position 1)") for line in lines), lines  # fmt: skip
    assert any("rule types: `service.tier > 3` compares service.tier (a string) with an int "
               "(position 14)" in line for line in lines), lines  # fmt: skip
    assert "| service.tier > 3" in result.stdout
    assert "|              ^" in result.stdout
    assert "2 errors, 0 warnings" in result.stdout


def test_check_reports_a_condition_load_config_refuses_with_its_position(tmp_path: Path) -> None:
    path = with_guardrails(
        tmp_path,
        {"name": "broken", "when": "service.tier ==", "effect": "deny"},
        {"name": "ghost", "when": 'action.name == "x.y"', "effect": "deny"},
    )
    result = invoke("check", str(path))
    assert result.exit_code == 2, result.output
    assert "rule broken: not a valid CEL expression: Syntax error" in result.stdout
    assert "(position 16)" in result.stdout
    assert "rule ghost: false in every representative context" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the file"),
        ("services: [\n", "not valid YAML"),
        ("services:\n  - name: a\n    tier: platinum\n", "services[0].tier"),
    ],
)
def test_check_a_file_that_cannot_be_used_exits_2(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "onduty.yaml"
    if content is not None:
        path.write_text(content)
    result = invoke("check", str(path))
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize("now", ["yesterday", "2026-01-05T09:00:00"])
def test_check_a_bad_now_exits_2(now: str) -> None:
    result = invoke("check", str(CONFIG), "--now", now)
    assert result.exit_code == 2
    assert "--now" in result.stderr


def test_test_all_pass_exits_0() -> None:
    result = invoke("test", str(CONFIG), "--cases", str(EXAMPLES / "cases"))
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.stdout
    assert " passed, 0 failed" in result.stdout
    assert "PASS" in result.stdout and "→ deny (restart-budget: 3 process.restart" in result.stdout


def test_test_a_failing_case_exits_1(tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "wrong.yaml").write_text(
        "- name: a restart in a freeze is wrongly expected to pass\n"
        "  given: {service: payments, target: payments-1, action: process.restart,\n"
        "          now: '2026-01-09T17:00:00Z'}\n"
        "  expect: {verdict: allow}\n"
    )
    result = invoke("test", str(CONFIG), "--cases", str(cases))
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.stdout
    assert "expected allow, got deny" in result.stdout
    assert "· weekend-freeze (deny): weekend-freeze: changes are frozen" in result.stdout
    assert "0 passed, 1 failed" in result.stdout


def test_test_bad_cases_exit_2(tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "bad.yaml").write_text("- name: x\n  given: {service: nope, target: a, action: b}\n")
    result = invoke("test", str(CONFIG), "--cases", str(cases))
    assert result.exit_code == 2
    assert "bad.yaml: case 'x' (#1): expect: required field is missing" in result.stderr


def test_test_a_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "onduty.yaml"
    path.write_text("policy: {guardrails: [{name: x, when: 'a ==', effect: deny}]}\n")
    result = invoke("test", str(path), "--cases", str(EXAMPLES / "cases"))
    assert result.exit_code == 2
    assert "policy.guardrails[0].when" in result.stderr


def test_test_needs_cases() -> None:
    result = invoke("test", str(CONFIG))
    assert result.exit_code == 2


# ---------------------------------------------------------------------------- a real process


def policy_command(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m onduty policy ...` as a real process."""
    command = [sys.executable, "-m", "onduty", "policy", *args]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "240"},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_policy_check_exit_codes_in_a_real_process(tmp_path: Path) -> None:
    assert policy_command("check", str(CONFIG), "--now", "2026-06-01T00:00:00Z").returncode == 0
    bad = with_guardrails(tmp_path, {"name": "b", "when": "service.tier ==", "effect": "deny"})
    result = policy_command("check", str(bad))
    assert result.returncode == 2
    assert "rule b: not a valid CEL expression" in result.stdout
    assert policy_command("check", str(tmp_path / "missing.yaml")).returncode == 2


def test_policy_test_exit_codes_in_a_real_process(tmp_path: Path) -> None:
    assert policy_command("test", str(CONFIG), "--cases", str(EXAMPLES / "cases")).returncode == 0
    (tmp_path / "c.yaml").write_text(
        "- name: wrong\n"
        "  given: {service: payments, target: payments-9, action: process.restart}\n"
        "  expect: {verdict: allow}\n"
    )
    assert policy_command("test", str(CONFIG), "--cases", str(tmp_path)).returncode == 1
    (tmp_path / "c.yaml").write_text("not: a list\n")
    assert policy_command("test", str(CONFIG), "--cases", str(tmp_path)).returncode == 2
