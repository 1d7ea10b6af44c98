"""The story of the demo's incidents, told from its log and the simulation's truth: the
decisions with their reasons, the actions and their outcomes, approvals and recovery, in the
order they happened, in the model and in both renderings."""

from __future__ import annotations

from pathlib import Path

import pytest

from onduty.report import incident_timelines, run_report
from onduty.report import markdown as md
from onduty.report.html import render
from onduty.report.timeline import IncidentTimeline
from tests.report.conftest import DemoRun


def _approved(timelines: list[IncidentTimeline]) -> IncidentTimeline:
    """The incident whose restart waited for two people's approval."""
    return next(t for t in timelines if t.approvals and any(a.started_at for a in t.actions))


def test_an_approved_action_is_told_in_order_with_its_reasons(demo: DemoRun) -> None:
    timelines = incident_timelines(
        demo.events, demo.result.world.faults, actions=demo.result.world.actions
    )
    assert len(timelines) == demo.result.scorecard.incidents
    incident = _approved(timelines)
    kinds = [line.event_type or line.kind for line in incident.lines]
    order = [
        "fault",
        "IncidentOpened",
        "ActionProposed",
        "PolicyEvaluated",
        "ApprovalRequested",
        "ApprovalGranted",
        "ActionStarted",
        "ActionSucceeded",
        "recovery",
        "VerificationPassed",
        "IncidentResolved",
    ]
    places = [kinds.index(kind) for kind in order]
    assert places == sorted(places), kinds

    verdicts = [(d.verdict, d.reason) for d in incident.decisions]
    assert verdicts[0][0] == "require_approval" and "approve" in verdicts[0][1]
    assert verdicts[-1][0] == "allow" and "approved by" in verdicts[-1][1]
    assert [a.who for a in incident.approvals] == ["alice", "bob"]
    (action,) = incident.actions
    assert (action.outcome, action.verified) == ("succeeded", True)
    assert action.judged == "right"
    (fault,) = incident.faults
    assert fault.cause and fault.right_fix == f"{action.action} {action.target}"
    assert incident.outcome == "auto-remediated"
    assert incident.recovered_at is not None and incident.resolved_at is not None
    assert incident.opened_at < incident.recovered_at <= incident.resolved_at


def test_a_denied_action_is_escalated_with_the_rule_that_denied_it(demo: DemoRun) -> None:
    timelines = incident_timelines(demo.events)
    denied = [t for t in timelines if any(d.verdict == "deny" for d in t.decisions)]
    rules = {rule for t in denied for d in t.decisions for rule, effect, _ in d.rules
             if effect == "deny"}  # fmt: skip
    assert rules >= {"search-capacity", "outage-brake", "release-freeze"}
    for incident in denied:
        assert incident.escalated and incident.outcome == "escalated"
        assert not any(action.started_at for action in incident.actions)
        denial = next(d for d in incident.decisions if d.verdict == "deny")
        assert denial.reason in incident.escalations[0][1]


def test_both_renderings_tell_the_story_in_the_same_order(demo: DemoRun) -> None:
    report = run_report(demo.result)
    incident = _approved(report.incidents)
    action = incident.actions[0]
    told = [
        incident.faults[0].cause,
        incident.decisions[0].reason,
        "alice",
        "bob",
        f"Started {action.action} on {action.target}",
        "Action succeeded",
        "Recovered",
        "Verified",
        incident.resolution,
    ]
    for text in (md.render(report), render(report)):
        section = text[text.index(incident.incident_id, text.index("Timeline")) :]
        timeline = section[section.index("Timeline") :]
        places = [timeline.index(piece) for piece in told]
        assert places == sorted(places)
    assert report.passed is True
    assert {row["id"] for row in report.faults} == {f.id for f in demo.result.world.faults}


def test_a_monte_carlo_result_is_drawn_per_metric_and_mode(demo: DemoRun) -> None:
    lab = {
        "runs": 4,
        "metrics": {
            "mttr_p90": {"policy": [60.0, 90.0, 120.0, None], "baseline": [300, 400, 500, 600]},
            "wrong_actions": {"policy": [0, 1, 0, 0], "baseline": [0, 0, 0, 0]},
        },
    }
    report = run_report(None, lab)
    assert report.lab is not None
    mttr = report.lab.distributions[0]
    assert [s.mode for s in mttr.summaries] == ["policy", "baseline"]
    assert mttr.of("policy").missing == 1  # type: ignore[union-attr]
    assert mttr.ratio == 90.0 / 450.0  # means, as the lab's table
    page = render(report)
    assert page.count("<svg") == 4 and "1m 30s" in page
    assert "| policy / baseline" not in md.render(report)
    assert "median" in md.render(report)


def test_a_run_that_kept_its_log_in_memory_is_reported_from_its_events(
    demo: DemoRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    told = run_report({"scenario": "demo", "store": "memory"}, None)
    assert told.incidents == [] and ("incidents", told.facts[-1][1]) == told.facts[-1]
    assert "kept its log in memory" in told.facts[-1][1]
    assert list(tmp_path.iterdir()) == []  # no store made by that name
    told = run_report({"scenario": "demo", "store": "memory"}, None, events=demo.events)
    assert len(told.incidents) == demo.result.scorecard.incidents
