"""The learning agent in the core, in virtual time: it learns from outcomes as they are recorded
which first step fixes which kind of incident, proposes through the arbiter, records its model
in every proposal's context, runs in shadow and as a canary, sets its model aside when the mix
of incidents drifts, and replays exactly."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from onduty.commands import StartAction
from onduty.events import (
    ActionSucceeded,
    Event,
    ModelActivated,
    SignalReceived,
    Tick,
)
from onduty.learn.model import train
from onduty.manager import Decision, Manager
from tests.core.helpers import Driver, assert_replays, config

SERVICES = [{"name": "api", "autonomy": "act", "instances": ["api-1", "api-2", "api-3"]}]
RUNBOOKS = [
    {
        "name": "restart-leaking-instance",
        "priority": 1,
        "when": 'signal.labels.alertname == "HighMemoryUsage"',
        "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
        "verify": {"signal_resolved_within": "4m"},
    },
    {
        "name": "rollback-leaking-release",
        "when": 'signal.labels.alertname == "HighMemoryUsage"',
        "do": [{"action": "deploy.rollback", "target": "{{ signal.labels.service }}"}],
        "verify": {"signal_resolved_within": "4m"},
    },
]
RIGHT_FIX = {False: "process.restart", True: "deploy.rollback"}
"""What really heals the incident: a plain leak is fixed by a restart, a leaking release only by
rolling it back."""


def learning_config(**learning: Any) -> Any:
    return config(
        services=SERVICES,
        runbooks=RUNBOOKS,
        correlation={"group_by": ["instance", "alertname"], "flap_threshold": 100},
        policy={"guardrails": []},
        learning={"agent": "on", **learning},
    )


def of(log: list[Event], kind: str) -> list[dict[str, Any]]:
    return [event.data for event in log if event.type == kind]


class Fleet:
    """Incidents of one alert with two causes, the core deciding, the world answering."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.count = 0

    def deploy(self) -> None:
        self.count += 1
        self.driver.feed(
            SignalReceived(
                source="cd",
                fingerprint=f"deploy:api:{self.count}",
                status="resolved",
                labels={"alertname": "DeploymentFinished", "service": "api", "version": "1.2.3"},
            )
        )

    def alert(self, instance: str, status: str = "firing", after: float = 0.0) -> Decision:
        labels = {"alertname": "HighMemoryUsage", "instance": instance, "service": "api"}
        return self.driver.feed(
            SignalReceived(
                source="prometheus",
                fingerprint=f"mem:{instance}",
                status=status,
                labels=labels,
            ),
            after=after,
        )

    def episode(self, instance: str, *, release: bool) -> str:
        """One incident: when `release`, a deploy came first and only a rollback heals; else a
        restart does. Returns the action onduty took first."""
        if release:
            self.deploy()
        decision = self.alert(instance, after=600)
        started = [c for c in decision.commands if isinstance(c, StartAction)]
        assert started, [event.type for event in decision.events]
        command = started[0]
        self.driver.start(command)
        self.driver.feed(ActionSucceeded(command_id=command.command_id), after=30)
        if command.action == RIGHT_FIX[release]:
            self.alert(instance, "resolved", after=60)
        else:
            self.driver.feed(Tick(), after=300)  # the verification window passes: not fixed
            self.alert(instance, "resolved", after=600)  # a person fixed it
        self.driver.feed(Tick(), after=3700)  # past the recurrence window: the fix held
        return command.action


def proposals(log: list[Event]) -> list[dict[str, Any]]:
    return of(log, "ActionProposed")


@pytest.mark.parametrize(("choose", "right_late"), [("ucb", 10), ("thompson", 9)])
def test_it_learns_that_a_leaking_release_needs_a_rollback_and_a_plain_leak_a_restart(
    choose: str, right_late: int
) -> None:
    driver = Driver(learning_config(choose=choose))
    fleet = Fleet(driver)
    taken = [
        (release, fleet.episode(f"api-{n % 3 + 1}", release=release))
        for n, release in enumerate([False, True] * 15)
    ]
    right = [action == RIGHT_FIX[release] for release, action in taken]
    assert sum(right[-10:]) >= right_late, taken  # thompson keeps exploring a little
    assert sum(right[:10]) < 10  # it had to learn: the prior knows nothing
    learned = [p for p in proposals(driver.log) if p["agent"] == "learner"]
    assert learned and all(p["model"] == "untrained" for p in learned)
    assert "verified" in learned[-1]["rationale"] and "estimate" in learned[-1]["rationale"]
    assert_replays(driver)


def test_the_runbook_it_outranks_is_recorded_as_not_chosen_with_why() -> None:
    driver = Driver(learning_config(choose="ucb"))
    fleet = Fleet(driver)
    for _ in range(4):
        fleet.episode("api-1", release=True)
    last_plan = [e for e in driver.log if e.type in ("ActionProposed", "ProposalRejected")][-2:]
    rejected, proposed = sorted(last_plan, key=lambda e: e.type != "ProposalRejected")
    assert proposed.data["agent"] == "learner" and proposed.data["action"] == "deploy.rollback"
    assert rejected.data["runbook"] == "restart-leaking-instance"
    assert rejected.data["reason"] == "the learner agent chose deploy.rollback on api first"


def test_a_fix_that_does_not_last_is_learned_as_a_failure() -> None:
    driver = Driver(learning_config(choose="ucb"))
    fleet = Fleet(driver)
    fleet.deploy()
    decision = fleet.alert("api-2", after=600)
    command = next(c for c in decision.commands if isinstance(c, StartAction))
    assert command.action == "process.restart"  # the runbook order breaks the prior's tie
    driver.start(command)
    driver.feed(ActionSucceeded(command_id=command.command_id), after=30)
    fleet.alert("api-2", "resolved", after=60)  # verified: the restart relieved it
    assert of(driver.log, "VerificationPassed")
    memory = driver.manager.state.learning
    assert memory is not None and memory.online == {}  # not learned until it has held
    fleet.alert("api-2", after=1500)  # the leak is back on the same instance
    assert list(memory.online.values()) == [[0, 1]]
    assert_replays(driver)


def test_shadow_mode_records_where_the_model_would_choose_otherwise_and_never_decides() -> None:
    driver = Driver(learning_config(agent="shadow", choose="ucb"))
    fleet = Fleet(driver)
    taken = [fleet.episode("api-1", release=True) for _ in range(5)]
    assert set(taken) == {"process.restart"}  # the runbook order decides
    assert all(p["agent"] == "runbook" for p in proposals(driver.log))
    diverged = of(driver.log, "ModelShadowDiverged")
    assert diverged and diverged[-1]["model_action"] == "deploy.rollback"
    assert diverged[-1]["enforced_action"] == "process.restart"
    assert diverged[-1]["mode"] == "shadow"
    assert_replays(driver)


def trained_on_plain_leaks() -> dict[str, Any]:
    """A model trained on a log of plain leaks only (no deploys): restarts fix them."""
    driver = Driver(learning_config(choose="ucb"))
    fleet = Fleet(driver)
    for n in range(12):
        fleet.episode(f"api-{n % 3 + 1}", release=False)
    return train(driver.log).body


def test_a_canary_model_ranks_only_where_its_selector_holds() -> None:
    body = trained_on_plain_leaks()
    driver = Driver(learning_config(choose="ucb"))
    driver.feed(
        ModelActivated(
            model_id=body["model_id"],
            model=body,
            role="canary",
            selector='signal.labels.instance == "api-1"',
        )
    )
    fleet = Fleet(driver)
    fleet.episode("api-1", release=False)
    fleet.episode("api-2", release=False)
    first, second = [p for p in proposals(driver.log)]
    assert first["agent"] == "learner" and first["model"] == body["model_id"]
    assert second["agent"] == "learner" and second["model"] == "untrained"
    assert of(driver.log, "ModelShadowDiverged") == [] or all(
        d["mode"] == "canary" for d in of(driver.log, "ModelShadowDiverged")
    )
    assert_replays(driver)


def test_when_the_mix_drifts_the_service_falls_back_to_the_runbook_order_saying_why() -> None:
    body = trained_on_plain_leaks()
    driver = Driver(learning_config(choose="ucb", online=False, drift={"window": 4}))
    driver.feed(ModelActivated(model_id=body["model_id"], model=body, source="model.json"))
    fleet = Fleet(driver)
    for n in range(3):
        fleet.episode(f"api-{n + 1}", release=False)  # the mix it was trained on: it fits
    assert of(driver.log, "ModelDriftDetected") == []
    for n in range(4):
        fleet.episode(f"api-{n % 3 + 1}", release=True)  # now every leak follows a deploy
    drifted = of(driver.log, "ModelDriftDetected")
    assert len(drifted) == 1, drifted  # recorded once
    assert drifted[0]["check"] == "features" and drifted[0]["service"] == "api"
    assert drifted[0]["value"] > drifted[0]["limit"] == 0.25
    assert "retrain" in drifted[0]["detail"]
    after = proposals(driver.log)[-1]
    assert after["agent"] == "runbook" and after["model"] == body["model_id"]
    assert "learning agent set aside for api" in after["rationale"]
    assert "drifted" in after["rationale"]
    # a new model is judged afresh: the learning agent proposes again
    driver.feed(ModelActivated(model_id="untrained", model={}, source="rollback"))
    fleet.episode("api-1", release=True)
    assert proposals(driver.log)[-1]["agent"] == "learner"
    assert_replays(driver)


def test_without_the_learning_section_decisions_and_state_are_as_before() -> None:
    driver = Driver(
        config(
            services=SERVICES,
            runbooks=RUNBOOKS,
            correlation={"group_by": ["instance", "alertname"], "flap_threshold": 100},
            policy={"guardrails": []},
        )
    )
    Fleet(driver).episode("api-1", release=True)
    assert all("model" not in p and p["agent"] == "runbook" for p in proposals(driver.log))
    assert driver.manager.state.learning is None
    assert "learning" not in driver.manager.state.to_snapshot()


def test_a_snapshot_taken_mid_learning_decides_as_the_run_did() -> None:
    driver = Driver(learning_config(choose="thompson"))
    fleet = Fleet(driver)
    for n, release in enumerate([True, False] * 5):
        fleet.episode(f"api-{n % 3 + 1}", release=release)
    restarted = copy.copy(driver)
    restarted.manager = Manager.from_snapshot(driver.manager.snapshot())
    restarted._ids = copy.copy(driver._ids)  # the same event ids: the same seeds
    runs = []
    for runner in (driver, restarted):
        runner.log = []
        runner_fleet = Fleet(runner)
        runner_fleet.count = fleet.count
        for n in range(6):
            runner_fleet.episode(f"api-{n % 3 + 1}", release=n % 2 == 0)
        runs.append([(e.id, e.type, e.data) for e in runner.log])
    assert runs[0] == runs[1]
    assert any(data.get("agent") == "learner" for _, _, data in runs[0])


def test_when_its_choices_verify_less_than_it_predicted_the_model_is_set_aside() -> None:
    body = trained_on_plain_leaks()
    driver = Driver(
        learning_config(choose="ucb", online=False, drift={"window": 50, "min_outcomes": 4})
    )
    driver.feed(ModelActivated(model_id=body["model_id"], model=body, source="model.json"))
    fleet = Fleet(driver)
    # the kind of incident it was trained on, but restarts no longer heal it
    for n in range(5):
        decision = fleet.alert(f"api-{n % 3 + 1}", after=4000)
        command = next(c for c in decision.commands if isinstance(c, StartAction))
        driver.start(command)
        driver.feed(ActionSucceeded(command_id=command.command_id), after=30)
        driver.feed(Tick(), after=300)  # not fixed: verification fails
        fleet.alert(f"api-{n % 3 + 1}", "resolved", after=600)
    drifted = of(driver.log, "ModelDriftDetected")
    assert [d["check"] for d in drifted] == ["verification"]
    assert "verified 0% of the last 4 times" in drifted[0]["detail"]
    last = proposals(driver.log)[-1]
    assert last["agent"] == "runbook" and "set aside" in last["rationale"]
    assert_replays(driver)
