"""Replay never asks a model: a log the advisor advised in replays exactly from its recorded
answers; a backtest judges those answers against the new policy's choices, and says which
consultations it would make that the log holds no answer to."""

from __future__ import annotations

from onduty.replay import replay
from tests.core.helpers import Driver, config
from tests.core.test_advisor_agent import (
    SERVICES,
    advisor_config,
    answer,
    consultations,
    unknown_alert,
)

ROLLBACK = {"action": "rollback-release", "target": "web", "rationale": "after the release"}


def test_a_log_the_advisor_advised_in_replays_from_its_recorded_answers() -> None:
    driver = Driver(advisor_config())
    (command,) = consultations(unknown_alert(driver))
    answer(driver, command, ROLLBACK)
    report = replay(driver.log)
    assert report.same, report.differences
    assert (report.advice_reused, report.advice_unanswered) == (1, [])


def test_a_backtest_judges_the_recorded_answer_against_the_new_choices() -> None:
    driver = Driver(advisor_config())
    (command,) = consultations(unknown_alert(driver))
    answer(driver, command, ROLLBACK)
    without_rollback = config(
        services=SERVICES,
        correlation={"group_by": ["instance", "alertname"]},
        policy={"guardrails": [], "approvals": {"timeout": "10m"}},
        advisor={"agent": "on"},
        runbooks=[
            {
                "name": "restart-crashed-instance",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
            }
        ],
    )
    report = replay(driver.log, config=without_rollback)
    (difference,) = [d for d in report.differences if d.input_type == "AdviceReceived"]
    assert difference.replayed == (
        "AdviceDiscarded 'rollback-release' is not one of the allowed choices "
        "(restart-crashed-instance)",
    )


def test_a_backtest_that_would_consult_says_the_log_holds_no_answer() -> None:
    driver = Driver(advisor_config(agent="off"))
    unknown_alert(driver)
    report = replay(driver.log, config=advisor_config())
    assert len(report.advice_unanswered) == 1
    assert any("AdviceRequested" in line for d in report.differences for line in d.replayed)
