"""The deterministic core: `Manager.handle(event) -> Decision`.

The manager never reads a clock, draws a random number or does I/O. Time reaches it only as event
timestamps (and `Tick` events); the outside world reaches it only as events. Its state changes
only by applying events, inputs and its own decisions alike, in log order, so folding a log
reproduces the state exactly and re-handling the log's inputs reproduces every decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from onduty.commands import CheckOutcome, Command, RunCheck, ScheduleTimer
from onduty.config import Config, policy_version
from onduty.correlate.correlator import Correlator
from onduty.events import (
    Acknowledged,
    ActionFailed,
    ActionOutcomeUnknown,
    ActionProposed,
    ActionStarted,
    ActionSucceeded,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    AutonomyChanged,
    CheckCompleted,
    Escalated,
    Event,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Origin,
    Payload,
    PolicyActivated,
    PolicyEvaluated,
    SignalReceived,
    SilenceCreated,
    SilenceExpired,
    Tick,
    UndoFinished,
    UndoStarted,
    VerificationFailed,
    VerificationPassed,
    payload,
)
from onduty.expressions import Condition
from onduty.lifecycle.actions import ActionLifecycle
from onduty.lifecycle.base import Candidate, Configured, Decision, derive_id
from onduty.lifecycle.incidents import _REDELIVERED, IncidentLifecycle

__all__ = ["Decision", "Manager", "derive_id"]
from onduty.state import (
    ActionStatus,
    State,
    UndoStatus,
)


class Manager(IncidentLifecycle, ActionLifecycle):
    def __init__(self, state: State | None = None, *, config_override: Config | None = None):
        self.state = state if state is not None else State()
        self._override = config_override
        self._configured: Configured | None = None
        self._correlator: Correlator | None = None
        self._candidate: Candidate | None = None
        self._load_candidate()
        if self.state.policy is not None:
            self._activate(self.state.policy)
        self._cause: Event | None = None
        self._events: list[Event] = []
        self._commands: list[Command] = []

    # ------------------------------------------------------------------ public surface

    @property
    def config(self) -> Config | None:
        return self._configured.config if self._configured else None

    def handle(self, event: Event, body: Payload | None = None) -> Decision:
        """Apply an input event and decide what follows from it. `body` is the event's typed
        payload when the caller has it (it built the event from it), saving a validation."""
        if event.origin is not Origin.INPUT:
            raise ValueError(f"{event.type} is a decision of the core, not an input")
        if body is None or type(body).__name__ != event.type:
            body = payload(event)
        prior = self._prior(body)
        self._apply(body, event)
        self._cause, self._events, self._commands = event, [], []
        try:
            react = self._reactions.get(type(body))
            if react is not None and self._configured is not None:
                react(self, body, prior)
            return Decision(tuple(self._events), tuple(self._commands))
        finally:
            self._cause = None

    def apply(self, event: Event) -> None:
        """Fold one event (input or decision) into the state."""
        self._apply(payload(event), event)

    def _apply(self, body: Payload, event: Event) -> None:
        apply = self._appliers.get(type(body))
        if apply is not None:
            apply(self, body, event)
        self.state.applied += 1
        self.state.last_ts = event.ts

    def pending_timers(self) -> list[ScheduleTimer]:
        """Every deadline the core is waiting for; the shell re-arms these after a restart."""
        timers: list[ScheduleTimer] = []
        if self._configured is None:
            return timers
        now = self.state.last_ts
        muted = False
        for incident in self.state.incidents.values():
            muted = muted or bool(incident.muted)
            if not incident.planned:
                timers.append(ScheduleTimer(f"ready:{incident.incident_id}", incident.ready_at))
            elif incident.flapping and (calm := self._calm_at(incident)) is not None:
                timers.append(ScheduleTimer(f"calm:{incident.incident_id}", calm))
        for incident in self.state.incidents.values():
            if incident.escalation_due is not None and not incident.acknowledged:
                timers.append(
                    ScheduleTimer(f"escalate:{incident.incident_id}", incident.escalation_due)
                )
        change = self._correlation().next_silence_change(now) if muted and now else None
        if change is not None:
            timers.append(ScheduleTimer("silences", change))
        timeout = self._configured.config.correlation.resolve_timeout
        if timeout is not None:
            for signal in self.state.signals.values():
                if signal.status == "firing" and signal.last_seen is not None:
                    timers.append(
                        ScheduleTimer(f"stale:{signal.fingerprint}", signal.last_seen + timeout)
                    )
        for action in self.state.actions.values():
            if action.status is ActionStatus.VERIFYING and action.verify_deadline is not None:
                timers.append(ScheduleTimer(f"verify:{action.command_id}", action.verify_deadline))
        for approval in self.state.approvals.values():
            timers.append(ScheduleTimer(f"approval:{approval.approval_id}", approval.expires_at))
        return sorted(timers, key=lambda timer: (timer.due, timer.timer_id))

    def in_doubt(self) -> list[Command]:
        """After a restart: allowed actions never started, and started ones with no outcome
        (checked, never blindly re-run); then undo steps decided but never started (run now,
        once), and started ones with no outcome (settled the same way as actions)."""
        commands: list[Command] = []
        for action in self.state.actions.values():
            if action.status is ActionStatus.ALLOWED:
                commands.append(self._start_command(action))
            elif action.status is ActionStatus.STARTED:
                commands.append(CheckOutcome(self._start_command(action)))
            elif (
                action.status is ActionStatus.VERIFYING
                and action.verify_deadline is not None
                and (check := self._verification_check(action)) is not None
            ):  # the check in progress died with the process: run it again (it only reads)
                commands.append(
                    RunCheck(action.command_id, action.incident_id, check, action.verify_deadline)
                )
        for undo in self._undos():
            command = self._undo_command(undo)
            commands.append(command if undo.status is UndoStatus.DECIDED else CheckOutcome(command))
        return commands

    def snapshot(self) -> dict[str, Any]:
        return self.state.to_snapshot()

    @classmethod
    def from_snapshot(
        cls, data: dict[str, Any], *, config_override: Config | None = None
    ) -> Manager:
        return cls(State.from_snapshot(data), config_override=config_override)

    # ------------------------------------------------------------------ configuration

    def _activate(self, document: dict[str, Any]) -> None:
        config = self._override or Config.model_validate(document)
        self._configured = Configured(config)
        self._correlator = Correlator(self.state, config.correlation)

    # ------------------------------------------------------------------ emitting

    # ------------------------------------------------------------------ applying events

    def _on_tick(self, body: Tick, prior: None) -> None:
        self._tick_actions()
        self._tick_incidents()

    def _prior(self, body: Payload) -> Any:
        """What a reaction needs to know about the state before its input is applied."""
        if isinstance(body, SignalReceived):
            if body.delivery_id is not None and body.delivery_id in self.state.deliveries:
                return _REDELIVERED
            known = self.state.signals.get(body.fingerprint)
            return (known.status, known.incident_id) if known else None
        if isinstance(body, ApprovalGranted | ApprovalDenied):
            approval = self.state.approvals.get(body.approval_id)
            return replace(approval, approvers=list(approval.approvers)) if approval else None
        if isinstance(body, ActionFailed | ActionOutcomeUnknown):
            action = self.state.actions.get(body.command_id)
            return action.status if action else None
        if isinstance(body, UndoFinished):
            return self.state.undos.get(body.command_id)  # removed, never changed, by applying
        return None

    def _apply_policy(self, body: PolicyActivated, event: Event) -> None:
        state = self.state
        if body.role == "active":
            if state.policy is not None and state.policy != body.config:
                state.previous_policy = state.policy
            state.policy = body.config
            self._activate(body.config)
            state.policy_version = self._setup().config.version
            if state.candidate is not None and policy_version(state.candidate) == body.version:
                body = body.model_copy(update={"role": "withdrawn"})  # promoted: no candidate
            else:
                return
        if body.role == "withdrawn":
            state.candidate, state.candidate_role, state.candidate_selector = None, "", None
        else:
            state.candidate, state.candidate_role = body.config, body.role
            state.candidate_selector = body.selector
        self._load_candidate()

    def _load_candidate(self) -> None:
        state = self.state
        if state.candidate is None:
            self._candidate = None
            return
        selector = state.candidate_selector
        self._candidate = Candidate(
            Configured(Config.model_validate(state.candidate)),
            state.candidate_role,
            Condition.compile(selector) if selector else None,
        )

    def _apply_autonomy(self, body: AutonomyChanged, event: Event) -> None:
        self.state.autonomy_overrides[body.service] = body.level

    # ------------------------------------------------------------------ reactions

    # ------------------------------------------------------------------ helpers

    _appliers: dict[type[Payload], Callable[[Manager, Any, Event], None]] = {}
    _reactions: dict[type[Payload], Callable[[Manager, Any, Any], None]] = {}


Manager._appliers = {
    PolicyActivated: Manager._apply_policy,
    AutonomyChanged: Manager._apply_autonomy,
    SignalReceived: Manager._apply_signal,
    SilenceCreated: Manager._apply_silence,
    SilenceExpired: Manager._apply_silence,
    Tick: Manager._apply_tick,
    IncidentOpened: Manager._apply_opened,
    IncidentUpdated: Manager._apply_updated,
    IncidentResolved: Manager._apply_resolved,
    ActionProposed: Manager._apply_proposed,
    PolicyEvaluated: Manager._apply_evaluated,
    ApprovalRequested: Manager._apply_approval_requested,
    ApprovalGranted: Manager._apply_approval_answer,
    ApprovalDenied: Manager._apply_approval_answer,
    ApprovalExpired: Manager._apply_approval_expired,
    ActionStarted: Manager._apply_started,
    ActionSucceeded: Manager._apply_succeeded,
    ActionFailed: Manager._apply_failed,
    ActionOutcomeUnknown: Manager._apply_failed,
    VerificationPassed: Manager._apply_verification,
    VerificationFailed: Manager._apply_verification,
    Escalated: Manager._apply_escalated,
    Acknowledged: Manager._apply_acknowledged,
    UndoStarted: Manager._apply_undo_started,
    UndoFinished: Manager._apply_undo_finished,
}

Manager._reactions = {
    SignalReceived: Manager._on_signal,
    ApprovalGranted: Manager._on_approval_granted,
    ApprovalDenied: Manager._on_approval_denied,
    ActionSucceeded: Manager._on_succeeded,
    ActionFailed: Manager._on_failed,
    ActionOutcomeUnknown: Manager._on_failed,
    Tick: Manager._on_tick,
    CheckCompleted: Manager._on_check,
    SilenceCreated: Manager._on_silence,
    SilenceExpired: Manager._on_silence,
    UndoFinished: Manager._on_undo_finished,
}
