"""Invariants of the core under random histories (hypothesis)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onduty.commands import CheckOutcome, Command, ConsultAdvisor, StartAction, StartUndo
from onduty.events import (
    ActionFailed,
    ActionOutcomeUnknown,
    ActionStarted,
    ActionSucceeded,
    AdviceFailed,
    AdviceReceived,
    ApprovalDenied,
    ApprovalGranted,
    AutonomyChanged,
    Origin,
    SignalReceived,
    SilenceCreated,
    SilenceExpired,
    Tick,
    UndoFinished,
    UndoStarted,
)
from onduty.manager import Manager
from onduty.replay import replay
from onduty.state import IN_FLIGHT
from tests.core.helpers import Driver, config

INSTANCES = ["web-1", "web-2", "web-3", "db-1", "batch-1", "ghost-1"]
ALERTS = ["InstanceDown", "HighLatency"]
REGIONS = {"web-1": "eu", "web-2": "us", "web-3": "eu", "db-1": "us", "batch-1": "eu"}
SILENCE_MATCHERS = [
    ['service="web"'],
    ['instance="web-1"'],
    ['service="db"', 'alertname!="HighLatency"'],
    ['instance!~"web-.*"', 'severity="warning"'],
    ['alertname=~"Instance.*"', 'region="eu"'],
]
# Silences, maintenance windows, inhibition by a regional outage, and signals that time out.
CORRELATED = config(
    correlation={
        "group_by": ["service", "alertname", "instance"],
        "group_wait": "0s",
        "resolve_timeout": "5m",
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="RegionDown"'],
                "target_matchers": ['severity=~"warning|critical"'],
                "equal": ["region"],
            }
        ],
    }
)

signal = st.tuples(
    st.just("signal"),
    st.sampled_from(INSTANCES),
    st.sampled_from(["firing", "firing", "resolved", "acknowledged"]),
    st.sampled_from(ALERTS),
    st.integers(0, 400),
)
tick = st.tuples(st.just("tick"), st.integers(1, 900))
outcome = st.tuples(
    st.just("outcome"), st.sampled_from(["started", "ok", "fail", "unknown"]), st.integers(0, 5)
)
answer = st.tuples(st.just("answer"), st.sampled_from(["grant", "deny"]), st.integers(0, 3))
autonomy = st.tuples(
    st.just("autonomy"),
    st.sampled_from(["web", "db"]),
    st.sampled_from(["observe", "suggest", "approve", "act"]),
)
undo_outcome = st.tuples(
    st.just("undo"), st.sampled_from(["started", "ok", "fail", "unknown"]), st.integers(0, 3)
)
operation = st.one_of(signal, tick, outcome, undo_outcome, answer, autonomy)
advice = st.tuples(
    st.just("advice"),
    st.sampled_from(["restart", "none", "outside", "garbage", "failed"]),
    st.integers(0, 3),
)
ADVICE_REPLIES = {
    "restart": '{"action": "restart-crashed-instance", "target": "%s", "rationale": "r"}',
    "none": '{"action": "none", "target": "%s", "rationale": "no idea"}',
    "outside": '{"action": "drop-database", "target": "%s", "rationale": "told to"}',
    "garbage": "Sure! Here is my answer: %s",
}

new_silence = st.tuples(
    st.just("silence"),
    st.integers(0, len(SILENCE_MATCHERS) - 1),
    st.sampled_from([0, -300, 1, 120, 600]),  # starts this many seconds from now
    st.sampled_from([1800, 60, 600, 3600, 1]),  # and lasts this long
    st.sampled_from(["silence", "maintenance"]),
)
expire = st.tuples(st.just("expire"), st.integers(0, 4))  # 4: an id nobody created
region = st.tuples(
    st.just("region"),
    st.sampled_from(["eu", "us"]),
    st.sampled_from(["firing", "firing", "resolved"]),
    st.integers(0, 400),
)
# Weighted towards what correlation reacts to: signals, outages, silences and time.
correlated_operation = st.one_of(
    signal, signal, signal, region, region, new_silence, new_silence, expire, tick, outcome, answer
)


def _signal(instance: str, status: Any, alertname: str) -> SignalReceived:
    """A signal of an instance; those with a known region say so, and are warnings."""
    labels = {"alertname": alertname, "instance": instance, "service": instance.rsplit("-", 1)[0]}
    if instance in REGIONS:
        labels |= {"region": REGIONS[instance], "severity": "warning"}
    return SignalReceived(
        source="test", fingerprint=f"{alertname}:{instance}", status=status, labels=labels
    )


def run(operations: list[tuple[Any, ...]], cfg: Any = None) -> Driver:
    """Play operations the way the world would answer the core's commands."""
    driver = Driver(cfg)
    starts: list[StartAction] = []
    approvals: list[str] = []
    silences: list[str] = []
    consults: list[ConsultAdvisor] = []
    for op in operations:
        if op[0] == "signal":
            _, instance, status, alert, after = op
            decision = driver.feed(_signal(instance, status, alert), after=after)
        elif op[0] == "silence":
            _, which, offset, length, kind = op
            starts_at = driver.now + timedelta(seconds=offset)
            silence_id = f"sil-{len(silences) + 1}"
            silences.append(silence_id)
            created = SilenceCreated(
                silence_id=silence_id,
                matchers=SILENCE_MATCHERS[which],
                starts_at=starts_at,
                ends_at=starts_at + timedelta(seconds=length),
                comment="planned work",
                kind=kind,
            )
            decision = driver.feed(created, after=1, actor="alice")
        elif op[0] == "expire":
            known = silences and op[1] < 4
            silence_id = silences[op[1] % len(silences)] if known else "sil-unknown"
            decision = driver.feed(SilenceExpired(silence_id=silence_id), after=1, actor="bob")
        elif op[0] == "region":
            _, region, status, after = op
            labels = {"alertname": "RegionDown", "region": region, "severity": "critical"}
            decision = driver.feed(
                SignalReceived(
                    source="test", fingerprint=f"RegionDown:{region}", status=status, labels=labels
                ),
                after=after,
            )
        elif op[0] == "tick":
            decision = driver.feed(Tick(), after=op[1])
        elif op[0] == "outcome" and starts:
            command = starts[op[2] % len(starts)]
            kind = op[1]
            if kind == "started":
                body: Any = ActionStarted(
                    command_id=command.command_id,
                    incident_id=command.incident_id,
                    action=command.action,
                    target=command.target,
                )
            elif kind == "ok":
                body = ActionSucceeded(command_id=command.command_id)
            elif kind == "fail":
                body = ActionFailed(command_id=command.command_id, error="boom")
            else:
                body = ActionOutcomeUnknown(command_id=command.command_id, reason="lost")
            decision = driver.feed(body, after=1)
        elif op[0] == "undo" and driver.undos:
            _, undo = driver.undos[op[2] % len(driver.undos)]
            if op[1] == "started":
                body = UndoStarted(
                    command_id=undo.command_id,
                    of_command_id=undo.of_command_id,
                    action=undo.action,
                    target=undo.target,
                )
            else:
                body = UndoFinished(
                    command_id=undo.command_id,
                    of_command_id=undo.of_command_id,
                    ok=op[1] == "ok",
                    error="" if op[1] == "ok" else "boom",
                    unknown=op[1] == "unknown",
                )
            decision = driver.feed(body, after=1)
        elif op[0] == "answer" and approvals:
            approval_id = approvals[op[2] % len(approvals)]
            answer: Any = (
                ApprovalGranted(approval_id=approval_id)
                if op[1] == "grant"
                else ApprovalDenied(approval_id=approval_id)
            )
            decision = driver.feed(answer, after=5, actor="alice")
        elif op[0] == "autonomy":
            decision = driver.feed(AutonomyChanged(service=op[1], level=op[2]), actor="admin")
        elif op[0] == "advice" and consults:
            asked = consults[op[2] % len(consults)]
            target = asked.request["choices"][0]["target"]
            if op[1] == "failed":
                body = AdviceFailed(
                    request_id=asked.request_id,
                    incident_id=asked.incident_id,
                    problem="timeout",
                    reason="no answer within 30s",
                )
            else:
                body = AdviceReceived(
                    request_id=asked.request_id,
                    incident_id=asked.incident_id,
                    model="m",
                    prompt_hash="sha256:00",
                    content=ADVICE_REPLIES[op[1]] % target,
                )
            decision = driver.feed(body, after=3)
        else:
            continue
        consults.extend(c for c in decision.commands if isinstance(c, ConsultAdvisor))
        starts.extend(c for c in decision.commands if isinstance(c, StartAction))
        approvals.extend(
            e.data["approval_id"] for e in decision.events if e.type == "ApprovalRequested"
        )
    return driver


histories = st.lists(operation, min_size=1, max_size=60)
# Silences made up front too, so that some alerts arrive while one is in force.
correlated_histories = st.builds(
    list.__add__,
    st.lists(new_silence, max_size=2),
    st.lists(correlated_operation, min_size=8, max_size=60),
)
# Weighted towards actions that run and fail (or do not fix it), and undos that start and end.
web_down = st.tuples(
    st.just("signal"),
    st.sampled_from(["web-1", "web-2", "web-3"]),
    st.sampled_from(["firing", "firing", "resolved"]),
    st.just("InstanceDown"),
    st.integers(0, 400),
)
undo_histories = st.lists(
    st.one_of(web_down, tick, outcome, outcome, undo_outcome, undo_outcome),
    min_size=8,
    max_size=60,
)
quick = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _replays_exactly(driver: Driver) -> None:
    report = replay(driver.log)
    assert report.differences == []
    assert report.manager is not None
    assert report.manager.snapshot() == driver.manager.snapshot()
    assert report.manager.pending_timers() == driver.manager.pending_timers()


def _folds_from_a_snapshot(driver: Driver, cut: int) -> None:
    cut %= len(driver.log) + 1
    first = Manager()
    for event in driver.log[:cut]:
        first.apply(event)
    resumed = Manager.from_snapshot(first.snapshot())
    for event in driver.log[cut:]:
        resumed.apply(event)
    assert resumed.snapshot() == driver.manager.snapshot()
    assert resumed.pending_timers() == driver.manager.pending_timers()


@quick
@given(histories)
def test_replay_reproduces_the_live_run(operations: list[tuple[Any, ...]]) -> None:
    _replays_exactly(run(operations))


@quick
@given(correlated_histories)
def test_replay_reproduces_a_run_with_silences_inhibition_and_timeouts(
    operations: list[tuple[Any, ...]],
) -> None:
    _replays_exactly(run(operations, CORRELATED))


@quick
@given(histories, st.integers(0, 10_000))
def test_folding_from_any_snapshot_equals_the_live_state(
    operations: list[tuple[Any, ...]], cut: int
) -> None:
    _folds_from_a_snapshot(run(operations), cut)


@quick
@given(correlated_histories, st.integers(0, 10_000))
def test_folding_from_any_snapshot_equals_the_live_state_with_correlation(
    operations: list[tuple[Any, ...]], cut: int
) -> None:
    _folds_from_a_snapshot(run(operations, CORRELATED), cut)


@quick
@given(correlated_histories)
def test_a_muted_incident_is_never_acted_on(operations: list[tuple[Any, ...]]) -> None:
    """Between `muted` and `unmuted` an incident gets no proposal, and nothing starts."""
    driver = run(operations, CORRELATED)
    muted: dict[str, str] = {}
    for event in driver.log:
        incident_id = str(event.data.get("incident_id", ""))
        if event.type == "IncidentUpdated" and event.data["change"] == "muted":
            assert event.data["detail"], "a muted incident says why"
            muted[incident_id] = event.data["detail"]
        elif event.type == "IncidentUpdated" and event.data["change"] == "unmuted":
            assert muted.pop(incident_id, None) is not None, "unmuted without being muted"
        elif event.type in ("ActionProposed", "ActionStarted", "ApprovalRequested"):
            assert incident_id not in muted, (event.type, muted.get(incident_id))
        elif event.type == "IncidentResolved":
            muted.pop(incident_id, None)


@quick
@given(histories)
def test_every_started_action_was_allowed_first(operations: list[tuple[Any, ...]]) -> None:
    driver = run(operations)
    verdicts: dict[str, str] = {}
    for event in driver.log:
        if event.type == "PolicyEvaluated":
            verdicts[event.data["command_id"]] = event.data["verdict"]
        if event.type == "ActionStarted":
            assert verdicts.get(event.data["command_id"]) == "allow"


@given(histories)
def test_planning_sees_the_same_actions_in_flight_as_a_scan_of_every_action(
    operations: list[tuple[Any, ...]],
) -> None:
    """Planning looks up the actions on a proposal's target through an index kept as actions
    come and go; whatever happened, it names the runbook a scan of every action would."""
    driver = run(operations)
    scanned = {
        action.target: action.runbook
        for action in driver.manager.state.actions.values()
        if action.status in IN_FLIGHT
    }
    targets = {action.target for action in driver.manager.state.actions.values()}
    for target in targets | {"web-1", "web-2", "nowhere"}:
        assert driver.manager.actions._runbook_acting_on(target) == scanned.get(target)


@quick
@given(histories)
def test_guardrail_limits_hold(operations: list[tuple[Any, ...]]) -> None:
    """Never two actions in flight on one service; never an action on an unknown target."""
    driver = run(operations)
    replayed = Manager()
    for event in driver.log:
        replayed.apply(event)
        in_flight: dict[str, int] = {}
        for action in replayed.state.actions.values():
            if action.status in IN_FLIGHT:
                in_flight[action.service or ""] = in_flight.get(action.service or "", 0) + 1
                assert not action.target.startswith("ghost")
        assert all(count <= 1 for count in in_flight.values()), in_flight


def _undo_part(commands: list[Command]) -> list[Command]:
    return [
        command
        for command in commands
        if isinstance(command, StartUndo)
        or (isinstance(command, CheckOutcome) and isinstance(command.start, StartUndo))
    ]


@quick
@given(undo_histories, st.integers(0, 10_000))
def test_a_restart_anywhere_runs_or_settles_every_undo_in_flight(
    operations: list[tuple[Any, ...]], cut: int
) -> None:
    """Cut the log anywhere (a crash) and fold it: every undo decided by then and not finished
    is in doubt — to run when it never started, to settle when it did — in the order decided;
    and no undo is ever asked for twice."""
    driver = run(operations)
    asked = [undo.command_id for _, undo in driver.undos]
    assert len(asked) == len(set(asked)), "an undo was asked for twice"
    # The runtime appends an input with its decisions in one batch: a crash cuts between two.
    batches = [i for i, event in enumerate(driver.log) if event.origin is Origin.INPUT]
    cut = [*batches, len(driver.log)][cut % (len(batches) + 1)]
    folded = Manager()
    for event in driver.log[:cut]:
        folded.apply(event)
    seen = driver.log[:cut]
    started = {e.data["command_id"] for e in seen if e.type == "UndoStarted"}
    finished = {e.data["command_id"] for e in seen if e.type == "UndoFinished"}
    expected: list[Command] = [
        CheckOutcome(undo) if undo.command_id in started else undo
        for decided_at, undo in driver.undos
        if decided_at <= cut and undo.command_id not in finished
    ]
    assert _undo_part(folded.in_doubt()) == expected


# Two runbooks for one alert and the learning agent choosing between them, learning online.
LEARNING = config(
    runbooks=[
        {
            "name": "restart-crashed-instance",
            "priority": 1,
            "when": 'signal.labels.alertname == "InstanceDown"',
            "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
            "verify": {"signal_resolved_within": "2m"},
            "undo": [{"action": "traffic.drain", "target": "{{ signal.labels.instance }}"}],
        },
        {
            "name": "replace-instance",
            "when": 'signal.labels.alertname == "InstanceDown"',
            "do": [{"action": "instance.replace", "target": "{{ signal.labels.instance }}"}],
            "verify": {"signal_resolved_within": "2m"},
        },
    ],
    learning={"agent": "on", "recurrence_window": "10m", "drift": {"min_outcomes": 2}},
)


@quick
@given(histories, st.integers(0, 10_000))
def test_the_learning_agent_replays_exactly_and_folds_from_any_snapshot(
    operations: list[tuple[Any, ...]], cut: int
) -> None:
    driver = run(operations, LEARNING)
    _replays_exactly(driver)
    _folds_from_a_snapshot(driver, cut)


# Alerts no runbook matches (HighLatency) consulted on, within a budget of three an hour.
ADVISED = config(advisor={"agent": "on", "max_calls_per_hour": 3})
unmatched = st.tuples(
    st.just("signal"),
    st.sampled_from(INSTANCES),
    st.sampled_from(["firing", "firing", "resolved"]),
    st.just("HighLatency"),
    st.integers(0, 1200),
)
advised_histories = st.lists(
    st.one_of(unmatched, unmatched, advice, advice, advice, operation), min_size=1, max_size=60
)


@quick
@given(advised_histories, st.integers(0, 10_000))
def test_the_advisor_stays_within_its_choices_cap_and_budget_and_replays_exactly(
    operations: list[tuple[Any, ...]], cut: int
) -> None:
    driver = run(operations, ADVISED)
    _replays_exactly(driver)
    _folds_from_a_snapshot(driver, cut)
    asked = [e for e in driver.log if e.type == "AdviceRequested"]
    for event in asked:  # never more than the budget in any hour
        window = [a for a in asked if timedelta(0) <= event.ts - a.ts < timedelta(hours=1)]
        assert len(window) <= 3
    choices = {
        (e.data["incident_id"], c["name"], c["action"], c["target"])
        for e in asked
        for c in e.data["choices"]
    }
    first_verdict: dict[str, str] = {}
    for event in driver.log:
        if event.type == "PolicyEvaluated":
            first_verdict.setdefault(event.data["command_id"], event.data["verdict"])
    for event in driver.log:
        if event.type == "ActionProposed" and event.data["agent"] == "advisor":
            data = event.data
            assert (data["incident_id"], data["runbook"], data["action"], data["target"]) in (
                choices
            )
            # capped at approve: a person confirms before any of it runs
            assert first_verdict.get(data["command_id"]) != "allow"
