"""The deterministic core: `Manager.handle(event) -> Decision`.

The manager never reads a clock, draws a random number or does I/O. Time reaches it only as event
timestamps (and `Tick` events); the outside world reaches it only as events. Its state changes
only by applying events, inputs and its own decisions alike, in log order, so folding a log
reproduces the state exactly and re-handling the log's inputs reproduces every decision.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Protocol

from onduty.commands import CheckOutcome, Command, RunCheck, ScheduleTimer
from onduty.config import Config, policy_version
from onduty.events import (
    AutonomyChanged,
    Event,
    KillSwitchCleared,
    KillSwitchSet,
    Origin,
    Payload,
    PolicyActivated,
    Tick,
    payload,
)
from onduty.lifecycle.actions import ActionLifecycle
from onduty.lifecycle.advisor import Advisor
from onduty.lifecycle.base import Decision, Emitter, Pager, Prior, derive_id
from onduty.lifecycle.incidents import IncidentLifecycle
from onduty.lifecycle.learning import Learning
from onduty.lifecycle.quality import SourceQuality
from onduty.lifecycle.safemode import SafeModes
from onduty.lifecycle.setup import Setup
from onduty.lifecycle.undo import Undos
from onduty.state import ActionStatus, Incident, KillSwitch, State, UndoStatus, kill_switch_key

__all__ = ["Decision", "Manager", "derive_id"]

Applier = Callable[[Payload, Event], None]
Reaction = Callable[[Payload, Prior], None]


class Part(Protocol):
    """A piece of the core: how it applies events to the state, and how it reacts to inputs
    (tables of plain functions taking the part first, built in its class body). A part may also
    declare `OBSERVERS`: folds of events another part applies, run before that applier, so they
    see the state as the event found it (a redelivery, a newly firing signal)."""

    APPLIERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]]
    REACTIONS: ClassVar[dict[type[Payload], Callable[[Any, Any, Prior], None]]]


Handlers = tuple[
    dict[type[Payload], Applier], dict[type[Payload], Reaction], dict[type[Payload], list[Applier]]
]


def handlers(*parts: Part) -> Handlers:
    """The parts' appliers, reactions and observers, bound to them. An event type is applied by
    one part at most, and reacted to by one part at most: a second claim is a wiring error.
    Several parts may observe one type; they do in the order the parts are given."""
    appliers: dict[type[Payload], Applier] = {}
    reactions: dict[type[Payload], Reaction] = {}
    observers: dict[type[Payload], list[Applier]] = {}
    for part in parts:
        for table, bound in ((part.APPLIERS, appliers), (part.REACTIONS, reactions)):
            for kind, function in table.items():
                if kind in bound:
                    raise ValueError(f"{kind.__name__} is handled twice: by {type(part).__name__}")
                bound[kind] = partial(function, part)
        for kind, function in getattr(part, "OBSERVERS", {}).items():
            observers.setdefault(kind, []).append(partial(function, part))
    return appliers, reactions, observers


class Manager:
    """Composes the lifecycles and wires them: the incident lifecycle plans through the action
    lifecycle, which resolves through the incident lifecycle and undoes through `undos`. All of
    them share the state, the active configuration (`setup`) and the emitter of decisions."""

    def __init__(self, state: State | None = None, *, config_override: Config | None = None):
        self.state = state if state is not None else State()
        self.setup = Setup(self.state, config_override)
        self.emitter = Emitter(self._apply)
        pager = Pager(self.setup, self.emitter)
        self.incidents = IncidentLifecycle(self.state, self.setup, self.emitter, pager, self._plan)
        self.undos = Undos(self.state, self.setup, self.emitter, pager)
        self.learning = Learning(self.state, self.setup, self.emitter)
        self.advisor = Advisor(self.state, self.setup, self.emitter)
        self.actions = ActionLifecycle(
            self.state,
            self.setup,
            self.emitter,
            pager,
            self.incidents,
            self.undos,
            self.learning,
            self.advisor,
        )
        self.advisor.propose = self.actions.offer
        self.safe_modes = SafeModes(self.state, self.setup, self.emitter, pager)
        self.quality = SourceQuality(self.state, self.setup, self.emitter, self.safe_modes)
        self._appliers, self._reactions, self._observers = handlers(
            self,
            self.incidents,
            self.actions,
            self.undos,
            self.safe_modes,
            self.quality,
            self.learning,
            self.advisor,
        )
        self.setup.load_candidate()
        if self.state.policy is not None:
            self.setup.activate(self.state.policy)

    # ------------------------------------------------------------------ public surface

    @property
    def config(self) -> Config | None:
        configured = self.setup.configured
        return configured.config if configured else None

    def handle(self, event: Event, body: Payload | None = None) -> Decision:
        """Apply an input event and decide what follows from it. `body` is the event's typed
        payload when the caller has it (it built the event from it), saving a validation."""
        if event.origin is not Origin.INPUT:
            raise ValueError(f"{event.type} is a decision of the core, not an input")
        if body is None or type(body).__name__ != event.type:
            body = payload(event)
        prior = Prior.of(self.state, body)
        self._apply(body, event)
        self.emitter.begin(event)
        try:
            if self.setup.configured is not None:
                self.quality.decide()  # first: a proposal this input causes sees safe mode
                react = self._reactions.get(type(body))
                if react is not None:
                    react(body, prior)
        finally:
            decision = self.emitter.end()
        return decision

    def apply(self, event: Event) -> None:
        """Fold one event (input or decision) into the state."""
        self._apply(payload(event), event)

    def _apply(self, body: Payload, event: Event) -> None:
        kind = type(body)
        for observe in self._observers.get(kind, ()):
            observe(body, event)
        apply = self._appliers.get(kind)
        if apply is not None:
            apply(body, event)
        if kind is PolicyActivated:  # judged by the policy it activates
            self.quality.fold(body, event)
        self.state.applied += 1
        self.state.last_ts = event.ts

    def pending_timers(self) -> list[ScheduleTimer]:
        """Every deadline the core is waiting for; the shell re-arms these after a restart."""
        timers: list[ScheduleTimer] = []
        configured = self.setup.configured
        if configured is None:
            return timers
        now = self.state.last_ts
        muted = False
        for incident in self.state.incidents.values():
            muted = muted or bool(incident.muted)
            if not incident.planned:
                timers.append(ScheduleTimer(f"ready:{incident.incident_id}", incident.ready_at))
            elif incident.flapping and (calm := self.incidents.calm_at(incident)) is not None:
                timers.append(ScheduleTimer(f"calm:{incident.incident_id}", calm))
        for incident in self.state.incidents.values():
            if incident.escalation_due is not None and not incident.acknowledged:
                timers.append(
                    ScheduleTimer(f"escalate:{incident.incident_id}", incident.escalation_due)
                )
        change = self.setup.correlation.next_silence_change(now) if muted and now else None
        if change is not None:
            timers.append(ScheduleTimer("silences", change))
        timeout = configured.config.correlation.resolve_timeout
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
        timers.extend(self.quality.pending_timers())
        return sorted(timers, key=lambda timer: (timer.due, timer.timer_id))

    def in_doubt(self) -> list[Command]:
        """After a restart: allowed actions never started, and started ones with no outcome
        (checked, never blindly re-run); then undo steps decided but never started (run now,
        once), and started ones with no outcome (settled the same way as actions); fleet-wide
        counts and consultations of the advisor asked and never answered (asked again)."""
        commands: list[Command] = []
        for action in self.state.actions.values():
            if action.status is ActionStatus.ALLOWED:
                commands.append(self.actions.start_command(action))
            elif action.status is ActionStatus.STARTED:
                commands.append(CheckOutcome(self.actions.start_command(action)))
            elif (
                action.status is ActionStatus.VERIFYING
                and action.verify_deadline is not None
                and (check := self.actions.verification_check(action)) is not None
            ):  # the check in progress died with the process: run it again (it only reads)
                commands.append(
                    RunCheck(action.command_id, action.incident_id, check, action.verify_deadline)
                )
        for undo in self.undos.pending():
            command = self.undos.command(undo)
            commands.append(command if undo.status is UndoStatus.DECIDED else CheckOutcome(command))
        commands.extend(self.actions.waiting_for_fleet())
        commands.extend(self.advisor.pending())
        return commands

    def snapshot(self) -> dict[str, Any]:
        return self.state.to_snapshot()

    @classmethod
    def from_snapshot(
        cls, data: dict[str, Any], *, config_override: Config | None = None
    ) -> Manager:
        return cls(State.from_snapshot(data), config_override=config_override)

    # ------------------------------------------------------------------ wiring

    def _plan(self, incident: Incident) -> None:
        self.actions.plan(incident)

    # ------------------------------------------------------------------ the manager's own events

    def _on_tick(self, body: Tick, before: Prior) -> None:
        self.actions.tick()
        self.incidents.tick()

    def _apply_policy(self, body: PolicyActivated, event: Event) -> None:
        state = self.state
        if body.role == "active":
            if state.policy is not None and state.policy != body.config:
                state.previous_policy = state.policy
            state.policy = body.config
            self.setup.activate(body.config)
            state.policy_version = self.setup.active.config.version
            if state.candidate is not None and policy_version(state.candidate) == body.version:
                body = body.model_copy(update={"role": "withdrawn"})  # promoted: no candidate
            else:
                return
        if body.role == "withdrawn":
            state.candidate, state.candidate_role, state.candidate_selector = None, "", None
        else:
            state.candidate, state.candidate_role = body.config, body.role
            state.candidate_selector = body.selector
        self.setup.load_candidate()

    def _apply_autonomy(self, body: AutonomyChanged, event: Event) -> None:
        self.state.autonomy_overrides[body.service] = body.level

    def _apply_kill_switch(self, body: KillSwitchSet | KillSwitchCleared, event: Event) -> None:
        key = kill_switch_key(body.kind, body.name)
        if isinstance(body, KillSwitchSet):
            self.state.kill_switches[key] = KillSwitch(
                kind=body.kind,
                name=body.name,
                reason=body.reason,
                set_by=event.actor,
                set_at=event.ts,
            )
        else:
            self.state.kill_switches.pop(key, None)

    APPLIERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        PolicyActivated: _apply_policy,
        AutonomyChanged: _apply_autonomy,
        KillSwitchSet: _apply_kill_switch,
        KillSwitchCleared: _apply_kill_switch,
    }
    REACTIONS: ClassVar[dict[type[Payload], Callable[[Any, Any, Prior], None]]] = {
        Tick: _on_tick,
    }
