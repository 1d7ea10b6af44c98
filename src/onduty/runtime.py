"""The shell: owns the clock, the log and the executor, and runs the core's loop.

    input ─► Manager.handle ─► append [input, *decisions] durably ─► run the commands

An input and the decisions it caused are appended in one batch, so the log never holds an input
whose decisions are missing. The manager's state is changed before the append; if the append
fails the runtime stops (fail-stop) and a restart rebuilds the state from the log.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from structlog.contextvars import bind_contextvars, reset_contextvars

from onduty.act import ActuatorRegistry, Executor
from onduty.act.executor import Spawn, inline
from onduty.act.runs import RunLocks
from onduty.commands import (
    CheckOutcome,
    Command,
    ConsultAdvisor,
    CountAcrossFleet,
    Notify,
    RunCheck,
    ScheduleTimer,
    StartAction,
    StartUndo,
)
from onduty.config import Config
from onduty.consulting import Consultant, NoAdvisor
from onduty.counting import FleetCounts, LocalCounts
from onduty.events import (
    AdviceFailed,
    Event,
    Payload,
    PolicyActivated,
    SnapshotDiscarded,
    Tick,
    make_event,
)
from onduty.learn.model import model_activation
from onduty.log import EventLog, SnapshotProblem, check_snapshot
from onduty.manager import Decision, Manager
from onduty.snapshots import SnapshotWriter, save

logger = logging.getLogger("onduty.runtime")

TIMER_BATCH = 512
"""At most this many due timers' Ticks are appended in one commit"""
TIMER_BATCH_SECONDS = 0.05
"""and a batch stops taking more once this long was spent handling them."""


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ScaledClock:
    """Wall-clock time running `speed` times faster from `start`: a simulated fleet watched live
    in a console (an hour of scenario in a minute at speed 60)."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start, self.speed = start, speed
        self._origin = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._origin) * self.speed)

    def real_seconds_until(self, moment: datetime) -> float:
        return max(0.0, (moment - self.now()).total_seconds() / self.speed)


@dataclass
class VirtualClock:
    """Time that moves only when told to: a simulated day runs in seconds."""

    current: datetime

    def now(self) -> datetime:
        return self.current

    def advance_to(self, moment: datetime) -> None:
        self.current = max(self.current, moment)


Notifier = Callable[[Notify], None]


@dataclass(frozen=True)
class Input:
    """An input from the outside world, before it has an id and a place in the log."""

    body: Payload
    stream: str = ""
    actor: str = "onduty"
    ts: datetime | None = None


class RuntimeStopped(RuntimeError):
    """The log refused an append; the in-memory state can no longer be trusted."""


@dataclass
class RecoveryReport:
    snapshot_seq: int = 0
    folded: int = 0
    head_seq: int = 0
    in_doubt: list[Command] = field(default_factory=list)
    discarded: list[SnapshotProblem] = field(default_factory=list)
    """Stored snapshots refused at start-up (each recorded as `SnapshotDiscarded`)."""


def random_ids() -> Callable[[], str]:
    """Unique ids without a uuid per event: a random prefix for this process, then a counter."""
    return counter_ids(uuid.uuid4().hex[:12], 1)


def counter_ids(prefix: str, start: int) -> Callable[[], str]:
    """Readable, reproducible ids for simulations: prefix-<n>."""
    counter = itertools.count(start)
    return lambda: f"{prefix}-{next(counter)}"


class Runtime:
    def __init__(
        self,
        log: EventLog,
        manager: Manager,
        clock: Clock,
        actuators: ActuatorRegistry,
        *,
        notifier: Notifier | None = None,
        snapshot_every: int = 1000,
        new_id: Callable[[], str] | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_append: Callable[[int, float], None] | None = None,
        spawn: Spawn = inline,
        attempts: int = 1,
        runs: RunLocks | None = None,
        background_snapshots: bool = False,
        counts: FleetCounts | None = None,
        consultant: Consultant | None = None,
    ) -> None:
        self.log = log
        self.manager = manager
        self.clock = clock
        self.snapshot_every = snapshot_every
        self._notifier = notifier
        self._new_id = new_id or random_ids()
        self._on_event = on_event
        self._on_append = on_append
        """Told each append's batch size and how long the log took to make it durable."""
        self._executor = Executor(
            actuators,
            self._record,
            spawn=spawn,
            attempts=attempts,
            record_many=self._record_many,
            runs=runs,
        )
        self._counts: FleetCounts = counts or LocalCounts()
        self.consultant: Consultant = consultant or NoAdvisor()
        """Who answers the advisor's consultations (replaced when the configuration changes)."""
        self._spawn = spawn
        self._outcome: Callable[[Payload, str], None] = self._record
        self._timers: dict[str, datetime] = {}
        self._timer_heap: list[tuple[datetime, str]] = []
        self._queue: deque[Command] = deque()
        self._draining = False
        self._stopped: BaseException | None = None
        self._last_snapshot = 0
        # With background snapshots, the core thread only encodes the state; a writer thread
        # makes and stores the snapshot (without, the caller waits for it: simulations, tests).
        self._snapshots = SnapshotWriter(log) if background_snapshots else None
        # Inputs may arrive from several threads (ingest, timers); the core sees one at a time,
        # in the order they are appended. Re-entrant: an executor's outcome is submitted from
        # within the command loop of the input that started it.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ start-up

    @classmethod
    def open(
        cls,
        log: EventLog,
        clock: Clock,
        actuators: ActuatorRegistry,
        *,
        config: Config | None = None,
        notifier: Notifier | None = None,
        snapshot_every: int = 1000,
        new_id: Callable[[], str] | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_append: Callable[[int, float], None] | None = None,
        spawn: Spawn = inline,
        attempts: int = 1,
        runs: RunLocks | None = None,
        background_snapshots: bool = False,
        counts: FleetCounts | None = None,
        consultant: Consultant | None = None,
    ) -> tuple[Runtime, RecoveryReport]:
        """Rebuild the core from the newest snapshot bound to this chain plus the log's tail
        (a refused snapshot is recorded as `SnapshotDiscarded`), then activate `config` when it
        differs from the one in force, and settle what a crash left open.

        With `runs` (run locks in a state directory), an action started before the crash whose
        run may still be in progress is waited for before its outcome is checked."""
        report = RecoveryReport()
        manager, report.snapshot_seq, report.discarded = _restore(log)
        for event in log.read(after=report.snapshot_seq):
            manager.apply(event)
            report.folded += 1
        report.head_seq = log.head()[0]
        runtime = cls(
            log,
            manager,
            clock,
            actuators,
            notifier=notifier,
            snapshot_every=snapshot_every,
            new_id=new_id,
            on_event=on_event,
            on_append=on_append,
            spawn=spawn,
            attempts=attempts,
            runs=runs,
            background_snapshots=background_snapshots,
            counts=counts,
            consultant=consultant,
        )
        # Run locks of settled commands go; those in doubt stay to be waited on.
        runtime._executor.sweep_runs(
            [c.start.command_id for c in manager.in_doubt() if isinstance(c, CheckOutcome)]
        )
        runtime._last_snapshot = report.snapshot_seq
        runtime._record_discarded(report.discarded)
        if config is not None and manager.state.policy_version != config.version:
            runtime.submit(
                PolicyActivated(version=config.version, config=config.policy_document()),
                stream="policy",
            )
        change = (
            model_activation(config.learning.model, manager.learning.model_id()) if config else None
        )
        if change is not None:  # the model the configuration names, once
            runtime.submit(change, stream="learning")
        for timer in manager.pending_timers():
            runtime._arm(timer)
        report.in_doubt = manager.in_doubt()
        runtime._queue.extend(report.in_doubt)
        runtime._drain()
        return runtime, report

    # ------------------------------------------------------------------ the loop

    def submit(
        self,
        body: Payload,
        *,
        stream: str = "",
        actor: str = "onduty",
        ts: datetime | None = None,
    ) -> Decision:
        """Record an input from the outside world and act on what the core decides."""
        with self._lock:
            return self._submit(body, stream=stream, actor=actor, ts=ts)

    def _submit(self, body: Payload, *, stream: str, actor: str, ts: datetime | None) -> Decision:
        event = self._input_event(Input(body, stream, actor, ts))
        self._check_running()
        bound = bind_contextvars(event_id=event.id)  # what it leads to is logged with its id
        try:
            decision = self.manager.handle(event, body)
            self._append_and_run([event, *decision.events], decision.commands)
        finally:
            reset_contextvars(**bound)
        return decision

    def submit_many(self, inputs: Sequence[Input]) -> list[Event]:
        """Handle inputs in order and append them, with their decisions, in one durable batch:
        many signals arriving together cost one commit. Returns the placed input events."""
        with self._lock:
            self._check_running()
            events: list[Event] = []
            commands: list[Command] = []
            positions: list[int] = []
            for item in inputs:
                event = self._input_event(item)
                decision = self.manager.handle(event, item.body)
                positions.append(len(events))
                events.append(event)
                events.extend(decision.events)
                commands.extend(decision.commands)
            placed = self._append_and_run(events, commands)
            return [placed[position] for position in positions]

    def _check_running(self) -> None:
        if self._stopped is not None:
            raise RuntimeStopped("the runtime stopped after a failed append") from self._stopped

    def _input_event(self, item: Input) -> Event:
        return make_event(
            item.body,
            id=self._new_id(),
            ts=item.ts or self.clock.now(),
            stream=item.stream or _default_stream(item.body),
            actor=item.actor,
        )

    def _append_and_run(self, events: list[Event], commands: Sequence[Command]) -> list[Event]:
        if not events:
            return []
        started = time.perf_counter()
        try:
            placed = self.log.append(events)
        except BaseException as error:
            self._stopped = error
            raise RuntimeStopped(f"could not append to the log: {error}") from error
        if self._on_append is not None:
            self._on_append(len(placed), time.perf_counter() - started)
        if self._on_event is not None:
            for item in placed:
                self._on_event(item)
        self._maybe_snapshot(placed[-1])
        self._queue.extend(commands)
        self._drain()
        return placed

    def fire_due_timers(self, now: datetime | None = None, *, budget: float | None = None) -> int:
        """Feed a Tick for every timer due by `now`; return how many fired. With `budget` (in
        seconds), return once that long was spent, what is left being due still: a loop that
        also takes inputs takes them in between.

        Ticks are appended in batches (one commit for many) and the lock is released between
        batches, so a burst of due timers never holds up other inputs for long. The core sees
        exactly the inputs it would see one tick at a time: a batch ends at the first tick
        whose commands are more than timers (those run, as ever, once their tick is durable)."""
        moment = now
        fired = 0
        started = time.monotonic()
        while True:
            with self._lock:
                moment = moment or self.clock.now()
                count = self._fire_batch(moment)
            fired += count
            if count == 0 or (budget is not None and time.monotonic() - started >= budget):
                return fired

    def _fire_batch(self, moment: datetime) -> int:
        events: list[Event] = []
        commands: Sequence[Command] = ()
        fired = 0
        deadline = time.monotonic() + TIMER_BATCH_SECONDS
        try:
            while fired < TIMER_BATCH and time.monotonic() < deadline:
                due = self._pop_due(moment)
                if due is None:
                    break
                self._check_running()
                body = Tick(timer_id=due[1])
                event = self._input_event(Input(body, "timers", ts=max(due[0], self.clock.now())))
                decision = self.manager.handle(event, body)
                fired += 1
                events.append(event)
                events.extend(decision.events)
                timers = [c for c in decision.commands if isinstance(c, ScheduleTimer)]
                if any(not self._inert(c) for c in decision.commands):
                    commands = decision.commands
                    break
                for timer in timers:  # armed now: it may be due within this batch
                    self._arm(timer)
        finally:  # what the core decided is appended, even when a later tick raised
            self._append_and_run(events, commands)
        return fired

    def _inert(self, command: Command) -> bool:
        """Whether running `command` can feed nothing back to the core: a timer to arm, or
        a notification nobody is told of."""
        return isinstance(command, ScheduleTimer) or (
            isinstance(command, Notify) and self._notifier is None
        )

    def _pop_due(self, moment: datetime) -> tuple[datetime, str] | None:
        while self._timer_heap and self._timer_heap[0][0] <= moment:
            due, timer_id = heapq.heappop(self._timer_heap)
            if self._timers.get(timer_id) == due:  # not re-armed for another time, nor fired
                del self._timers[timer_id]
                return due, timer_id
        return None

    def next_timer(self) -> datetime | None:
        with self._lock:
            return self._next_timer()

    def _next_timer(self) -> datetime | None:
        while (
            self._timer_heap and self._timers.get(self._timer_heap[0][1]) != self._timer_heap[0][0]
        ):
            heapq.heappop(self._timer_heap)
        return self._timer_heap[0][0] if self._timer_heap else None

    def snapshot_now(self) -> None:
        """Save a snapshot at the head (if none is there yet); return once every snapshot is
        stored, those written in the background too."""
        with self._lock:
            self.flush_snapshots()
            seq, event_hash = self.log.head()
            if seq > self._last_snapshot:
                save(self.log, seq, event_hash, self.manager.state)
                self._last_snapshot = seq

    def flush_snapshots(self) -> None:
        """Return once every snapshot taken so far is stored (or failed to be)."""
        if self._snapshots is not None:
            self._snapshots.wait()

    def _record_discarded(self, discarded: Sequence[SnapshotProblem]) -> None:
        """Record each snapshot start-up refused, then drop it from the store: the record in
        the log is what remains of it."""
        if not discarded:
            return
        self.submit_many(
            [Input(SnapshotDiscarded(seq=p.seq, reason=p.reason), stream="log") for p in discarded]
        )
        for problem in discarded:
            if problem.seq != self._last_snapshot:  # not one just saved at the same seq
                self.log.discard_snapshot(problem.seq)

    # ------------------------------------------------------------------ commands

    def _drain(self) -> None:
        if self._draining:
            return  # commands raised while running a command wait their turn
        self._draining = True
        try:
            while self._queue:
                command = self._queue.popleft()
                # what running it logs names its incident and command (a timer has neither)
                bound = bind_contextvars(
                    incident_id=getattr(command, "incident_id", None),
                    command_id=getattr(command, "command_id", None),
                )
                try:
                    self._run(command)
                finally:
                    reset_contextvars(**bound)
        finally:
            self._draining = False

    def send_outcomes_to(self, record: Callable[[Payload, str], None]) -> None:
        """Record actuators' outcomes through `record` (e.g. the core loop's queue, so a worker
        never waits on the core) instead of submitting them here."""
        self._executor.send_outcomes_to(record)
        self._outcome = record

    def _run(self, command: Command) -> None:
        if isinstance(command, StartAction):
            # Actions started together become durable together: one commit, not one each.
            batch = [command]
            while self._queue and isinstance(self._queue[0], StartAction):
                batch.append(self._queue.popleft())  # type: ignore[arg-type]
            self._executor.start_many(batch)
        elif isinstance(command, StartUndo):
            self._executor.undo(command)
        elif isinstance(command, CheckOutcome):
            self._executor.reconcile(command)
        elif isinstance(command, RunCheck):
            self._executor.verify(command, self.clock.now)
        elif isinstance(command, ScheduleTimer):
            self._arm(command)
        elif isinstance(command, Notify) and self._notifier is not None:
            self._notifier(command)
        elif isinstance(command, CountAcrossFleet):
            # counted on a worker, limited like one actuator's runs
            counter: Any = self._counts
            self._spawn(counter, lambda: self._count(command))
        elif isinstance(command, ConsultAdvisor):
            # asked on a worker, one at a time like one actuator's runs: a slow model never
            # holds up the core
            lane: Any = self.consultant
            self._spawn(lane, lambda: self._consult(command))

    def _count(self, command: CountAcrossFleet) -> None:
        """Off the core's thread: the fleet-wide counts, recorded as the action's answer."""
        try:
            answer = self._counts.count(command)
        except Exception:
            logger.exception(
                "the fleet-wide count of %s failed", command.command_id,
                extra={"incident_id": command.incident_id, "command_id": command.command_id},
            )  # fmt: skip
            return  # asked again at the next start (it stays waiting)
        self._outcome(answer, command.incident_id)

    def _consult(self, command: ConsultAdvisor) -> None:
        """Off the core's thread: the advisor's answer, or why there is none, recorded."""
        try:
            answer = self.consultant.consult(command)
        except Exception as error:
            logger.exception(
                "consulting the advisor on %s failed", command.incident_id,
                extra={"incident_id": command.incident_id},
            )  # fmt: skip
            answer = AdviceFailed(
                request_id=command.request_id,
                incident_id=command.incident_id,
                problem="error",
                reason=f"the consultation failed: {type(error).__name__}",
            )
        self._outcome(answer, command.incident_id)

    def _arm(self, timer: ScheduleTimer) -> None:
        if self._timers.get(timer.timer_id) == timer.due:
            return
        self._timers[timer.timer_id] = timer.due
        heapq.heappush(self._timer_heap, (timer.due, timer.timer_id))

    def _record(self, body: Payload, stream: str) -> None:
        self.submit(body, stream=stream)

    def _record_many(self, items: list[tuple[Payload, str]]) -> None:
        if items:
            self.submit_many([Input(body, stream=stream) for body, stream in items])

    def _maybe_snapshot(self, last: Event) -> None:
        if last.seq - self._last_snapshot >= self.snapshot_every:
            if self._snapshots is None:
                save(self.log, last.seq, last.hash, self.manager.state)
            else:
                self._snapshots.submit(last.seq, last.hash, self.manager.state)
            self._last_snapshot = last.seq


GC_THRESHOLDS = (10_000, 20, 50)
"""The cyclic collector's thresholds for a long-running service (Python's are 700, 10, 10): its
state is many small long-lived objects, that a collection walks again and again, freeing none."""


def settle_heap() -> None:
    """Once start-up has built what a service keeps (the state from the snapshot and the log's
    tail, the read models): collect what start-up left, then freeze what is alive, so the
    collector never walks it again, and collect less often. For a service's process only:
    garbage cycles among frozen objects are never reclaimed."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _restore(log: EventLog) -> tuple[Manager, int, list[SnapshotProblem]]:
    """The core as of the newest snapshot bound to this chain (`check_snapshot`), the seq it
    folds up to, and the newer snapshots refused on the way (each logged as a warning). With
    no trusted snapshot, a fresh core that folds the log from the start."""
    head = log.head()[0]
    discarded: list[SnapshotProblem] = []
    restored: tuple[Manager, int] = (Manager(), 0)
    for snapshot in log.snapshots():
        reason = check_snapshot(log, snapshot, head)
        if reason is None:
            try:
                restored = (Manager.from_snapshot(snapshot.state), snapshot.seq)
                break
            except Exception as error:  # bound and intact, but not a state this version reads
                reason = f"its state cannot be loaded by this version: {error}"
        discarded.append(SnapshotProblem(snapshot.seq, reason))
    for problem in discarded:
        logger.warning(
            "snapshot at seq %s discarded: %s; the state is folded from the log instead",
            problem.seq,
            problem.reason,
        )
    return restored[0], restored[1], discarded


def _default_stream(body: Payload) -> str:
    fingerprint = getattr(body, "fingerprint", None)
    if isinstance(fingerprint, str):
        return f"signal:{fingerprint}"
    return type(body).__name__


def run_virtual(
    runtime: Runtime,
    clock: VirtualClock,
    until: datetime,
    steps: Iterable[datetime],
    on_step: Callable[[datetime], None],
) -> None:
    """Advance virtual time through `steps`, firing every timer due on the way, in time order."""
    for step in steps:
        if step > until:
            break
        while (due := runtime.next_timer()) is not None and due <= step:
            clock.advance_to(due)
            runtime.fire_due_timers(due)
        clock.advance_to(step)
        on_step(step)
    while (due := runtime.next_timer()) is not None and due <= until:
        clock.advance_to(due)
        runtime.fire_due_timers(due)


def run_realtime(runtime: Runtime, stop: threading.Event, *, max_wait: float = 1.0) -> None:
    """Fire the core's timers on the wall clock until `stop` is set."""
    while not stop.is_set():
        runtime.fire_due_timers()
        due = runtime.next_timer()
        wait = max_wait
        if due is not None:
            wait = min(max_wait, max(0.0, (due - runtime.clock.now()).total_seconds()))
        stop.wait(wait)
