"""The deterministic core: `Manager.handle(event) -> Decision`.

The manager never reads a clock, draws a random number or does I/O. Time reaches it only as event
timestamps (and `Tick` events); the outside world reaches it only as events. Its state changes
only by applying events, inputs and its own decisions alike, in log order, so folding a log
reproduces the state exactly and re-handling the log's inputs reproduces every decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from onduty.commands import CheckOutcome, Command, Notify, ScheduleTimer, StartAction, StartUndo
from onduty.config import Autonomy, Config, Service, format_duration
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
    VerificationFailed,
    VerificationPassed,
    make_event,
    payload,
    to_json,
)
from onduty.expressions import prepare
from onduty.govern import Facts, Policy
from onduty.govern.facts import gather
from onduty.state import (
    IN_FLIGHT,
    TERMINAL,
    ActionRecord,
    ActionState,
    ActionStatus,
    Approval,
    Incident,
    SignalState,
    State,
)
from onduty.think import Proposal, RunbookAgent, arbitrate

# How long allowed actions are remembered for rate limits when no rule asks for longer.
_MIN_HISTORY_SECONDS = 86400.0
# How long a notification's delivery id is remembered to recognise a redelivery.
_DELIVERY_MEMORY = timedelta(hours=24)
_DELIVERY_SWEEP_AT = 10_000


@dataclass(frozen=True)
class Decision:
    """What handling one input produced: facts to record (in order), then effects to run."""

    events: tuple[Event, ...] = ()
    commands: tuple[Command, ...] = ()


def derive_id(prefix: str, *parts: str) -> str:
    """A stable id from the facts that caused it: a re-issued command gets the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
    return f"{prefix}-{digest}"


class _Configured:
    """Everything derived from the active configuration, rebuilt when a policy activates."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.policy = Policy(config)
        self.agent = RunbookAgent(config.runbooks)
        self.services: dict[str, Service] = {s.name: s for s in config.services}
        self.owner: dict[str, str] = {}
        for service in config.services:
            self.owner[service.name] = service.name
            for instance in service.instances:
                self.owner[instance] = service.name
        windows = [
            g.rate.per.total_seconds() for g in config.policy.guardrails if g.rate is not None
        ]
        self.history_seconds = max([_MIN_HISTORY_SECONDS, *windows])


class Manager:
    def __init__(self, state: State | None = None, *, config_override: Config | None = None):
        self.state = state if state is not None else State()
        self._override = config_override
        self._configured: _Configured | None = None
        self._correlator: Correlator | None = None
        if self.state.policy is not None:
            self._activate(self.state.policy)
        self._cause: Event | None = None
        self._events: list[Event] = []
        self._commands: list[Command] = []

    # ------------------------------------------------------------------ public surface

    @property
    def config(self) -> Config | None:
        return self._configured.config if self._configured else None

    def handle(self, event: Event) -> Decision:
        """Apply an input event and decide what follows from it."""
        if event.origin is not Origin.INPUT:
            raise ValueError(f"{event.type} is a decision of the core, not an input")
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
        """After a restart: allowed actions never started, and started ones with no outcome."""
        commands: list[Command] = []
        for action in self.state.actions.values():
            if action.status is ActionStatus.ALLOWED:
                commands.append(self._start_command(action))
            elif action.status is ActionStatus.STARTED:
                commands.append(CheckOutcome(self._start_command(action)))
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
        self._configured = _Configured(config)
        self._correlator = Correlator(self.state, config.correlation)

    def _setup(self) -> _Configured:
        assert self._configured is not None, "no policy is active"
        return self._configured

    def _correlation(self) -> Correlator:
        assert self._correlator is not None, "no policy is active"
        return self._correlator

    # ------------------------------------------------------------------ emitting

    def _emit(self, body: Payload, stream: str) -> Event:
        cause = self._cause
        assert cause is not None
        event = make_event(
            body,
            id=f"{cause.id}:{len(self._events)}",
            ts=cause.ts,
            stream=stream,
            causation_id=cause.id,
            correlation_id=stream,
        )
        self._apply(body, event)  # the typed body is at hand: no need to validate it again
        self._events.append(event)
        return event

    @property
    def _now(self) -> datetime:
        assert self._cause is not None
        return self._cause.ts

    # ------------------------------------------------------------------ applying events

    def _prior(self, body: Payload) -> Any:
        """What a reaction needs to know about the state before its input is applied."""
        if isinstance(body, SignalReceived):
            if body.delivery_id is not None and body.delivery_id in self.state.deliveries:
                return _REDELIVERED
            known = self.state.signals.get(body.fingerprint)
            return (known.status, known.incident_id) if known else None
        if isinstance(body, ApprovalGranted | ApprovalDenied):
            return self.state.approvals.get(body.approval_id)
        return None

    def _apply_policy(self, body: PolicyActivated, event: Event) -> None:
        self.state.policy = body.config
        self._activate(body.config)
        self.state.policy_version = self._setup().config.version

    def _apply_autonomy(self, body: AutonomyChanged, event: Event) -> None:
        self.state.autonomy_overrides[body.service] = body.level

    def _apply_signal(self, body: SignalReceived, event: Event) -> None:
        if body.delivery_id is not None:
            deliveries = self.state.deliveries
            if body.delivery_id in deliveries:
                return  # the same notification again: it changes nothing
            deliveries[body.delivery_id] = event.ts
            if len(deliveries) >= _DELIVERY_SWEEP_AT:
                horizon = event.ts - _DELIVERY_MEMORY
                self.state.deliveries = {k: t for k, t in deliveries.items() if t > horizon}
        known = self.state.signals.get(body.fingerprint)
        if known is not None and body.status == "firing":
            known.last_seen = event.ts  # a re-send keeps a firing signal alive
        if body.status == "acknowledged" or (known is not None and known.status == body.status):
            return
        correlator = self._correlator
        if correlator is not None:
            correlator.flaps.record(body.fingerprint, event.ts)
        else:
            self.state.transitions.setdefault(body.fingerprint, []).append(event.ts)
        if known is None:
            if body.status == "firing":
                self.state.signals[body.fingerprint] = SignalState(
                    body.fingerprint,
                    body.status,
                    dict(body.labels),
                    dict(body.annotations),
                    body.source,
                    "",
                    last_seen=event.ts,
                )
                if correlator is not None:
                    correlator.firing(body.fingerprint, body.labels)
            return
        known.status = body.status
        known.labels, known.annotations = dict(body.labels), dict(body.annotations)
        if correlator is not None:
            if body.status == "firing":
                correlator.firing(body.fingerprint, body.labels)
            else:
                correlator.not_firing(body.fingerprint)
        if body.status == "resolved" and known.incident_id not in self.state.incidents:
            del self.state.signals[body.fingerprint]

    def _apply_silence(self, body: SilenceCreated | SilenceExpired, event: Event) -> None:
        if self._correlator is None:
            return  # no policy yet: nothing can be muted, and there is nothing to mute
        if isinstance(body, SilenceCreated):
            data = body.model_dump(mode="json")
            data["created_by"] = event.actor
            self._correlator.add_silence(data)
        else:
            self._correlator.expire_silence(body.silence_id, event.ts)

    def _apply_tick(self, body: Tick, event: Event) -> None:
        if self._correlator is not None:
            self._correlator.prune(event.ts)

    def _apply_opened(self, body: IncidentOpened, event: Event) -> None:
        wait = self._setup().config.correlation.group_wait
        incident = Incident(
            incident_id=body.incident_id,
            group_key=dict(body.group_key),
            service=body.service,
            title=body.title,
            opened_at=event.ts,
            ready_at=event.ts + wait,
            fingerprints=[body.fingerprint],
        )
        self.state.incidents[body.incident_id] = incident
        self.state.open_by_key[_key_text(body.group_key)] = body.incident_id
        if body.fingerprint in self.state.signals:
            self.state.signals[body.fingerprint].incident_id = body.incident_id

    def _apply_updated(self, body: IncidentUpdated, event: Event) -> None:
        incident = self.state.incidents.get(body.incident_id)
        if incident is None:
            return
        if body.change == "signal_added" and body.fingerprint:
            incident.fingerprints.append(body.fingerprint)
            if body.fingerprint in self.state.signals:
                self.state.signals[body.fingerprint].incident_id = incident.incident_id
        elif body.change == "flapping":
            incident.flapping = True
        elif body.change == "muted":
            incident.muted = body.detail
        elif body.change == "unmuted":
            incident.muted = ""
        elif body.change == "signal_timed_out" and body.fingerprint:
            signal = self.state.signals.get(body.fingerprint)
            if signal is not None:
                signal.status = "resolved"
                if self._correlator is not None:
                    self._correlator.not_firing(body.fingerprint)
        elif body.change == "acknowledged":
            incident.acknowledged = True
        elif body.change == "planned":
            incident.planned = True
            incident.runbook = body.detail or None

    def _apply_resolved(self, body: IncidentResolved, event: Event) -> None:
        incident = self.state.incidents.pop(body.incident_id, None)
        if incident is None:
            return
        self.state.open_by_key.pop(_key_text(incident.group_key), None)
        for fingerprint in incident.fingerprints:
            signal = self.state.signals.get(fingerprint)
            if signal is not None and signal.incident_id == incident.incident_id:
                del self.state.signals[fingerprint]
                if self._correlator is not None:
                    self._correlator.not_firing(fingerprint)
        for approval_id in [
            a.approval_id
            for a in self.state.approvals.values()
            if a.incident_id == incident.incident_id
        ]:
            del self.state.approvals[approval_id]
        for command_id in incident.commands:
            action = self.state.actions.get(command_id)
            if action is not None and (
                action.status in TERMINAL or action.status is ActionStatus.AWAITING_APPROVAL
            ):
                del self.state.actions[command_id]

    def _apply_proposed(self, body: ActionProposed, event: Event) -> None:
        incident = self.state.incidents.get(body.incident_id)
        self.state.actions[body.command_id] = ActionState(
            command_id=body.command_id,
            incident_id=body.incident_id,
            runbook=body.runbook,
            step=body.step,
            action=body.action,
            target=body.target,
            params=dict(body.params),
            timeout_s=body.timeout_s,
            service=incident.service if incident else None,
        )
        if incident is not None:
            incident.commands.append(body.command_id)

    def _apply_evaluated(self, body: PolicyEvaluated, event: Event) -> None:
        action = self.state.actions.get(body.command_id)
        if action is None:
            return
        if body.verdict == "allow":
            action.status = ActionStatus.ALLOWED
            history = self.state.history
            history.append(
                ActionRecord(event.ts, action.action, action.target, action.service, action.runbook)
            )
            horizon = self._setup().history_seconds
            while history and (event.ts - history[0].at).total_seconds() > horizon:
                history.pop(0)
        elif body.verdict == "deny":
            self._finish(action, ActionStatus.DENIED)
        else:
            action.status = ActionStatus.AWAITING_APPROVAL

    def _apply_approval_requested(self, body: ApprovalRequested, event: Event) -> None:
        self.state.approvals[body.approval_id] = Approval(
            body.approval_id, body.command_id, body.incident_id, body.expires_at
        )
        action = self.state.actions.get(body.command_id)
        if action is not None:
            action.approval_id = body.approval_id

    def _apply_approval_answer(self, body: ApprovalGranted | ApprovalDenied, event: Event) -> None:
        approval = self.state.approvals.pop(body.approval_id, None)
        if approval is not None and isinstance(body, ApprovalDenied):
            action = self.state.actions.get(approval.command_id)
            if action is not None:
                self._finish(action, ActionStatus.DENIED)

    def _apply_approval_expired(self, body: ApprovalExpired, event: Event) -> None:
        self.state.approvals.pop(body.approval_id, None)
        action = self.state.actions.get(body.command_id)
        if action is not None:
            self._finish(action, ActionStatus.DENIED)

    def _apply_started(self, body: ActionStarted, event: Event) -> None:
        action = self.state.actions.get(body.command_id)
        if action is not None and action.status is ActionStatus.ALLOWED:
            action.status = ActionStatus.STARTED
            action.attempt = body.attempt

    def _apply_succeeded(self, body: ActionSucceeded, event: Event) -> None:
        action = self.state.actions.get(body.command_id)
        if action is None or action.status not in (ActionStatus.STARTED, ActionStatus.ALLOWED):
            return
        runbook = self._setup().agent.runbook(action.runbook)
        if runbook is not None and action.step + 1 < len(runbook.do):
            self._finish(action, ActionStatus.VERIFIED)
            return
        window = runbook.verify.signal_resolved_within if runbook else None
        action.status = ActionStatus.VERIFYING
        action.verify_deadline = event.ts + window if window is not None else event.ts

    def _apply_failed(self, body: ActionFailed | ActionOutcomeUnknown, event: Event) -> None:
        action = self.state.actions.get(body.command_id)
        if action is None or action.status in TERMINAL:
            return
        failed = isinstance(body, ActionFailed)
        self._finish(action, ActionStatus.FAILED if failed else ActionStatus.UNKNOWN)

    def _apply_verification(
        self, body: VerificationPassed | VerificationFailed, event: Event
    ) -> None:
        action = self.state.actions.get(body.command_id)
        if action is not None:
            passed = isinstance(body, VerificationPassed)
            self._finish(action, ActionStatus.VERIFIED if passed else ActionStatus.VERIFY_FAILED)

    def _apply_escalated(self, body: Escalated, event: Event) -> None:
        incident = self.state.incidents.get(body.incident_id)
        if incident is not None:
            incident.escalated = True

    def _apply_acknowledged(self, body: Acknowledged, event: Event) -> None:
        incident = self.state.incidents.get(body.incident_id)
        if incident is not None:
            incident.acknowledged = True

    def _finish(self, action: ActionState, status: ActionStatus) -> None:
        action.status = status
        if action.incident_id not in self.state.incidents:
            self.state.actions.pop(action.command_id, None)

    # ------------------------------------------------------------------ reactions

    def _on_signal(self, body: SignalReceived, prior: tuple[str, str] | object | None) -> None:
        if prior is _REDELIVERED:
            return
        assert prior is None or isinstance(prior, tuple)
        if body.status == "acknowledged":
            self._on_acknowledged_at_source(body, prior)
            return
        timeout = self._setup().config.correlation.resolve_timeout
        if timeout is not None and body.status == "firing":
            self._commands.append(ScheduleTimer(f"stale:{body.fingerprint}", self._now + timeout))
        if prior is not None and prior[0] == body.status:
            return  # a repeat of what we already know: counts once
        if body.status == "resolved":
            if prior is None:
                return  # resolved, and never seen firing (or its incident is gone)
            incident = self.state.incidents.get(prior[1])
            if incident is not None:
                self._emit(
                    IncidentUpdated(
                        incident_id=incident.incident_id,
                        change="signal_resolved",
                        fingerprint=body.fingerprint,
                        detail=body.labels.get("alertname", ""),
                    ),
                    incident.incident_id,
                )
                self._maybe_resolve(incident)
            self._recheck_muted()  # an inhibiting alert may just have resolved
            return
        incident = self.state.incidents.get(prior[1]) if prior is not None else None
        if incident is not None:
            self._emit(
                IncidentUpdated(
                    incident_id=incident.incident_id,
                    change="signal_refired",
                    fingerprint=body.fingerprint,
                ),
                incident.incident_id,
            )
        else:
            incident = self._join_or_open(body)
        self._check_flapping(incident, body.fingerprint)
        if not incident.planned and incident.ready_at <= self._now:
            self._plan(incident)
        elif not incident.planned:
            self._commands.append(ScheduleTimer(f"ready:{incident.incident_id}", incident.ready_at))

    def _on_acknowledged_at_source(
        self, body: SignalReceived, prior: tuple[str, str] | None
    ) -> None:
        incident = self.state.incidents.get(prior[1]) if prior is not None else None
        if incident is None or incident.acknowledged:
            return
        self._emit(
            IncidentUpdated(
                incident_id=incident.incident_id,
                change="acknowledged",
                fingerprint=body.fingerprint,
                detail=f"acknowledged at {body.source}",
            ),
            incident.incident_id,
        )

    def _join_or_open(self, body: SignalReceived) -> Incident:
        setup = self._setup()
        group_key = {
            label: body.labels.get(label, "") for label in setup.config.correlation.group_by
        }
        existing = self.state.open_by_key.get(_key_text(group_key))
        if existing is not None:
            self._emit(
                IncidentUpdated(
                    incident_id=existing, change="signal_added", fingerprint=body.fingerprint
                ),
                existing,
            )
            return self.state.incidents[existing]
        assert self._cause is not None
        incident_id = derive_id("inc", self._cause.id, body.fingerprint)
        self._emit(
            IncidentOpened(
                incident_id=incident_id,
                group_key=group_key,
                service=self._service_of(body.labels),
                title=_title(body),
                fingerprint=body.fingerprint,
            ),
            incident_id,
        )
        return self.state.incidents[incident_id]

    def _check_flapping(self, incident: Incident, fingerprint: str) -> None:
        correlation = self._setup().config.correlation
        changes = self._correlation().flaps.count(fingerprint, self._now)
        if incident.flapping or changes < correlation.flap_threshold:
            return
        window = format_duration(correlation.flap_window)
        self._emit(
            IncidentUpdated(
                incident_id=incident.incident_id,
                change="flapping",
                fingerprint=fingerprint,
                detail=f"{changes} state changes within {window}",
            ),
            incident.incident_id,
        )
        self._escalate(
            incident,
            f"flapping: {changes} state changes within {window}; automatic actions paused",
        )

    def _muted(self, incident: Incident) -> bool:
        """Whether every firing signal of the incident is silenced or inhibited; the change is
        recorded either way, so the timeline says why nothing happened (or now does)."""
        correlator = self._correlation()
        reasons = [
            correlator.mute_reason(fp, signal.labels, self._now)
            for fp in incident.fingerprints
            if (signal := self.state.signals.get(fp)) is not None and signal.status == "firing"
        ]
        reason = reasons[0] if reasons and all(reasons) else None
        if reason and reason != incident.muted:
            self._emit(
                IncidentUpdated(incident_id=incident.incident_id, change="muted", detail=reason),
                incident.incident_id,
            )
        elif not reason and incident.muted:
            self._emit(
                IncidentUpdated(incident_id=incident.incident_id, change="unmuted"),
                incident.incident_id,
            )
        if reason:
            change = correlator.next_silence_change(self._now)
            if change is not None:
                self._commands.append(ScheduleTimer("silences", change))
        return reason is not None

    def _recheck_muted(self) -> None:
        for incident in list(self.state.incidents.values()):
            if incident.muted and not incident.planned and incident.ready_at <= self._now:
                self._plan(incident)

    def _time_out_silent_signals(self) -> None:
        """Sources that never send a resolution: a firing signal not heard of for
        `resolve_timeout` counts as resolved."""
        timeout = self._setup().config.correlation.resolve_timeout
        if timeout is None:
            return
        stale = [
            signal
            for signal in self.state.signals.values()
            if signal.status == "firing"
            and signal.last_seen is not None
            and signal.last_seen + timeout <= self._now
        ]
        for signal in stale:
            incident = self.state.incidents.get(signal.incident_id)
            if incident is None:
                continue
            self._emit(
                IncidentUpdated(
                    incident_id=incident.incident_id,
                    change="signal_timed_out",
                    fingerprint=signal.fingerprint,
                    detail=f"not heard of for {format_duration(timeout)}",
                ),
                incident.incident_id,
            )
            self._maybe_resolve(incident)

    def _on_silence(self, body: SilenceCreated | SilenceExpired, prior: None) -> None:
        if isinstance(body, SilenceExpired):
            self._recheck_muted()
        else:
            change = self._correlation().next_silence_change(self._now)
            if change is not None:
                self._commands.append(ScheduleTimer("silences", change))

    def _plan(self, incident: Incident) -> None:
        if self._muted(incident):
            return  # recorded, never acted on; re-examined when silences or sources change
        setup = self._setup()
        context = self._context(incident)
        runbooks = [] if incident.flapping else setup.agent.matching(context)
        self._emit(
            IncidentUpdated(
                incident_id=incident.incident_id,
                change="planned",
                detail=runbooks[0].name if runbooks else "",
            ),
            incident.incident_id,
        )
        if incident.flapping:
            return  # already escalated when flapping was detected
        if not runbooks:
            alert = context["signal"]["labels"].get("alertname", "this alert")
            self._escalate(incident, f"no runbook matches {alert}")
            return
        proposals = [
            proposal
            for runbook in runbooks
            if (proposal := setup.agent.propose_step(runbook.name, 0, context)) is not None
        ]
        winner, _losers = arbitrate(proposals, self._busy_targets())
        if winner is None:
            self._escalate(
                incident, "every proposed action targets something already being acted on"
            )
            return
        self._propose(incident, winner, context)

    def _propose(self, incident: Incident, proposal: Proposal, context: dict[str, Any]) -> None:
        command_id = derive_id("cmd", incident.incident_id, proposal.runbook, str(proposal.step))
        self._emit(
            ActionProposed(
                command_id=command_id,
                incident_id=incident.incident_id,
                agent=proposal.agent,
                runbook=proposal.runbook,
                step=proposal.step,
                action=proposal.action,
                target=proposal.target,
                params=proposal.params,
                timeout_s=proposal.timeout_s,
                rationale=proposal.rationale,
            ),
            incident.incident_id,
        )
        self._govern(incident, self.state.actions[command_id], context, approved_by=None)

    def _govern(
        self,
        incident: Incident,
        action: ActionState,
        context: dict[str, Any],
        approved_by: str | None,
    ) -> None:
        setup = self._setup()
        proposal = Proposal(
            agent="runbook",
            runbook=action.runbook,
            step=action.step,
            action=action.action,
            target=action.target,
            rationale="",
            params=action.params,
            timeout_s=action.timeout_s,
        )
        facts = self._facts(incident, proposal, context, approved_by)
        verdict = setup.policy.evaluate(
            facts, command_id=action.command_id, incident_id=incident.incident_id
        )
        self._emit(verdict, incident.incident_id)
        if verdict.verdict == "allow":
            self._commands.append(self._start_command(action))
        elif verdict.verdict == "require_approval":
            self._request_approval(incident, action, verdict)
        else:
            self._escalate(
                incident,
                f"action {action.action} on {action.target or '?'} not taken: {verdict.reason}",
                command_id=action.command_id,
            )

    def _request_approval(
        self, incident: Incident, action: ActionState, verdict: PolicyEvaluated
    ) -> None:
        approvals = self._setup().config.policy.approvals
        approval_id = derive_id("apr", action.command_id)
        summary = f"{action.action} on {action.target} for {incident.title} ({verdict.reason})"
        self._emit(
            ApprovalRequested(
                approval_id=approval_id,
                command_id=action.command_id,
                incident_id=incident.incident_id,
                expires_at=self._now + approvals.timeout,
                notify=list(approvals.notify),
                summary=summary,
            ),
            incident.incident_id,
        )
        self._commands.append(
            Notify("approval", incident.incident_id, tuple(approvals.notify), summary, approval_id)
        )
        self._commands.append(
            ScheduleTimer(f"approval:{approval_id}", self._now + approvals.timeout)
        )

    def _on_approval_granted(self, body: ApprovalGranted, prior: Approval | None) -> None:
        if prior is None:
            return  # unknown, already answered, expired or moot: nothing to do
        action = self.state.actions.get(prior.command_id)
        incident = self.state.incidents.get(prior.incident_id)
        if action is None or incident is None:
            return
        assert self._cause is not None
        self._govern(incident, action, self._context(incident), approved_by=self._cause.actor)

    def _on_approval_denied(self, body: ApprovalDenied, prior: Approval | None) -> None:
        if prior is None:
            return
        incident = self.state.incidents.get(prior.incident_id)
        if incident is not None:
            assert self._cause is not None
            note = f": {body.comment}" if body.comment else ""
            self._escalate(
                incident,
                f"approval denied by {self._cause.actor}{note}",
                command_id=prior.command_id,
            )

    def _on_succeeded(self, body: ActionSucceeded, prior: None) -> None:
        action = self.state.actions.get(body.command_id)
        if action is None:
            return
        incident = self.state.incidents.get(action.incident_id)
        if incident is None:
            return
        if action.status is ActionStatus.VERIFIED:  # an earlier step of a longer runbook
            proposal = self._setup().agent.propose_step(
                action.runbook, action.step + 1, self._context(incident)
            )
            if proposal is not None:
                self._propose(incident, proposal, self._context(incident))
            return
        if action.status is ActionStatus.VERIFYING and action.verify_deadline is not None:
            if self._all_resolved(incident):
                self._maybe_resolve(incident)
            else:
                self._commands.append(
                    ScheduleTimer(f"verify:{action.command_id}", action.verify_deadline)
                )

    def _on_failed(self, body: ActionFailed | ActionOutcomeUnknown, prior: None) -> None:
        incident_id = self._incident_of(body.command_id)
        incident = self.state.incidents.get(incident_id) if incident_id else None
        if incident is None:
            return
        if isinstance(body, ActionFailed):
            self._undo(incident, body.command_id)
            reason = f"action failed: {body.error}"
        else:
            reason = f"action outcome unknown, not re-run: {body.reason}"
        self._escalate(incident, reason, command_id=body.command_id)
        self._maybe_resolve(incident)

    def _on_tick(self, body: Tick, prior: None) -> None:
        now = self._now
        for approval in [a for a in self.state.approvals.values() if a.expires_at <= now]:
            incident = self.state.incidents.get(approval.incident_id)
            self._emit(
                ApprovalExpired(approval_id=approval.approval_id, command_id=approval.command_id),
                approval.incident_id,
            )
            if incident is not None:
                self._escalate(
                    incident,
                    "nobody answered the approval in time; the safe default is deny",
                    command_id=approval.command_id,
                )
        for action in [
            a for a in self.state.actions.values() if a.status is ActionStatus.VERIFYING
        ]:
            if action.verify_deadline is None or action.verify_deadline > now:
                continue
            incident = self.state.incidents.get(action.incident_id)
            if incident is None:
                continue
            self._emit(
                VerificationFailed(
                    command_id=action.command_id,
                    incident_id=incident.incident_id,
                    reason="the incident's signals did not resolve within the verification window",
                ),
                incident.incident_id,
            )
            self._undo(incident, action.command_id)
            self._escalate(
                incident,
                f"{action.action} on {action.target} did not fix it: still firing after the "
                "verification window",
                command_id=action.command_id,
            )
        self._time_out_silent_signals()
        for incident in list(self.state.incidents.values()):
            if not incident.planned and incident.ready_at <= now:
                self._plan(incident)
            elif incident.flapping and self._all_resolved(incident):
                self._maybe_resolve(incident)

    # ------------------------------------------------------------------ helpers

    def _maybe_resolve(self, incident: Incident) -> None:
        if incident.incident_id not in self.state.incidents or not self._all_resolved(incident):
            return
        actions = [self.state.actions[c] for c in incident.commands if c in self.state.actions]
        if any(a.status in (ActionStatus.ALLOWED, ActionStatus.STARTED) for a in actions):
            return  # wait for the action's outcome before closing
        if incident.flapping and not self._correlation().flaps.is_calm(
            incident.fingerprints, self._now
        ):
            return  # a flapping incident stays open until it has been calm for a window
        reason = "all signals resolved"
        for action in actions:
            if action.status is ActionStatus.VERIFYING:
                self._emit(
                    VerificationPassed(
                        command_id=action.command_id,
                        incident_id=incident.incident_id,
                        check="signals resolved within the verification window",
                    ),
                    incident.incident_id,
                )
                reason = f"resolved after {action.action} on {action.target}, verified"
        self._emit(
            IncidentResolved(incident_id=incident.incident_id, reason=reason), incident.incident_id
        )

    def _undo(self, incident: Incident, command_id: str) -> None:
        action = self.state.actions.get(command_id)
        if action is None:
            return
        for index, step in enumerate(
            self._setup().agent.undo_steps(action.runbook, self._context(incident))
        ):
            if not step.target or step.target not in self._setup().owner:
                continue  # an unknown target means do nothing, for undo too
            self._commands.append(
                StartUndo(
                    command_id=derive_id("undo", command_id, str(index)),
                    of_command_id=command_id,
                    incident_id=incident.incident_id,
                    action=step.action,
                    target=step.target,
                    params=step.params,
                    timeout_s=step.timeout_s,
                )
            )

    def _escalate(self, incident: Incident, reason: str, command_id: str | None = None) -> None:
        tier = self._setup().config.escalation.default[0]
        self._emit(
            Escalated(
                incident_id=incident.incident_id,
                reason=reason,
                tier=0,
                notify=list(tier.notify),
                command_id=command_id,
            ),
            incident.incident_id,
        )
        self._commands.append(
            Notify(
                "escalation",
                incident.incident_id,
                tuple(tier.notify),
                f"{incident.title}: {reason}",
            )
        )

    def _start_command(self, action: ActionState) -> StartAction:
        return StartAction(
            command_id=action.command_id,
            incident_id=action.incident_id,
            action=action.action,
            target=action.target,
            params=action.params,
            timeout_s=action.timeout_s,
        )

    def _facts(
        self,
        incident: Incident,
        proposal: Proposal,
        context: dict[str, Any],
        approved_by: str | None,
    ) -> Facts:
        setup = self._setup()
        variables = None
        if setup.policy.needs_variables:
            target_service = setup.owner.get(proposal.target, "")
            variables = prepare(
                {
                    **context,
                    "action": {
                        "name": proposal.action,
                        "runbook": proposal.runbook,
                        "params": proposal.params,
                    },
                    "target": {"name": proposal.target, "service": target_service},
                }
            )
        service = setup.services.get(incident.service or "") or setup.services.get(
            setup.owner.get(proposal.target, "")
        )
        return gather(
            self.state,
            proposal=proposal,
            incident_service=incident.service,
            services=setup.services,
            owner=setup.owner,
            autonomy=self._autonomy(service, proposal.runbook),
            approved_by=approved_by,
            variables=variables,
            now=self._now,
        )

    def _autonomy(self, service: Service | None, runbook_name: str) -> Autonomy:
        if service is None:
            return Autonomy.SUGGEST  # acting on something we cannot place is never autonomous
        override = self.state.autonomy_overrides.get(service.name)
        level = Autonomy.parse(override) if override else service.autonomy
        runbook = self._setup().agent.runbook(runbook_name)
        if runbook is not None and runbook.autonomy is not None:
            level = min(level, runbook.autonomy)
        return level

    def _context(self, incident: Incident) -> dict[str, Any]:
        """The variables conditions and templates see: signal, incident, service, now."""
        setup = self._setup()
        first = self.state.signals.get(incident.fingerprints[0]) if incident.fingerprints else None
        service = setup.services.get(incident.service or "")
        return {
            "signal": {
                "labels": dict(first.labels) if first else {},
                "annotations": dict(first.annotations) if first else {},
                "status": first.status if first else "resolved",
                "source": first.source if first else "",
                "fingerprint": first.fingerprint if first else "",
            },
            "incident": {
                "id": incident.incident_id,
                "title": incident.title,
                "service": incident.service or "",
                "signals": len(incident.fingerprints),
                "flapping": incident.flapping,
            },
            "service": {
                "name": service.name if service else (incident.service or ""),
                "tier": service.tier if service else "",
                "region": service.region if service else "",
                "autonomy": self._autonomy(service, "").name.lower() if service else "",
                "instances": len(service.instances) if service else 0,
            },
            "now": self._now,
        }

    def _service_of(self, labels: dict[str, str]) -> str | None:
        owner = self._setup().owner
        if labels.get("service"):
            return labels["service"]
        for label in ("instance", "job"):
            if labels.get(label) in owner:
                return owner[labels[label]]
        return None

    def _busy_targets(self) -> frozenset[str]:
        return frozenset(a.target for a in self.state.actions.values() if a.status in IN_FLIGHT)

    def _all_resolved(self, incident: Incident) -> bool:
        return all(
            (signal := self.state.signals.get(fp)) is None or signal.status == "resolved"
            for fp in incident.fingerprints
        )

    def _calm_at(self, incident: Incident) -> datetime | None:
        """When a flapping incident's signals will have been calm for a whole window."""
        return self._correlation().flaps.calm_at(incident.fingerprints)

    def _incident_of(self, command_id: str) -> str | None:
        action = self.state.actions.get(command_id)
        return action.incident_id if action else None

    _appliers: dict[type[Payload], Callable[[Manager, Any, Event], None]] = {}
    _reactions: dict[type[Payload], Callable[[Manager, Any, Any], None]] = {}


_REDELIVERED = object()


def _key_text(group_key: dict[str, str]) -> str:
    return to_json(group_key).decode()


def _title(signal: SignalReceived) -> str:
    labels = signal.labels
    summary = signal.annotations.get("summary")
    if summary:
        return summary
    what = labels.get("alertname", "signal")
    where = labels.get("instance") or labels.get("service") or labels.get("job") or ""
    return f"{what} on {where}" if where else what


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
}

Manager._reactions = {
    SignalReceived: Manager._on_signal,
    ApprovalGranted: Manager._on_approval_granted,
    ApprovalDenied: Manager._on_approval_denied,
    ActionSucceeded: Manager._on_succeeded,
    ActionFailed: Manager._on_failed,
    ActionOutcomeUnknown: Manager._on_failed,
    Tick: Manager._on_tick,
    SilenceCreated: Manager._on_silence,
    SilenceExpired: Manager._on_silence,
}
