"""Undo: the runbook's undo steps of an action that failed or did not fix its incident, decided
as the failure is applied, run once, and tracked until each has finished."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from onduty.commands import StartUndo
from onduty.events import Event, Payload, UndoFinished, UndoStarted
from onduty.lifecycle.base import Emitter, Pager, Prior, derive_id
from onduty.lifecycle.setup import Setup
from onduty.state import ActionState, Incident, State, UndoState, UndoStatus


@dataclass(eq=False, repr=False)
class Undos:
    state: State
    setup: Setup
    emitter: Emitter
    pager: Pager

    def decide(self, action: ActionState, now: datetime) -> None:
        """`action` failed, or did not fix its incident: its runbook's undo steps are decided
        now, in reverse order (like a stack), and remembered until each has finished.

        This happens as the event is applied, not in a reaction, so folding the log learns of
        them exactly as handling it did: a restart runs an undo that was decided but never
        started, and settles one that started but has no recorded outcome (`in_doubt`). `now`
        is the event's time (a decision shares its cause's)."""
        incident = self.state.incidents.get(action.incident_id)
        if incident is None:
            return
        setup = self.setup.active
        context = self.setup.variables(incident, now)
        steps = list(enumerate(setup.agent.undo_steps(action.runbook, context)))
        for index, step in reversed(steps):
            if not step.target or step.target not in setup.owner:
                continue  # an unknown target means do nothing, for undo too
            command_id = derive_id("undo", action.command_id, str(index))
            self.state.undos.setdefault(
                command_id,
                UndoState(
                    command_id=command_id,
                    of_command_id=action.command_id,
                    incident_id=incident.incident_id,
                    step=index,
                    action=step.action,
                    target=step.target,
                    params=dict(step.params),
                    timeout_s=step.timeout_s,
                    decided=self.state.applied,
                    of_action=action.action,
                    of_target=action.target,
                    service=incident.service,
                    title=incident.title,
                ),
            )

    def run(self, command_id: str) -> None:
        """Run the undo steps decided for `command_id` that have not started."""
        for undo in self.pending(of_command_id=command_id):
            if undo.status is UndoStatus.DECIDED:
                self.emitter.command(self.command(undo))

    def pending(self, of_command_id: str | None = None) -> list[UndoState]:
        """Undo steps in flight (of one action), in the order they were decided."""
        return sorted(
            (
                undo
                for undo in self.state.undos.values()
                if of_command_id is None or undo.of_command_id == of_command_id
            ),
            key=lambda undo: (undo.decided, -undo.step),
        )

    @staticmethod
    def command(undo: UndoState) -> StartUndo:
        return StartUndo.of(undo, of_command_id=undo.of_command_id)

    def _apply_started(self, body: UndoStarted, event: Event) -> None:
        undo = self.state.undos.get(body.command_id)
        if undo is not None:
            undo.status = UndoStatus.STARTED

    def _apply_finished(self, body: UndoFinished, event: Event) -> None:
        self.state.undos.pop(body.command_id, None)

    def _on_finished(self, body: UndoFinished, before: Prior) -> None:
        """An undo whose outcome is unknown (onduty stopped while it ran, and it could not be
        checked) is never run again: a human must look at it."""
        undo = before.undo
        if undo is None or not body.unknown:
            return
        incident = self.state.incidents.get(undo.incident_id)
        if incident is None:  # closed since the undo was decided: page about it all the same
            now = self.emitter.now
            incident = Incident(
                incident_id=undo.incident_id,
                group_key={},
                service=undo.service,
                title=undo.title or undo.incident_id,
                opened_at=now,
                ready_at=now,
            )
        self.pager.escalate(
            incident,
            f"undo {undo.action} on {undo.target} (of {undo.of_action} on {undo.of_target}) "
            f"is in doubt and was not run again; check {undo.target} by hand: {body.error}",
            command_id=undo.command_id,
        )

    APPLIERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        UndoStarted: _apply_started,
        UndoFinished: _apply_finished,
    }
    REACTIONS: ClassVar[dict[type[Payload], Callable[[Any, Any, Prior], None]]] = {
        UndoFinished: _on_finished,
    }
