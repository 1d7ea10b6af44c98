"""The shell: the loop on a virtual and a real clock, snapshots, and recovery after a crash."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from onduty import runtime as runtime_module
from onduty.act import ActuatorRegistry, Outcome
from onduty.commands import CheckOutcome, StartAction, StartUndo
from onduty.events import (
    ActionFailed,
    ActionStarted,
    Event,
    SignalReceived,
    UndoStarted,
    make_event,
)
from onduty.log import EventLog, Snapshot, open_log, verify_snapshots
from onduty.log.memory import MemoryEventLog
from onduty.runtime import (
    Runtime,
    RuntimeStopped,
    SystemClock,
    VirtualClock,
    counter_ids,
    run_realtime,
)
from tests.core.helpers import T0, config


@dataclass
class RecordingActuator:
    """Remembers what it ran; answers `check` from what it remembers."""

    idempotent: bool = False
    can_check: bool = True
    ok: bool = True
    runs: list[str] = field(default_factory=list)
    done: dict[str, Outcome] = field(default_factory=dict)

    def run(self, command: StartAction | StartUndo) -> Outcome:
        self.runs.append(command.command_id)
        outcome = Outcome(self.ok, output="ran", error="" if self.ok else "refused")
        self.done[command.command_id] = outcome
        return outcome

    def check(self, command_id: str) -> Outcome | None:
        return self.done.get(command_id)


def registry(actuator: RecordingActuator) -> ActuatorRegistry:
    actuators = ActuatorRegistry()
    actuators.register("process.*", actuator)
    actuators.register("traffic.*", actuator)
    return actuators


def down(instance: str, status: str = "firing") -> SignalReceived:
    return SignalReceived(
        source="test",
        fingerprint=f"down:{instance}",
        status=status,  # type: ignore[arg-type]
        labels={"alertname": "InstanceDown", "instance": instance, "service": "web"},
    )


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    opened = open_log(str(tmp_path / "events.db"))
    yield opened
    opened.close()


def types(log: EventLog) -> list[str]:
    return [event.type for event in log.read()]


def test_virtual_clock_runs_the_whole_loop(log: EventLog) -> None:
    actuator = RecordingActuator()
    clock = VirtualClock(T0)
    runtime, report = Runtime.open(log, clock, registry(actuator), config=config())
    assert report.folded == 0
    runtime.submit(down("web-1"))
    assert len(actuator.runs) == 1
    assert types(log) == [
        "PolicyActivated",
        "SignalReceived",
        "IncidentOpened",
        "IncidentUpdated",
        "ActionProposed",
        "PolicyEvaluated",
        "ActionStarted",
        "ActionSucceeded",
    ]
    clock.advance_to(T0 + timedelta(minutes=1))
    assert runtime.fire_due_timers() == 0  # the verification window (2m) is still open
    clock.advance_to(T0 + timedelta(minutes=3))
    assert runtime.fire_due_timers() == 1
    assert types(log)[8:] == [
        "Tick",
        "VerificationFailed",
        "Escalated",
        "UndoStarted",
        "UndoFinished",
    ]
    assert len(actuator.runs) == 2  # the action, then its undo
    assert log.verify() is None


def test_real_clock_fires_timers(log: EventLog) -> None:
    cfg = config(correlation={"group_by": ["instance"], "group_wait": "300ms"})
    actuator = RecordingActuator()
    runtime, _ = Runtime.open(log, SystemClock(), registry(actuator), config=cfg)
    stop = threading.Event()
    loop = threading.Thread(target=run_realtime, args=(runtime, stop), kwargs={"max_wait": 0.05})
    loop.start()
    try:
        runtime.submit(down("web-1"))
        assert actuator.runs == []  # still within group_wait
        deadline = time.monotonic() + 5
        while not actuator.runs and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        loop.join(timeout=5)
    assert len(actuator.runs) == 1


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_snapshots_and_restart_rebuild_the_same_state(tmp_path: Path, background: bool) -> None:
    store = str(tmp_path / "snap.db")
    cfg = config(correlation={"group_by": ["instance"], "flap_threshold": 100})
    clock = VirtualClock(T0)
    first = open_log(store)
    runtime, _ = Runtime.open(
        first,
        clock,
        registry(RecordingActuator()),
        config=cfg,
        snapshot_every=10,
        background_snapshots=background,
    )
    for minute in range(30):
        clock.advance_to(T0 + timedelta(minutes=minute))
        runtime.fire_due_timers()
        runtime.submit(down(f"web-{minute % 3 + 1}", "firing" if minute % 2 else "resolved"))
    live_state = runtime.manager.snapshot()
    runtime.flush_snapshots()
    assert verify_snapshots(first) == []  # bound to the chain, content matching its digest
    snapshot = first.latest_snapshot()
    assert snapshot is not None and snapshot.seq > 0
    first.close()

    second = open_log(store)
    try:
        reopened, report = Runtime.open(second, clock, registry(RecordingActuator()), config=cfg)
        assert report.snapshot_seq == snapshot.seq
        assert report.folded == report.head_seq - snapshot.seq
        assert reopened.manager.snapshot() == live_state
    finally:
        second.close()


def _crash_after_start(log: EventLog) -> str:
    """Leave an ActionStarted with no outcome in the log, as a SIGKILL mid-action would."""
    runtime, _ = Runtime.open(log, VirtualClock(T0), ActuatorRegistry(), config=config())
    return _start(runtime).command_id


def _start(runtime: Runtime) -> StartAction:
    """Decide and record without running the commands, then record the start exactly as the
    executor does before it calls an actuator."""
    allowed = _allow(runtime)
    runtime.submit(
        ActionStarted(
            command_id=allowed.command_id,
            incident_id=allowed.incident_id,
            action=allowed.action,
            target=allowed.target,
        ),
        stream=allowed.incident_id,
    )
    return allowed


def _allow(runtime: Runtime) -> StartAction:
    signal = make_event(down("web-1"), id="crash-1", ts=T0, stream="signal:down:web-1")
    decision = runtime.manager.handle(signal)
    runtime.log.append([signal, *decision.events])
    starts = [c for c in decision.commands if isinstance(c, StartAction)]
    assert len(starts) == 1
    return starts[0]


@pytest.mark.parametrize(
    ("idempotent", "can_check", "ran_before", "expect_runs", "expect"),
    [
        (False, True, True, 0, "ActionSucceeded"),  # it took effect: record it, run nothing
        (False, True, False, 1, "ActionSucceeded"),  # it never ran: this is its first run
        (True, False, False, 1, "ActionSucceeded"),  # idempotent: safe to run again
        (False, False, False, 0, "ActionOutcomeUnknown"),  # neither: escalate, never re-run
    ],
)
def test_recovery_reconciles_an_action_in_doubt(
    tmp_path: Path,
    idempotent: bool,
    can_check: bool,
    ran_before: bool,
    expect_runs: int,
    expect: str,
) -> None:
    store = str(tmp_path / "doubt.db")
    log = open_log(store)
    actuator = RecordingActuator(idempotent=idempotent, can_check=can_check)
    command_id = _crash_after_start(log)
    if ran_before:
        actuator.done[command_id] = Outcome(True, output="ran before the crash")
    log.close()

    log = open_log(store)
    try:
        _, report = Runtime.open(log, VirtualClock(T0), registry(actuator), config=config())
        assert len(report.in_doubt) == 1
        events = list(log.read())
        started = [e for e in events if e.type == "ActionStarted"]
        assert len(started) == 1, "an action in doubt is never started a second time"
        outcomes = [
            e.type
            for e in events
            if e.data.get("command_id") == command_id and e.type.startswith("Action")
        ]
        assert outcomes == ["ActionProposed", "ActionStarted", expect]
        assert len(actuator.runs) == expect_runs
        if expect == "ActionOutcomeUnknown":
            assert events[-1].type == "Escalated"
    finally:
        log.close()


def _crash_during_undo(log: EventLog, *, started: bool) -> StartUndo:
    """Leave an undo in flight in the log, as a SIGKILL would: the action failed and its undo
    was decided (recorded with the failure), then — with `started` — `UndoStarted` was
    recorded exactly as the executor does before it calls the undo's actuator."""
    runtime, _ = Runtime.open(log, VirtualClock(T0), ActuatorRegistry(), config=config())
    allowed = _start(runtime)
    failed = make_event(
        ActionFailed(command_id=allowed.command_id, error="exit 1"),
        id="crash-2",
        ts=T0,
        stream=allowed.incident_id,
    )
    decision = runtime.manager.handle(failed)
    runtime.log.append([failed, *decision.events])
    [undo] = [c for c in decision.commands if isinstance(c, StartUndo)]
    if started:
        runtime.submit(
            UndoStarted(
                command_id=undo.command_id,
                of_command_id=undo.of_command_id,
                action=undo.action,
                target=undo.target,
            ),
            stream=undo.incident_id,
        )
    return undo


def _undo_events(log: EventLog, undo: StartUndo) -> list[Event]:
    return [
        e
        for e in log.read()
        if e.type.startswith("Undo") and e.data.get("command_id") == undo.command_id
    ]


def test_recovery_runs_an_undo_decided_before_the_crash_exactly_once(tmp_path: Path) -> None:
    store = str(tmp_path / "undo.db")
    log = open_log(store)
    undo = _crash_during_undo(log, started=False)
    log.close()

    actuator = RecordingActuator(idempotent=False, can_check=False)
    for restart in range(2):  # a second restart finds nothing left to do
        log = open_log(store)
        try:
            _, report = Runtime.open(log, VirtualClock(T0), registry(actuator), config=config())
            assert report.in_doubt == ([undo] if restart == 0 else [])
            assert [e.type for e in _undo_events(log, undo)] == ["UndoStarted", "UndoFinished"]
        finally:
            log.close()
    assert actuator.runs == [undo.command_id], "the undo ran once, after the first restart"
    assert (undo.action, undo.target) == ("traffic.drain", "web-1")


@pytest.mark.parametrize(
    ("idempotent", "can_check", "ran_before", "expect_runs", "expect_ok"),
    [
        (False, True, True, 0, True),  # the check finds it took effect: record it, run nothing
        (False, True, False, 1, True),  # the check finds it never ran: this is its first run
        (True, False, False, 1, True),  # idempotent: safe to run again
        (False, False, False, 0, False),  # neither: unknown, escalated, never re-run
    ],
)
def test_recovery_settles_an_undo_cut_off_by_the_crash(
    tmp_path: Path,
    idempotent: bool,
    can_check: bool,
    ran_before: bool,
    expect_runs: int,
    expect_ok: bool,
) -> None:
    store = str(tmp_path / "undo.db")
    log = open_log(store)
    undo = _crash_during_undo(log, started=True)
    log.close()
    actuator = RecordingActuator(idempotent=idempotent, can_check=can_check)
    if ran_before:
        actuator.done[undo.command_id] = Outcome(True, output="drained before the crash")

    log = open_log(store)
    try:
        _, report = Runtime.open(log, VirtualClock(T0), registry(actuator), config=config())
        assert report.in_doubt == [CheckOutcome(undo)]
        events = _undo_events(log, undo)
        assert [e.type for e in events] == ["UndoStarted", "UndoFinished"], "never started twice"
        finished = events[-1].data
        assert finished["ok"] is expect_ok
        assert len(actuator.runs) == expect_runs
        escalations = [e for e in log.read() if e.type == "Escalated"]
        if expect_ok:
            assert finished.get("unknown", False) is False
            assert all(e.data["command_id"] != undo.command_id for e in escalations)
        else:
            assert finished["unknown"] is True
            assert "the process stopped while the undo ran" in finished["error"]
            last = escalations[-1].data
            assert last["command_id"] == undo.command_id
            assert "undo traffic.drain on web-1" in last["reason"]
            assert "in doubt and was not run again" in last["reason"]
        reopened, again = Runtime.open(log, VirtualClock(T0), registry(actuator), config=config())
        assert again.in_doubt == [] and reopened.manager.state.undos == {}
        assert len(actuator.runs) == expect_runs
    finally:
        log.close()


class FailingLog:
    """A log whose disk is full."""

    def __init__(self, inner: EventLog) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def append(self, batch: Sequence[Event]) -> list[Event]:
        raise OSError("disk full")


def test_a_failed_append_stops_the_runtime(log: EventLog) -> None:
    actuator = RecordingActuator()
    runtime, _ = Runtime.open(log, VirtualClock(T0), registry(actuator), config=config())
    runtime.log = FailingLog(log)  # type: ignore[assignment]
    with pytest.raises(RuntimeStopped, match="disk full"):
        runtime.submit(down("web-1"))
    with pytest.raises(RuntimeStopped):
        runtime.submit(down("web-2"))
    assert actuator.runs == []


class _RefusingSnapshots(MemoryEventLog):
    """A log whose snapshot writes fail, as a full disk or a crash mid-write would."""

    def save_snapshot(self, snapshot: Snapshot) -> None:
        raise OSError("no space left on device")


def test_a_snapshot_that_cannot_be_written_leaves_the_log_and_the_core_going() -> None:
    log = _RefusingSnapshots()
    clock = VirtualClock(T0)
    cfg = config(correlation={"group_by": ["instance"]})
    runtime, _ = Runtime.open(
        log, clock, ActuatorRegistry(), config=cfg, snapshot_every=5, background_snapshots=True
    )
    for n in range(12):
        runtime.submit(down(f"web-{n % 3 + 1}", "firing" if n % 2 else "resolved"))
    runtime.flush_snapshots()
    assert log.snapshots() == []  # nothing half-written is there to be trusted
    live = runtime.manager.snapshot()
    reopened, report = Runtime.open(log, clock, ActuatorRegistry(), config=cfg)
    assert report.snapshot_seq == 0 and reopened.manager.snapshot() == live


class _CountingLog(MemoryEventLog):
    def __init__(self) -> None:
        super().__init__()
        self.appends = 0

    def append(self, batch: Sequence[Event]) -> list[Event]:
        self.appends += 1
        return super().append(batch)


def _stale_burst(batch: int, monkeypatch: pytest.MonkeyPatch) -> tuple[_CountingLog, int]:
    """300 signals that go silent, then one call firing all their timers at once."""
    monkeypatch.setattr(runtime_module, "TIMER_BATCH", batch)
    log = _CountingLog()
    clock = VirtualClock(T0)
    cfg = config(correlation={"group_by": ["instance"], "resolve_timeout": "5m"})
    runtime, _ = Runtime.open(
        log, clock, ActuatorRegistry(), config=cfg, new_id=counter_ids("in", 1)
    )
    for n in range(300):
        runtime.submit(down(f"host-{n}"))
    clock.advance_to(T0 + timedelta(hours=1))
    before = log.appends
    assert runtime.fire_due_timers() == 300  # each signal's `stale` timer
    return log, log.appends - before


def test_a_burst_of_due_timers_is_committed_in_batches_with_the_same_decisions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = runtime_module.TIMER_BATCH
    one_by_one, commits_each = _stale_burst(1, monkeypatch)
    batched, commits = _stale_burst(batch, monkeypatch)
    assert commits_each == 300 and commits <= 300 // 10
    decided = [(e.id, e.type, e.ts, e.data) for e in one_by_one.read()]
    assert [(e.id, e.type, e.ts, e.data) for e in batched.read()] == decided
