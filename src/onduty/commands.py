"""What the core asks the shell to do. Commands carry everything needed to act, and ids that
are derived from the events that caused them, so a re-issued command is recognised."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Self


@dataclass(frozen=True)
class RunCommand:
    """What every run of an actuator carries: an action, or an undo step."""

    command_id: str
    """Derived from the events that caused it: the run lock and the outcome carry it, so a
    re-issued command after a restart is recognised instead of run twice."""
    incident_id: str
    action: str
    """The action's name, as the `actuators:` section maps it to an actuator."""
    target: str
    """What it acts on (an instance, a service), as the runbook step named it."""
    params: dict[str, Any] = field(default_factory=dict)
    """The step's parameters, already rendered from its templates."""
    timeout_s: float = 30.0
    """After this, the run is stopped and its outcome is recorded as unknown."""

    @classmethod
    def of(cls, held: object, **extra: Any) -> Self:
        """The command for a run the core holds (an `ActionState`, an `UndoState`): the fields
        they share are copied from it, `extra` adds the rest."""
        return cls(**{name: getattr(held, name) for name in _RUN_FIELDS}, **extra)


_RUN_FIELDS = tuple(item.name for item in fields(RunCommand))


@dataclass(frozen=True)
class StartAction(RunCommand):
    """Run an approved action through the actuator that handles `action`."""


@dataclass(frozen=True)
class StartUndo(RunCommand):
    """Run one of its runbook's undo steps for an action that failed or did not fix its
    incident (`action` is the undo step's own action)."""

    of_command_id: str = field(kw_only=True)
    """The action being undone: the undo's run lock and outcome are tied to it."""


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


@dataclass(frozen=True)
class CountAcrossFleet:
    """Count an action against its fleet-wide guardrails (`counts`, each a `FleetCount`'s
    fields) at event time `at`, and report the answer as a `FleetCountAnswered` input. Kept by
    `command_id` where the counts live: asking again after a restart counts once."""

    command_id: str
    incident_id: str
    counts: tuple[dict[str, Any], ...]
    at: datetime


@dataclass(frozen=True)
class ConsultAdvisor:
    """Ask the language model for a proposal (`request`: an `AdviceRequested`'s fields) and
    report its answer as an `AdviceReceived` input, or why there is none as `AdviceFailed`.
    Kept by `request_id`: asked again after a restart, answered once."""

    request_id: str
    incident_id: str
    request: dict[str, Any]


Command = (
    StartAction
    | StartUndo
    | ScheduleTimer
    | Notify
    | CheckOutcome
    | RunCheck
    | CountAcrossFleet
    | ConsultAdvisor
)
