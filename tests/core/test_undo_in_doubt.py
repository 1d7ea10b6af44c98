"""Undo steps cut off by a crash: the core remembers every undo it decided until its outcome is
recorded, so a log folded after a restart says which undo to run (decided, never started) and
which to settle (started, no outcome) — and an undo whose outcome stays unknown is escalated,
never run again."""

from __future__ import annotations

from onduty.commands import CheckOutcome, Notify, StartAction, StartUndo
from onduty.events import (
    ActionFailed,
    ActionSucceeded,
    Event,
    Tick,
    UndoFinished,
    UndoStarted,
)
from onduty.manager import Manager
from onduty.replay import replay
from tests.core.helpers import Driver, config, types

TWO_UNDO_STEPS = {
    "name": "restart-crashed-instance",
    "when": 'signal.labels.alertname == "InstanceDown"',
    "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
    "verify": {"signal_resolved_within": "2m"},
    "undo": [
        {"action": "traffic.drain", "target": "{{ signal.labels.instance }}"},
        {"action": "traffic.restore", "target": "{{ signal.labels.instance }}"},
    ],
}


def _failed_action(driver: Driver) -> tuple[StartAction, list[StartUndo]]:
    """An action that ran and failed: the core decides its undo steps."""
    command = next(c for c in driver.signal("web-1").commands if isinstance(c, StartAction))
    driver.start(command)
    failed = driver.feed(ActionFailed(command_id=command.command_id, error="exit 1"))
    return command, [c for c in failed.commands if isinstance(c, StartUndo)]


def _fold(log: list[Event]) -> Manager:
    """A restart: a fresh core folds the log (no handling, no reactions), then goes through a
    snapshot as a later restart would."""
    folded = Manager()
    for event in log:
        folded.apply(event)
    return Manager.from_snapshot(folded.snapshot())


def _started(driver: Driver, undo: StartUndo) -> None:
    driver.feed(
        UndoStarted(
            command_id=undo.command_id,
            of_command_id=undo.of_command_id,
            action=undo.action,
            target=undo.target,
        )
    )


def _finished(driver: Driver, undo: StartUndo, ok: bool = True, error: str = "") -> list[str]:
    decision = driver.feed(
        UndoFinished(
            command_id=undo.command_id, of_command_id=undo.of_command_id, ok=ok, error=error
        )
    )
    return types(decision)


def test_an_undo_decided_but_never_started_is_run_after_a_restart() -> None:
    driver = Driver()
    _, undos = _failed_action(driver)
    assert [(u.action, u.target) for u in undos] == [("traffic.drain", "web-1")]
    # The crash came after the failure and its decisions were recorded, before UndoStarted.
    assert _fold(driver.log).in_doubt() == undos


def test_an_undo_of_a_fix_that_did_not_verify_is_run_after_a_restart() -> None:
    driver = Driver()
    command = next(c for c in driver.signal("web-1").commands if isinstance(c, StartAction))
    driver.start(command)
    driver.feed(ActionSucceeded(command_id=command.command_id), after=5)
    late = driver.feed(Tick(), after=121)  # the verification window (2m) has passed
    assert types(late) == ["VerificationFailed", "Escalated"]
    undos = [c for c in late.commands if isinstance(c, StartUndo)]
    assert len(undos) == 1
    assert _fold(driver.log).in_doubt() == undos


def test_an_undo_started_but_not_finished_is_settled_never_run_blindly() -> None:
    driver = Driver()
    _, [undo] = _failed_action(driver)
    _started(driver, undo)
    # The crash came between UndoStarted and UndoFinished: check (or settle) it, never rerun.
    assert _fold(driver.log).in_doubt() == [CheckOutcome(undo)]
    _finished(driver, undo)
    assert _fold(driver.log).in_doubt() == []
    assert driver.manager.in_doubt() == []


def test_every_cut_of_the_log_knows_which_undo_is_in_doubt() -> None:
    driver = Driver(config(runbooks=[TWO_UNDO_STEPS]))
    _, undos = _failed_action(driver)
    # Undone in reverse order, like a stack; a restart keeps that order.
    assert [u.action for u in undos] == ["traffic.restore", "traffic.drain"]
    decided = len(driver.log)
    _started(driver, undos[0])
    _finished(driver, undos[0])
    _started(driver, undos[1])
    _finished(driver, undos[1], ok=False, error="refused")
    expected = [
        undos,  # both decided, neither started
        [CheckOutcome(undos[0]), undos[1]],  # the first started
        [undos[1]],  # the first finished
        [CheckOutcome(undos[1])],  # the second started
        [],  # everything finished (a failed undo is finished too)
    ]
    for cut, wanted in zip(range(decided, len(driver.log) + 1), expected, strict=True):
        assert _fold(driver.log[:cut]).in_doubt() == wanted, f"cut after {cut} events"


def test_an_undo_with_an_unknown_outcome_is_escalated_naming_it() -> None:
    driver = Driver()
    _, [undo] = _failed_action(driver)
    _started(driver, undo)
    reason = "outcome unknown: the process stopped while the undo ran"
    decision = driver.feed(
        UndoFinished(
            command_id=undo.command_id,
            of_command_id=undo.of_command_id,
            ok=False,
            error=reason,
            unknown=True,
        )
    )
    assert types(decision) == ["Escalated"]
    escalated = decision.events[0].data
    assert escalated["command_id"] == undo.command_id
    assert (
        "undo traffic.drain on web-1 (of process.restart on web-1) is in doubt"
        in (escalated["reason"])
    )
    assert reason in escalated["reason"]
    assert not any(isinstance(c, StartUndo) for c in decision.commands)
    assert any(isinstance(c, Notify) and c.kind == "escalation" for c in decision.commands)
    assert driver.manager.in_doubt() == []


def test_an_undo_in_doubt_is_escalated_after_its_incident_closed() -> None:
    driver = Driver()
    command = next(c for c in driver.signal("web-1").commands if isinstance(c, StartAction))
    driver.start(command)
    driver.signal("web-1", "resolved", after=10)  # the incident waits for the action's outcome
    failed = driver.feed(ActionFailed(command_id=command.command_id, error="exit 1"))
    assert types(failed)[-1] == "IncidentResolved"  # undo decided, then the incident closed
    [undo] = [c for c in failed.commands if isinstance(c, StartUndo)]
    assert _fold(driver.log).in_doubt() == [undo]
    _started(driver, undo)
    decision = driver.feed(
        UndoFinished(
            command_id=undo.command_id,
            of_command_id=undo.of_command_id,
            ok=False,
            error="outcome unknown",
            unknown=True,
        )
    )
    assert types(decision) == ["Escalated"]
    pages = [c for c in decision.commands if isinstance(c, Notify)]
    assert [(p.incident_id, p.channels) for p in pages] == [(undo.incident_id, ("on-call",))]


def test_a_failed_undo_is_not_escalated_again() -> None:
    """A failure to undo is in the incident's timeline; the incident was escalated already."""
    driver = Driver()
    _, [undo] = _failed_action(driver)
    _started(driver, undo)
    assert _finished(driver, undo, ok=False, error="refused") == []


def test_an_undo_is_decided_once_whatever_arrives_twice() -> None:
    driver = Driver()
    command, [undo] = _failed_action(driver)
    _started(driver, undo)
    again = driver.feed(ActionFailed(command_id=command.command_id, error="exit 1 (repeated)"))
    assert not any(isinstance(c, StartUndo) for c in again.commands), "never undone twice"
    _finished(driver, undo)
    later = driver.feed(ActionFailed(command_id=command.command_id, error="exit 1 (late)"))
    assert not any(isinstance(c, StartUndo) for c in later.commands)
    assert driver.manager.in_doubt() == []


def test_undos_in_flight_replay_exactly_and_survive_a_snapshot() -> None:
    driver = Driver(config(runbooks=[TWO_UNDO_STEPS]))
    _, undos = _failed_action(driver)
    _started(driver, undos[0])
    report = replay(driver.log)
    assert report.differences == []
    assert report.manager is not None
    assert report.manager.snapshot() == driver.manager.snapshot()
    encoded = driver.manager.snapshot()
    assert set(encoded["undos"]) == {u.command_id for u in undos}
    assert Manager.from_snapshot(encoded).in_doubt() == [CheckOutcome(undos[0]), undos[1]]


def test_a_snapshot_without_undos_loads_and_encodes_as_before() -> None:
    driver = Driver()
    driver.signal("web-1")
    encoded = driver.manager.snapshot()
    assert "undos" not in encoded  # nothing in flight: the encoding older versions wrote
    restored = Manager.from_snapshot(encoded)
    assert restored.state.undos == {}
    assert restored.snapshot() == encoded
