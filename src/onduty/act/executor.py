"""The executor: `ActionStarted` is durable before an actuator is called, every outcome is
recorded, and an action whose outcome is in doubt after a crash is checked, never blindly re-run.

Where actuators run is a strategy: `inline` (in the caller's thread — simulations in virtual
time, where an action takes no real time) or a `WorkerPool` (threads, with a concurrency limit
per actuator — `onduty serve`, where an action may take seconds and the core must keep going).
Idempotent actuators are retried with exponential backoff; others run exactly once.

With `RunLocks` (a state directory), every run holds a lock named by its command id, and a
restart waits for an earlier run that may still be in progress (a program that outlived onduty,
a request the other side may still be applying) before it asks whether it took effect — at most
the run's timeout; a run still going after that is an unknown outcome, escalated, never re-run.
The wait happens where `spawn` runs the reconciliation: with run locks, use a `WorkerPool`.

Undo steps are settled the same way: an undo started before a crash (`UndoStarted` without its
`UndoFinished`) is waited for, then checked (`check` with the undo's command id), re-run when
idempotent, or recorded as finished with an unknown outcome (`UndoFinished(unknown=True)`),
which the core escalates — never run again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from structlog.contextvars import bound_contextvars
from tenacity import RetryError, Retrying, retry_if_result, stop_after_attempt, wait_exponential

from onduty.act.base import Actuator, ActuatorRegistry, Outcome
from onduty.act.checks import run_check
from onduty.act.runs import DEFAULT_TIMEOUT_S, EarlierState, InFlight, RunLocks, in_flight_of
from onduty.commands import CheckOutcome, RunCheck, StartAction, StartUndo
from onduty.events import (
    ActionFailed,
    ActionOutcomeUnknown,
    ActionStarted,
    ActionSucceeded,
    CheckCompleted,
    Payload,
    UndoFinished,
    UndoStarted,
)

logger = logging.getLogger("onduty.act")

Record = Callable[[Payload, str], None]
"""Append an input event to the log (durably) and let the core react: (payload, stream)."""

RecordMany = Callable[[list[tuple[Payload, str]]], None]
"""The same for several inputs at once: one durable batch."""

Spawn = Callable[[Actuator, Callable[[], None]], None]
"""Run a piece of work for an actuator: now, or on a worker."""


class _Checks:
    """Verification checks share one concurrency limit, like an actuator."""

    idempotent = True
    can_check = False


_CHECKS: Any = _Checks()


def inline(actuator: Actuator, work: Callable[[], None]) -> None:
    work()


class Executor:
    def __init__(
        self,
        actuators: ActuatorRegistry,
        record: Record,
        *,
        spawn: Spawn = inline,
        attempts: int = 1,
        backoff_s: float = 0.5,
        record_many: RecordMany | None = None,
        runs: RunLocks | None = None,
    ) -> None:
        self._actuators = actuators
        self._runs = runs
        self._record = record
        self._record_many: RecordMany = record_many or self._each
        # Outcomes may be recorded asynchronously (a worker must not wait on the core):
        # `record` by default, or what `send_outcomes_to` installs.
        self._record_outcome: Record = record
        self._spawn = spawn
        self._attempts = attempts
        self._backoff_s = backoff_s

    def _each(self, items: list[tuple[Payload, str]]) -> None:
        for body, stream in items:
            self._record(body, stream)

    def send_outcomes_to(self, record: Record) -> None:
        self._record_outcome = record

    def start_many(self, commands: list[StartAction]) -> None:
        """Start several actions: their `ActionStarted` events become durable together (one
        commit), then each actuator runs."""
        records: list[tuple[Payload, str]] = []
        ready: list[tuple[StartAction, Actuator]] = []
        for command in commands:
            actuator = self._actuators.find(command.action)
            if actuator is None:
                records.append(
                    (
                        ActionFailed(
                            command_id=command.command_id,
                            error=f"no actuator is configured for action {command.action!r}",
                        ),
                        command.incident_id,
                    )
                )
                continue
            records.append(
                (
                    ActionStarted(
                        command_id=command.command_id,
                        incident_id=command.incident_id,
                        action=command.action,
                        target=command.target,
                    ),
                    command.incident_id,
                )
            )
            ready.append((command, actuator))
        self._record_many(records)
        for command, actuator in ready:
            self._spawn(actuator, self._job(actuator, command))

    def _job(self, actuator: Actuator, command: StartAction | StartUndo) -> Callable[[], None]:
        def job() -> None:
            with bound_contextvars(incident_id=command.incident_id, command_id=command.command_id):
                self._report(command, self._run(actuator, command))

        return job

    def reconcile(self, command: CheckOutcome) -> None:
        """Settle an action (or an undo step) that was started before a crash but has no
        recorded outcome."""
        start = command.start
        actuator = self._actuators.find(start.action)
        if actuator is None:
            self._unknown(start, f"no actuator for {start.action!r} to check the outcome with")
            return

        def job() -> None:
            with bound_contextvars(incident_id=start.incident_id, command_id=start.command_id):
                self._settle(actuator, start)

        self._spawn(actuator, job)

    def sweep_runs(self, in_doubt: list[str]) -> None:
        """Remove the run locks of every command but those still in doubt (at start-up)."""
        if self._runs is not None:
            self._runs.sweep(in_doubt)

    def _settle(self, actuator: Actuator, start: StartAction | StartUndo) -> None:
        runs = self._runs
        if runs is None:
            self._decide(actuator, start, "")
            return
        kind = in_flight_of(actuator)
        if not (actuator.can_check or actuator.idempotent or kind is InFlight.PROCESS):
            # Nothing to wait for: the outcome stays unknown whatever the earlier run did.
            still = " (an earlier run still holds its lock)" if runs.held(start.command_id) else ""
            self._decide(actuator, start, still + _doing(runs.record(start.command_id)))
            runs.forget(start.command_id)
            return
        bound = start.timeout_s if start.timeout_s > 0 else DEFAULT_TIMEOUT_S
        if runs.held(start.command_id):
            logger.info(
                "%s %s: an earlier run is still in progress; waiting for it (at most its "
                "timeout) before settling its outcome",
                start.action,
                start.command_id,
            )
        earlier = runs.wait(start.command_id, in_flight=kind, timeout_s=bound)
        if earlier.state is EarlierState.CANCELLED:
            return  # shutting down: still in doubt, settled at the next start
        try:
            if earlier.state is EarlierState.RUNNING:
                self._unknown(start, earlier.detail + _doing(earlier.record))
                return
            self._decide(actuator, start, _doing(earlier.record))
        finally:
            runs.forget(start.command_id)

    def _decide(self, actuator: Actuator, start: StartAction | StartUndo, note: str) -> None:
        """The earlier run, if any, is over: check, re-run (idempotent) or escalate."""
        if actuator.can_check:
            try:
                outcome = actuator.check(start.command_id)
            except Exception as error:  # the checked system could not say: unknown
                self._unknown(start, f"checking the outcome failed: {error}")
                return
            if outcome is None:
                # It never took effect: running it now is its first run, not a repeat.
                outcome = self._run(actuator, start)
            self._report(start, outcome)
        elif actuator.idempotent:
            self._report(start, self._run(actuator, start))
        else:
            what = "undo" if isinstance(start, StartUndo) else "action"
            self._unknown(
                start,
                f"the process stopped while the {what} ran; it is not idempotent and its "
                "outcome cannot be checked, so it is not run again" + note,
            )

    def verify(self, command: RunCheck, now: Callable[[], datetime]) -> None:
        """Run a verification check off the core's thread; its result comes back as an input."""

        def job() -> None:
            with bound_contextvars(incident_id=command.incident_id, command_id=command.command_id):
                check()

        def check() -> None:
            try:
                ok, detail = run_check(command.check, command.deadline, now)
            except Exception as error:  # a broken check fails verification; it never crashes
                ok, detail = False, f"the check could not run: {type(error).__name__}: {error}"
            self._record_outcome(
                CheckCompleted(command_id=command.command_id, ok=ok, detail=detail[:2000]),
                command.incident_id,
            )

        self._spawn(_CHECKS, job)

    def undo(self, command: StartUndo) -> None:
        stream = command.incident_id
        self._record(
            UndoStarted(
                command_id=command.command_id,
                of_command_id=command.of_command_id,
                action=command.action,
                target=command.target,
            ),
            stream,
        )
        actuator = self._actuators.find(command.action)

        if actuator is None:
            self._report(
                command,
                Outcome(False, error=f"no actuator is configured for action {command.action!r}"),
            )
            return
        self._spawn(actuator, self._job(actuator, command))

    def _run(self, actuator: Actuator, command: StartAction | StartUndo) -> Outcome:
        """Run once, or — for an idempotent actuator — retry failures with backoff; under the
        command's run lock when there are run locks."""
        if self._runs is None:
            return self._attempts_of(actuator, command)
        bound = command.timeout_s if command.timeout_s > 0 else DEFAULT_TIMEOUT_S
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._runs.hold(command.command_id, timeout_s=bound))
            except OSError as error:
                return Outcome(False, error=f"refused: cannot take the run lock: {error}")
            return self._attempts_of(actuator, command)

    def _attempts_of(self, actuator: Actuator, command: StartAction | StartUndo) -> Outcome:
        attempts = self._attempts if actuator.idempotent else 1
        if attempts <= 1:
            return self._once(actuator, command)
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=self._backoff_s, max=10 * self._backoff_s),
            retry=retry_if_result(lambda outcome: not outcome.ok),
            reraise=False,
        )
        try:
            outcome: Outcome = retrying(self._once, actuator, command)
        except RetryError as error:
            last = error.last_attempt.result()
            return Outcome(False, last.output, f"{last.error} (after {attempts} attempts)")
        return outcome

    @staticmethod
    def _once(actuator: Actuator, command: StartAction | StartUndo) -> Outcome:
        try:
            return actuator.run(command)
        except Exception as error:  # an actuator bug must become a recorded failure, not a crash
            return Outcome(False, error=f"{type(error).__name__}: {error}")

    def _unknown(self, start: StartAction | StartUndo, reason: str) -> None:
        _log_outcome(start, "unknown", reason)
        if isinstance(start, StartUndo):
            self._record_outcome(
                UndoFinished(
                    command_id=start.command_id,
                    of_command_id=start.of_command_id,
                    ok=False,
                    error=f"outcome unknown: {reason}"[:2000],
                    unknown=True,
                ),
                start.incident_id,
            )
            return
        self._record_outcome(
            ActionOutcomeUnknown(command_id=start.command_id, reason=reason), start.incident_id
        )

    def _report(self, command: StartAction | StartUndo, outcome: Outcome) -> None:
        _log_outcome(command, "succeeded" if outcome.ok else "failed", outcome.error)
        if isinstance(command, StartUndo):
            self._record_outcome(
                UndoFinished(
                    command_id=command.command_id,
                    of_command_id=command.of_command_id,
                    ok=outcome.ok,
                    error=outcome.error[:2000],
                ),
                command.incident_id,
            )
        elif outcome.ok:
            self._record_outcome(
                ActionSucceeded(command_id=command.command_id, output=outcome.output[:2000]),
                command.incident_id,
            )
        else:
            self._record_outcome(
                ActionFailed(command_id=command.command_id, error=outcome.error[:2000]),
                command.incident_id,
            )


def _log_outcome(command: StartAction | StartUndo, outcome: str, error: str) -> None:
    """One line per finished action or undo step (the event log holds the outcome; the line
    lets whoever reads the service's log follow what it did)."""
    what = "undo" if isinstance(command, StartUndo) else "action"
    logger.info(
        "%s %s on %s %s%s",
        what,
        command.action,
        command.target,
        outcome,
        f": {error[:500]}" if error and outcome != "succeeded" else "",
        extra={
            "incident_id": command.incident_id,
            "command_id": command.command_id,
            "action": command.action,
            "target": command.target,
            "outcome": outcome,
        },
    )


def _doing(record: dict[str, Any]) -> str:
    doing = record.get("doing")
    return f"; when onduty stopped, the run was {doing}" if isinstance(doing, str) and doing else ""
