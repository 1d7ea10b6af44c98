"""The executor: `ActionStarted` is durable before an actuator is called, every outcome is
recorded, and an action whose outcome is in doubt after a crash is checked, never blindly re-run.
"""

from __future__ import annotations

from collections.abc import Callable

from onduty.act.base import ActuatorRegistry, Outcome
from onduty.commands import CheckOutcome, StartAction, StartUndo
from onduty.events import (
    ActionFailed,
    ActionOutcomeUnknown,
    ActionStarted,
    ActionSucceeded,
    Payload,
    UndoFinished,
    UndoStarted,
)

Record = Callable[[Payload, str], None]
"""Append an input event to the log (durably) and let the core react: (payload, stream)."""


class Executor:
    def __init__(self, actuators: ActuatorRegistry, record: Record) -> None:
        self._actuators = actuators
        self._record = record

    def start(self, command: StartAction) -> None:
        actuator = self._actuators.find(command.action)
        stream = command.incident_id
        if actuator is None:
            # Nothing was started, so nothing can have happened: record the failure directly.
            self._record(
                ActionFailed(
                    command_id=command.command_id,
                    error=f"no actuator is configured for action {command.action!r}",
                ),
                stream,
            )
            return
        self._record(
            ActionStarted(
                command_id=command.command_id,
                incident_id=command.incident_id,
                action=command.action,
                target=command.target,
            ),
            stream,
        )
        self._report(command, self._run(command))

    def reconcile(self, command: CheckOutcome) -> None:
        """Settle an action that was started before a crash but has no recorded outcome."""
        start = command.start
        actuator = self._actuators.find(start.action)
        stream = start.incident_id
        if actuator is None:
            self._record(
                ActionOutcomeUnknown(
                    command_id=start.command_id,
                    reason=f"no actuator for {start.action!r} to check the outcome with",
                ),
                stream,
            )
            return
        if actuator.can_check:
            outcome = actuator.check(start.command_id)
            if outcome is None:
                # It never took effect: running it now is its first run, not a repeat.
                outcome = self._run(start)
            self._report(start, outcome)
        elif actuator.idempotent:
            self._report(start, self._run(start))
        else:
            self._record(
                ActionOutcomeUnknown(
                    command_id=start.command_id,
                    reason="the process stopped while the action ran; it is not idempotent and "
                    "its outcome cannot be checked, so it is not run again",
                ),
                stream,
            )

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
        outcome = (
            self._run(command)
            if actuator is not None
            else Outcome(False, error=f"no actuator is configured for action {command.action!r}")
        )
        self._record(
            UndoFinished(
                command_id=command.command_id,
                of_command_id=command.of_command_id,
                ok=outcome.ok,
                error=outcome.error,
            ),
            stream,
        )

    def _run(self, command: StartAction | StartUndo) -> Outcome:
        actuator = self._actuators.find(command.action)
        if actuator is None:
            return Outcome(False, error=f"no actuator is configured for action {command.action!r}")
        try:
            return actuator.run(command)
        except Exception as error:  # an actuator bug must become a recorded failure, not a crash
            return Outcome(False, error=f"{type(error).__name__}: {error}")

    def _report(self, command: StartAction, outcome: Outcome) -> None:
        if outcome.ok:
            self._record(
                ActionSucceeded(command_id=command.command_id, output=outcome.output[:2000]),
                command.incident_id,
            )
        else:
            self._record(
                ActionFailed(command_id=command.command_id, error=outcome.error[:2000]),
                command.incident_id,
            )
