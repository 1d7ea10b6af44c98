"""Table tests: the example's cases pass, a wrong case fails clearly, bad case files are named
by file, case and field, and the facts are the ones the manager would gather."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from onduty.config import Autonomy
from onduty.configfile import load_config
from onduty.events import Tick
from onduty.govern import Facts
from onduty.policytest import (
    DEFAULT_NOW,
    Case,
    CaseError,
    build_facts,
    load_cases,
    parse_cases,
    run_cases,
)
from tests.core.helpers import T0, Driver
from tests.core.helpers import config as core_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policy"
CONFIG = load_config(EXAMPLES / "onduty.yaml")


def write(folder: Path, cases: Any, name: str = "cases.yaml") -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(cases if isinstance(cases, str) else yaml.safe_dump(cases))
    return folder


def case(**given: Any) -> dict[str, Any]:
    expect = given.pop("expect", {"verdict": "allow"})
    base = {"service": "payments", "target": "payments-1", "action": "process.restart"}
    return {"name": given.pop("name", "a case"), "given": base | given, "expect": expect}


def test_every_example_case_passes() -> None:
    cases = load_cases(EXAMPLES / "cases")
    files = {Path(c.file).stem for c in cases}
    assert {"rate", "concurrent", "blast", "outage", "freeze", "conditions"} <= files
    results = run_cases(CONFIG, cases)
    assert [(r.file, r.name, r.failures) for r in results if not r.passed] == []
    assert len(results) == len(cases) >= 60


def test_a_wrong_case_fails_with_a_clear_message(tmp_path: Path) -> None:
    history = [{"action": "process.restart", "target": "payments-1", "ago": "10m"}] * 3
    wrong = case(
        name="the fourth restart is wrongly expected to pass",
        history=history,
        expect={"verdict": "allow", "rules": ["one-at-a-time"], "reason_contains": "fine"},
    )
    (result,) = run_cases(CONFIG, load_cases(write(tmp_path / "c", [wrong])))
    assert not result.passed
    assert result.verdict == "deny"
    assert result.failures == (
        "expected allow, got deny",
        "expected rule 'one-at-a-time' to have an opinion; those that did: autonomy, "
        "restart-budget",
        "expected the reason to contain 'fine'; it is 'restart-budget: 3 process.restart on "
        "payments-1 in the last hour, limit 3'",
    )


@pytest.mark.parametrize(
    ("cases", "message"),
    [
        ({"name": "x"}, "expected a list of cases"),
        (["just a string"], "case #1: expected a mapping with name, given and expect"),
        ([case(servce="payments")], "case 'a case' (#1): given.servce: unknown field"),
        (
            [case(history=[{"action": "process.restart", "target": "payments-1", "ago": "soon"}])],
            "case 'a case' (#1): given.history[0].ago: expected a duration such as 30s",
        ),
        ([case(expect={"verdict": "maybe"})], "case 'a case' (#1): expect.verdict: Input should"),
        ([case(now="2026-01-05T09:00:00")], "case 'a case' (#1): given.now: Input should have"),
        ([{"name": "n", "given": {"service": "payments"}}], "given.target: required field"),
        ([case(), case()], "case 'a case' (#2): name: the name is already used by case #1"),
        ([case(service="web")], "case 'a case' (#1): given.service: unknown service 'web'"),
        ([case(target="payments-1", unhealthy=["search-1"])], "given.unhealthy[0]: 'search-1'"),
        ([case(in_flight=["nowhere-1"])], "given.in_flight[0]: 'nowhere-1' is neither"),
        ([case(runbook="nope")], "given.runbook: unknown runbook 'nope'"),
        (
            [case(runbook="rollback-bad-deploy")],
            "given.action: runbook 'rollback-bad-deploy' does not take the action",
        ),
        ([case(action="process.kill")], "given.action: no runbook takes the action"),
        ([case(alerting={"services": 9})], "given.alerting.services: 9 is more than the 4"),
        (
            [case(expect={"verdict": "deny", "rules": ["restart-budgit"]})],
            "expect.rules[0]: no rule named 'restart-budgit'",
        ),
    ],
)
def test_a_bad_case_file_names_the_file_the_case_and_the_field(
    tmp_path: Path, cases: Any, message: str
) -> None:
    folder = write(tmp_path / "c", cases)
    with pytest.raises(CaseError) as caught:
        run_cases(CONFIG, load_cases(folder))
    problems = caught.value.problems
    assert any(message in p for p in problems), problems
    assert all(p.startswith(str(folder / "cases.yaml")) for p in problems), problems


def test_yaml_errors_and_missing_files_are_case_errors(tmp_path: Path) -> None:
    folder = write(tmp_path / "c", "- name: [unclosed\n")
    with pytest.raises(CaseError, match=r"cases.yaml: line \d+, column \d+: not valid YAML"):
        load_cases(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaseError, match=r"no \*\.yaml case files"):
        load_cases(tmp_path / "empty")
    with pytest.raises(CaseError, match="not a directory"):
        load_cases(tmp_path / "missing")


def test_the_runbook_follows_the_labels() -> None:
    given = {"service": "payments", "target": "payments-1", "action": "process.restart"}
    crashed = Case.model_validate({"name": "c", "given": given, "expect": {"verdict": "allow"}})
    assert build_facts(CONFIG, crashed).proposal.runbook == "restart-crashed-instance"
    assert build_facts(CONFIG, crashed).firing_by_instance == {
        "payments-1": frozenset({"InstanceDown"})
    }
    assert build_facts(CONFIG, crashed).now == DEFAULT_NOW
    leaking = Case.model_validate(
        {
            "name": "l",
            "given": given | {"labels": {"alertname": "HighMemoryUsage"}},
            "expect": {"verdict": "allow"},
        }
    )
    assert build_facts(CONFIG, leaking).proposal.runbook == "restart-leaking-instance"


def test_parse_cases_accepts_yaml_anchors() -> None:
    text = """
    - name: first
      given: &base {service: payments, target: payments-1, action: process.restart}
      expect: {verdict: allow}
    - name: second
      given: {<<: *base, target: payments-2}
      expect: {verdict: allow}
    """
    cases = parse_cases(yaml.safe_load(text), "inline.yaml")
    assert [c.case.given.target for c in cases] == ["payments-1", "payments-2"]


def test_the_facts_are_those_the_manager_gathers() -> None:
    seen: list[Facts] = []

    def keep(facts: Facts) -> None:
        # the manager lends its live history; keep it as it was at this verdict
        seen.append(dataclasses.replace(facts, history=tuple(facts.history)))

    guardrails = [
        {"name": "critical", "when": 'service.tier == "critical"', "effect": "require_approval"},
        {"name": "capacity", "blast": {"max": 2}},
    ]
    cfg = core_config(policy={"guardrails": guardrails})
    driver = Driver(cfg)
    driver.manager.actions.verdicts.on_facts.append(keep)
    driver.signal("web-2", alertname="HighLatency")
    driver.signal("web-1")
    driver.feed(Tick(timer_id="wake"), after=0)
    manager = next(f for f in seen if f.proposal.target == "web-1")
    table = build_facts(
        cfg,
        Case.model_validate(
            {
                "name": "same",
                "given": {
                    "service": "web",
                    "target": "web-1",
                    "action": "process.restart",
                    "unhealthy": [{"instance": "web-2", "alert": "HighLatency"}],
                    "now": T0.isoformat(),
                },
                "expect": {"verdict": "allow"},
            }
        ),
    )
    for name in (
        "now",
        "incident_service",
        "target_service",
        "target_known",
        "autonomy",
        "approved_by",
        "history",
        "in_flight_by_service",
        "service_size",
        "service_instances",
        "in_flight_targets",
        "firing_by_instance",
        "alerting_services",
        "total_services",
        "alerting_instances",
        "total_instances",
    ):
        assert getattr(table, name) == getattr(manager, name), name
    for name in ("runbook", "step", "action", "target", "params"):
        assert getattr(table.proposal, name) == getattr(manager.proposal, name), name
    assert table.autonomy is Autonomy.ACT
    ours, theirs = table.variables.variables, manager.variables.variables
    for variables in (ours, theirs):
        variables["incident"].pop("id")
        variables["signal"].pop("source")
    # counts depend on the whole state (open incidents): same keys, not the same numbers
    assert ours.pop("counts").keys() == theirs.pop("counts").keys()
    assert ours == theirs
