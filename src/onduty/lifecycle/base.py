"""What the lifecycles share: a decision's ids, the emitter of decisions, what the state held
before an input, and paging a human."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from onduty.commands import Command, Notify, ScheduleTimer
from onduty.events import (
    ActionFailed,
    ActionOutcomeUnknown,
    AdviceFailed,
    AdviceReceived,
    ApprovalDenied,
    ApprovalGranted,
    Escalated,
    Event,
    FleetCountAnswered,
    IncidentUpdated,
    Payload,
    SignalReceived,
    UndoFinished,
    make_event,
)
from onduty.lifecycle.setup import Setup
from onduty.state import ActionStatus, Approval, Incident, State, UndoState


@dataclass(frozen=True)
class Decision:
    """What handling one input produced: facts to record (in order), then effects to run."""

    events: tuple[Event, ...] = ()
    commands: tuple[Command, ...] = ()


def derive_id(prefix: str, *parts: str) -> str:
    """A stable id from the facts that caused it: a re-issued command gets the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
    return f"{prefix}-{digest}"


class Emitter:
    """The decisions of the input being handled: each event is applied to the state at once
    (through `apply`) and recorded; commands are collected for the shell."""

    def __init__(self, apply: Callable[[Payload, Event], None]) -> None:
        self._apply = apply
        self.cause: Event | None = None
        self.events: list[Event] = []
        self.commands: list[Command] = []

    def begin(self, cause: Event) -> None:
        self.cause, self.events, self.commands = cause, [], []

    def end(self) -> Decision:
        self.cause = None
        return Decision(tuple(self.events), tuple(self.commands))

    @property
    def now(self) -> datetime:
        """The time of the input being handled: every decision it causes shares it."""
        assert self.cause is not None, "no input is being handled"
        return self.cause.ts

    @property
    def actor(self) -> str:
        assert self.cause is not None, "no input is being handled"
        return self.cause.actor

    def emit(self, body: Payload, stream: str) -> Event:
        cause = self.cause
        assert cause is not None, "no input is being handled"
        event = make_event(
            body,
            id=f"{cause.id}:{len(self.events)}",
            ts=cause.ts,
            stream=stream,
            causation_id=cause.id,
            correlation_id=stream,
        )
        self._apply(body, event)  # the typed body is at hand: no need to validate it again
        self.events.append(event)
        return event

    def note(
        self, incident_id: str, change: str, detail: str = "", *, fingerprint: str | None = None
    ) -> Event:
        """Record a change to an incident (`IncidentUpdated`)."""
        update = IncidentUpdated(
            incident_id=incident_id, change=change, fingerprint=fingerprint, detail=detail
        )
        return self.emit(update, incident_id)

    def command(self, command: Command) -> None:
        self.commands.append(command)


@dataclass(frozen=True)
class Prior:
    """What a reaction needs to know about the state as it was before its input was applied
    (applying it may change or remove exactly that)."""

    redelivered: bool = False
    """A `SignalReceived` whose delivery id was seen before: the same notification again."""
    signal_status: str | None = None
    """The status of the signal of a `SignalReceived`, None when it was not known"""
    signal_incident: str = ""
    """and the incident it belonged to ("" for none)."""
    approval: Approval | None = None
    """The approval an answer is for, when it was pending."""
    action: ActionStatus | None = None
    """The status of the action an `ActionFailed` or `ActionOutcomeUnknown` is about."""
    undo: UndoState | None = None
    """The undo step an `UndoFinished` settles (applying removes it)."""
    waiting: dict[str, Any] | None = None
    """The `FleetCountRequested` a `FleetCountAnswered` answers (applying removes it)."""
    advice: dict[str, Any] | None = None
    """The `AdviceRequested` an `AdviceReceived` or `AdviceFailed` answers (applying removes
    it)."""

    @classmethod
    def of(cls, state: State, body: Payload) -> Prior:
        if isinstance(body, SignalReceived):
            if body.delivery_id is not None and body.delivery_id in state.deliveries:
                return cls(redelivered=True)
            known = state.signals.get(body.fingerprint)
            if known is None:
                return cls()
            return cls(signal_status=known.status, signal_incident=known.incident_id)
        if isinstance(body, ApprovalGranted | ApprovalDenied):
            approval = state.approvals.get(body.approval_id)
            copy = replace(approval, approvers=list(approval.approvers)) if approval else None
            return cls(approval=copy)
        if isinstance(body, ActionFailed | ActionOutcomeUnknown):
            action = state.actions.get(body.command_id)
            return cls(action=action.status if action else None)
        if isinstance(body, UndoFinished):
            return cls(undo=state.undos.get(body.command_id))  # removed, never changed
        if isinstance(body, FleetCountAnswered):
            return cls(waiting=state.waiting_fleet.get(body.command_id))  # removed likewise
        if isinstance(body, AdviceReceived | AdviceFailed):
            pending = state.advisor.pending if state.advisor is not None else {}
            return cls(advice=pending.get(body.request_id))  # removed likewise
        return cls()


@dataclass(eq=False, repr=False)
class Pager:
    """Hands incidents to humans along the escalation tiers of the active configuration."""

    setup: Setup
    emitter: Emitter

    def escalate(
        self,
        incident: Incident,
        reason: str,
        command_id: str | None = None,
        tier: int | None = None,
    ) -> None:
        """Page `tier` (by default the tier already paged, or the first), and wait for an
        acknowledgement before paging the next one."""
        emitter = self.emitter
        tiers = self.setup.active.config.escalation.tiers(incident.service)
        level = min(max(incident.escalation_tier, 0) if tier is None else tier, len(tiers) - 1)
        event = emitter.emit(
            Escalated(
                incident_id=incident.incident_id,
                reason=reason,
                tier=level,
                notify=list(tiers[level].notify),
                command_id=command_id,
            ),
            incident.incident_id,
        )
        emitter.command(
            Notify(
                "escalation",
                incident.incident_id,
                tuple(tiers[level].notify),
                f"{incident.title}: {reason}",
                tier=level,
                dedup_key=event.id,
                title=incident.title,
                service=incident.service,
            )
        )
        if incident.escalation_due is not None:
            emitter.command(
                ScheduleTimer(f"escalate:{incident.incident_id}", incident.escalation_due)
            )
