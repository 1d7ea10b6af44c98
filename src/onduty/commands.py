"""What the core asks the shell to do. Commands carry everything needed to act, and ids that
are derived from the events that caused them, so a re-issued command is recognised."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StartAction:
    command_id: str
    incident_id: str
    action: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 30.0


@dataclass(frozen=True)
class StartUndo:
    command_id: str
    of_command_id: str
    incident_id: str
    action: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 30.0


@dataclass(frozen=True)
class ScheduleTimer:
    """Feed a `Tick` back to the core at `due` (event time)."""

    timer_id: str
    due: datetime


@dataclass(frozen=True)
class Notify:
    """Tell humans: an escalation, an approval request, or a suggestion to act."""

    kind: str  # "escalation" | "approval" | "suggestion" | "resolved"
    incident_id: str
    channels: tuple[str, ...]
    """Channel names in fallback order: the next is tried when one keeps failing."""
    message: str
    approval_id: str | None = None
    tier: int = 0
    dedup_key: str = ""
    """Stable for one notification: a receiver that gets it twice can tell."""
    title: str = ""
    service: str | None = None


@dataclass(frozen=True)
class RunCheck:
    """Verify an action by a check of the world (a probe, a query) until `deadline`; report
    the result as a `CheckCompleted` input."""

    command_id: str
    incident_id: str
    check: dict[str, Any]
    deadline: datetime


@dataclass(frozen=True)
class CheckOutcome:
    """Ask an actuator whether an action (or an undo step) whose outcome was never recorded
    took effect, after waiting for a run of it still in progress; record what it says, or the
    outcome as unknown. Never a blind re-run of what is not idempotent."""

    start: StartAction | StartUndo


Command = StartAction | StartUndo | ScheduleTimer | Notify | CheckOutcome | RunCheck
