"""The demo's story, end to end with the real runtime, core and log: what is fixed, what is
refused by which guardrail, what needs two people, and what humans are handed."""

from __future__ import annotations

from pathlib import Path

import pytest

from onduty.log import open_log
from onduty.replay import replay
from onduty.sim import load_builtin_config, load_scenario
from onduty.sim.driver import RunResult, run_scenario


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Path]:
    store = tmp_path_factory.mktemp("demo") / "demo.db"
    result = run_scenario(load_scenario("demo"), load_builtin_config("demo"), str(store))
    return result, store


def test_every_expectation_of_the_scenario_holds(demo: tuple[RunResult, Path]) -> None:
    result, _ = demo
    failed = [e for e in result.scorecard.expectations if not e.ok]
    assert failed == []


def test_each_fault_ends_the_way_the_story_says(demo: tuple[RunResult, Path]) -> None:
    card = demo[0].scorecard
    outcome = {
        (f.record.kind, f.record.target): (f.remediated, f.escalated, f.fixed_by_human)
        for f in card.faults
    }
    assert outcome[("instance_crash", "search-2")] == (True, False, False)
    assert outcome[("bad_deploy", "payments")] == (True, False, False)
    assert outcome[("instance_crash", "checkout-2")] == (True, False, False)  # two approvers
    assert outcome[("memory_leak", "search-3")] == (False, True, True)  # blast radius
    assert outcome[("instance_crash", "search-4")] == (False, True, True)  # outage brake
    assert outcome[("instance_crash", "payments-3")] == (False, True, True)  # freeze
    assert outcome[("dependency_latency", "payments")] == (False, True, False)  # no runbook
    assert outcome[("flapping", "search-2")] == (False, True, False)  # budget, then flapping
    assert card.harmful_actions == 0 and card.false_actions == 0 and card.control_incidents == 0
    # the restarts of the flapping instance fix nothing (it comes back by itself): wrong
    wrong = [(a.action, a.target, a.fault_kind) for a in card.actions if a.verdict == "wrong"]
    assert wrong == [("process.restart", "search-2", "flapping")] * 3


def test_each_guardrail_refused_for_the_reason_it_states(demo: tuple[RunResult, Path]) -> None:
    _, store = demo
    log = open_log(str(store))
    try:
        events = list(log.read())
        assert log.verify() is None
    finally:
        log.close()
    reasons = [
        rule["reason"]
        for e in events
        if e.type == "PolicyEvaluated" and e.data["verdict"] == "deny"
        for rule in e.data["rules"]
        if rule["effect"] == "deny"
    ]
    assert any(r.startswith("restart-budget: 3 process.restart on search-2") for r in reasons)
    assert any(r.startswith("search-capacity: process.restart on search-3") for r in reasons)
    assert any(r.startswith("outage-brake: 3 of 3 services are alerting") for r in reasons)
    assert any(r.startswith("release-freeze: changes are frozen") for r in reasons)
    approvals = [e for e in events if e.type == "ApprovalGranted"]
    assert sorted(e.actor for e in approvals) == ["alice", "bob"]
    allowed = [
        e.data["reason"]
        for e in events
        if e.type == "PolicyEvaluated" and "approved by" in e.data["reason"]
    ]
    assert allowed == ["autonomy: approved by alice and bob"]
    assert replay(events).differences == []
