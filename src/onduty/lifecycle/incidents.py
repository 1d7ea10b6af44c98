"""Signals into incidents: deduplication, grouping, flapping, muting (silences, maintenance,
inhibition), timeouts and resolution."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from sys import intern
from typing import Any, ClassVar

from onduty.commands import ScheduleTimer
from onduty.config import format_duration
from onduty.correlate.titles import group_title, narrowed, shared_by, signal_title, summary_of
from onduty.events import (
    Acknowledged,
    Escalated,
    Event,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Payload,
    SignalReceived,
    SilenceCreated,
    SilenceExpired,
    Tick,
    VerificationPassed,
    to_json,
)
from onduty.lifecycle.base import Emitter, Pager, Prior, derive_id
from onduty.lifecycle.indexes import Deliveries, Due
from onduty.lifecycle.setup import Setup
from onduty.state import (
    TERMINAL,
    ActionStatus,
    Incident,
    SignalState,
    State,
)


@dataclass(eq=False, repr=False)
class IncidentLifecycle:
    """Signals into incidents. `plan` is called for an incident that is ready to be acted on
    (its group wait is over and not all its signals are muted): the action lifecycle's."""

    state: State
    setup: Setup
    emitter: Emitter
    pager: Pager
    plan: Callable[[Incident], None]
    deliveries: Deliveries = field(init=False)
    due: Due = field(init=False)

    def __post_init__(self) -> None:
        self.deliveries, self.due = Deliveries(self.state), Due(self.state)

    def _apply_signal(self, body: SignalReceived, event: Event) -> None:
        if body.delivery_id is not None and not self.deliveries.remember(
            body.delivery_id, event.ts
        ):
            return  # the same notification again: it changes nothing
        known = self.state.signals.get(body.fingerprint)
        if known is not None and body.status == "firing":
            known.last_seen = event.ts  # a re-send keeps a firing signal alive
            self.due.heard(known)
        if body.status == "acknowledged" or (known is not None and known.status == body.status):
            return
        correlator = self.setup.correlator
        if correlator is not None:
            correlator.flaps.record(body.fingerprint, event.ts)
        else:
            self.state.transitions.setdefault(body.fingerprint, []).append(event.ts)
        if known is None:
            if body.status == "firing":
                signal = SignalState(
                    body.fingerprint,
                    body.status,
                    interned(body.labels),
                    interned(body.annotations, values=False),
                    body.source,
                    "",
                    last_seen=event.ts,
                )
                self.state.signals[body.fingerprint] = signal
                self.due.added(signal)
                if correlator is not None:
                    correlator.firing(body.fingerprint, body.labels)
            return
        known.status = body.status
        known.labels = interned(body.labels)
        known.annotations = interned(body.annotations, values=False)
        self.due.heard(known)
        if correlator is not None:
            if body.status == "firing":
                correlator.firing(body.fingerprint, body.labels)
            else:
                correlator.not_firing(body.fingerprint)
        if body.status == "resolved" and known.incident_id not in self.state.incidents:
            del self.state.signals[body.fingerprint]

    def _apply_silence(self, body: SilenceCreated | SilenceExpired, event: Event) -> None:
        if self.setup.correlator is None:
            return  # no policy yet: nothing can be muted, and there is nothing to mute
        if isinstance(body, SilenceCreated):
            data = body.model_dump(mode="json")
            data["created_by"] = event.actor
            self.setup.correlator.add_silence(data)
        else:
            self.setup.correlator.expire_silence(body.silence_id, event.ts)

    def _apply_tick(self, body: Tick, event: Event) -> None:
        if self.setup.correlator is not None:
            self.setup.correlator.prune(event.ts)

    def _apply_opened(self, body: IncidentOpened, event: Event) -> None:
        wait = self.setup.active.config.correlation.group_wait
        incident = Incident(
            incident_id=body.incident_id,
            group_key=interned(body.group_key),
            service=body.service,
            title=body.title,
            opened_at=event.ts,
            ready_at=event.ts + wait,
            fingerprints=[body.fingerprint],
        )
        self.state.incidents[body.incident_id] = incident
        self.state.open_by_key[_key_text(body.group_key)] = body.incident_id
        self.due.opened(incident)
        signal = self.state.signals.get(body.fingerprint)
        if signal is not None:
            signal.incident_id = body.incident_id
            incident.shared_labels = signal.labels  # shared: never changed in place, replaced
            incident.shared_summary = summary_of(signal.annotations)

    def _apply_updated(self, body: IncidentUpdated, event: Event) -> None:
        incident = self.state.incidents.get(body.incident_id)
        if incident is None:
            return
        if body.change == "signal_added" and body.fingerprint:
            incident.fingerprints.append(body.fingerprint)
            signal = self.state.signals.get(body.fingerprint)
            if signal is not None:
                signal.incident_id = incident.incident_id
                self._share(incident, signal)
        elif body.change == "retitled":
            incident.title = body.detail
        elif body.change == "flapping":
            incident.flapping = True
            self.due.flapping.add(incident.incident_id)
        elif body.change == "muted":
            incident.muted = body.detail
            (self.due.muted.add if body.detail else self.due.muted.discard)(incident.incident_id)
        elif body.change == "unmuted":
            incident.muted = ""
            self.due.muted.discard(incident.incident_id)
        elif body.change == "signal_timed_out" and body.fingerprint:
            signal = self.state.signals.get(body.fingerprint)
            if signal is not None:
                signal.status = "resolved"
                if self.setup.correlator is not None:
                    self.setup.correlator.not_firing(body.fingerprint)
        elif body.change == "acknowledged":
            incident.acknowledged = True
            incident.escalation_due = None
        elif body.change == "overdue":
            incident.overdue = True
        elif body.change == "planned":
            incident.planned = True
            incident.runbook = body.detail or None

    def _share(self, incident: Incident, signal: SignalState) -> None:
        """Narrow what the incident's signals have in common to what `signal` has too."""
        if incident.shared_labels is None:  # from an older snapshot: gather it once
            members = [
                (member.labels, member.annotations)
                for fp in incident.fingerprints[:-1]
                if (member := self.state.signals.get(fp)) is not None
            ]
            shared = shared_by(members or [(signal.labels, {})])
            incident.shared_labels, incident.shared_summary = shared
        incident.shared_labels, incident.shared_summary = narrowed(
            incident.shared_labels, incident.shared_summary, signal.labels, signal.annotations
        )

    def _retitle(self, incident: Incident) -> None:
        """A signal joined: if what the group shares reads differently now, record the new
        title (a handful of times per incident at most: what members share only shrinks)."""
        title = group_title(incident.shared_labels or {}, incident.shared_summary)
        if title != incident.title:
            self.emitter.note(incident.incident_id, "retitled", title)

    def _apply_resolved(self, body: IncidentResolved, event: Event) -> None:
        incident = self.state.incidents.pop(body.incident_id, None)
        if incident is None:
            return
        self.state.open_by_key.pop(_key_text(incident.group_key), None)
        self.due.closed(incident.incident_id)
        for fingerprint in incident.fingerprints:
            signal = self.state.signals.get(fingerprint)
            if signal is not None and signal.incident_id == incident.incident_id:
                del self.state.signals[fingerprint]
                if self.setup.correlator is not None:
                    self.setup.correlator.not_firing(fingerprint)
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

    def _apply_escalated(self, body: Escalated, event: Event) -> None:
        incident = self.state.incidents.get(body.incident_id)
        if incident is None:
            return
        incident.escalated = True
        escalation = self.setup.active.config.escalation
        tiers = escalation.tiers(incident.service)
        last = len(tiers) - 1
        if body.tier > incident.escalation_tier:
            incident.escalation_tier = body.tier
            incident.last_tier_pages = 0
        if body.tier == last:
            incident.last_tier_pages += 1
        if incident.acknowledged or (
            body.tier == last and incident.last_tier_pages > escalation.repeat_last
        ):
            incident.escalation_due = None  # acknowledged, or every repeat has been paged
        else:
            incident.escalation_due = event.ts + tiers[min(body.tier, last)].wait
            self.due.deadlines(incident)

    def _apply_acknowledged(self, body: Acknowledged, event: Event) -> None:
        incident = self.state.incidents.get(body.incident_id)
        if incident is not None:
            incident.acknowledged = True
            incident.escalation_due = None  # an acknowledgement stops the escalation

    def _on_signal(self, body: SignalReceived, before: Prior) -> None:
        if before.redelivered:
            return
        known = before.signal_status is not None
        incident = self.state.incidents.get(before.signal_incident)
        if body.status == "acknowledged":
            self._on_acknowledged_at_source(body, incident)
            return
        timeout = self.setup.active.config.correlation.resolve_timeout
        if timeout is not None and body.status == "firing":
            self.emitter.command(
                ScheduleTimer(f"stale:{body.fingerprint}", self.emitter.now + timeout)
            )
        if before.signal_status == body.status:
            return  # a repeat of what we already know: counts once
        if body.status == "resolved":
            if not known:
                return  # resolved, and never seen firing (or its incident is gone)
            if incident is not None:
                self.emitter.note(
                    incident.incident_id,
                    "signal_resolved",
                    body.labels.get("alertname", ""),
                    fingerprint=body.fingerprint,
                )
                self.maybe_resolve(incident)
            self._recheck_muted()  # an inhibiting alert may just have resolved
            return
        if incident is not None:
            self.emitter.note(incident.incident_id, "signal_refired", fingerprint=body.fingerprint)
        else:
            incident = self._join_or_open(body)
        self._check_flapping(incident, body.fingerprint)
        if not incident.planned and incident.ready_at <= self.emitter.now:
            self._plan(incident)
        elif not incident.planned:
            self.emitter.command(ScheduleTimer(f"ready:{incident.incident_id}", incident.ready_at))

    def _on_acknowledged_at_source(self, body: SignalReceived, incident: Incident | None) -> None:
        if incident is None or incident.acknowledged:
            return
        self.emitter.note(
            incident.incident_id,
            "acknowledged",
            f"acknowledged at {body.source}",
            fingerprint=body.fingerprint,
        )

    def _join_or_open(self, body: SignalReceived) -> Incident:
        setup = self.setup.active
        group_key = {
            label: body.labels.get(label, "") for label in setup.config.correlation.group_by
        }
        existing = self.state.open_by_key.get(_key_text(group_key))
        if existing is not None:
            self.emitter.note(existing, "signal_added", fingerprint=body.fingerprint)
            incident = self.state.incidents[existing]
            self._retitle(incident)
            return incident
        assert self.emitter.cause is not None
        incident_id = derive_id("inc", self.emitter.cause.id, body.fingerprint)
        self.emitter.emit(
            IncidentOpened(
                incident_id=incident_id,
                group_key=group_key,
                service=self.setup.service_of(body.labels),
                title=signal_title(body.labels, body.annotations),
                fingerprint=body.fingerprint,
            ),
            incident_id,
        )
        return self.state.incidents[incident_id]

    def _check_flapping(self, incident: Incident, fingerprint: str) -> None:
        correlation = self.setup.active.config.correlation
        changes = self.setup.correlation.flaps.count(fingerprint, self.emitter.now)
        if incident.flapping or changes < correlation.flap_threshold:
            return
        window = format_duration(correlation.flap_window)
        self.emitter.note(
            incident.incident_id,
            "flapping",
            f"{changes} state changes within {window}",
            fingerprint=fingerprint,
        )
        if self._mute_reason(incident) is not None:
            return  # a silence or maintenance window means nobody is to be paged for it
        self.pager.escalate(
            incident,
            f"flapping: {changes} state changes within {window}; automatic actions paused",
        )

    def _mute_reason(self, incident: Incident) -> str | None:
        """Why the incident must not be acted on: every firing signal of it is muted."""
        correlator = self.setup.correlation
        reasons = [
            correlator.mute_reason(fp, signal.labels, self.emitter.now)
            for fp in incident.fingerprints
            if (signal := self.state.signals.get(fp)) is not None and signal.status == "firing"
        ]
        return reasons[0] if reasons and all(reasons) else None

    def _muted(self, incident: Incident) -> bool:
        """Whether every firing signal of the incident is silenced or inhibited; the change is
        recorded either way, so the timeline says why nothing happened (or now does)."""
        correlator = self.setup.correlation
        reason = self._mute_reason(incident)
        if reason and reason != incident.muted:
            self.emitter.note(incident.incident_id, "muted", reason)
        elif not reason and incident.muted:
            self.emitter.note(incident.incident_id, "unmuted")
        if reason:
            change = correlator.next_silence_change(self.emitter.now)
            if change is not None:
                self.emitter.command(ScheduleTimer("silences", change))
        return reason is not None

    def _plan(self, incident: Incident) -> None:
        if not self._muted(incident):  # muted: recorded, never acted on; re-examined when
            self.plan(incident)  # silences or sources change

    def _recheck_muted(self) -> None:
        for incident in self.due.in_order(self.due.muted):
            if incident.muted and not incident.planned and incident.ready_at <= self.emitter.now:
                self._plan(incident)

    def _time_out_silent_signals(self) -> None:
        """Sources that never send a resolution: a firing signal not heard of for
        `resolve_timeout` counts as resolved."""
        timeout = self.setup.active.config.correlation.resolve_timeout
        if timeout is None:
            return
        stale = self.due.stale(self.emitter.now, timeout)
        for signal in stale:
            incident = self.state.incidents.get(signal.incident_id)
            if incident is None:
                self.due.heard(signal)  # still firing, and still stale at the next tick
                continue
            self.emitter.note(
                incident.incident_id,
                "signal_timed_out",
                f"not heard of for {format_duration(timeout)}",
                fingerprint=signal.fingerprint,
            )
            self.maybe_resolve(incident)

    def _on_silence(self, body: SilenceCreated | SilenceExpired, before: Prior) -> None:
        if isinstance(body, SilenceExpired):
            self._recheck_muted()
        else:
            change = self.setup.correlation.next_silence_change(self.emitter.now)
            if change is not None:
                self.emitter.command(ScheduleTimer("silences", change))

    def maybe_resolve(self, incident: Incident) -> None:
        if incident.incident_id not in self.state.incidents or not self.all_resolved(incident):
            return
        actions = [self.state.actions[c] for c in incident.commands if c in self.state.actions]
        if any(a.status in (ActionStatus.ALLOWED, ActionStatus.STARTED) for a in actions):
            return  # wait for the action's outcome before closing
        if incident.flapping and not self.setup.correlation.flaps.is_calm(
            incident.fingerprints, self.emitter.now
        ):
            # A flapping incident stays open until it has been calm for a whole window.
            calm = self.calm_at(incident)
            if calm is not None:
                self.emitter.command(ScheduleTimer(f"calm:{incident.incident_id}", calm))
            return
        reason = "all signals resolved"
        for action in actions:
            if action.status is ActionStatus.VERIFYING:
                self.emitter.emit(
                    VerificationPassed(
                        command_id=action.command_id,
                        incident_id=incident.incident_id,
                        check="signals resolved within the verification window",
                    ),
                    incident.incident_id,
                )
                reason = f"resolved after {action.action} on {action.target}, verified"
        self.emitter.emit(
            IncidentResolved(incident_id=incident.incident_id, reason=reason), incident.incident_id
        )

    def calm_at(self, incident: Incident) -> datetime | None:
        """When a flapping incident's signals will have been calm for a whole window."""
        return self.setup.correlation.flaps.calm_at(incident.fingerprints)

    def all_resolved(self, incident: Incident) -> bool:
        return all(
            (signal := self.state.signals.get(fp)) is None or signal.status == "resolved"
            for fp in incident.fingerprints
        )

    def _page_next_tier(self, incident: Incident) -> None:
        """Nobody acknowledged in time: page the next tier; the last one repeats, overdue."""
        tiers = self.setup.active.config.escalation.tiers(incident.service)
        current = max(incident.escalation_tier, 0)
        wait = format_duration(tiers[min(current, len(tiers) - 1)].wait)
        if current + 1 < len(tiers):
            self.pager.escalate(
                incident,
                f"not acknowledged within {wait}; paging {', '.join(tiers[current + 1].notify)}",
                tier=current + 1,
            )
            return
        repeat = incident.last_tier_pages
        if not incident.overdue:
            self.emitter.note(
                incident.incident_id, "overdue", f"the last tier has not acknowledged within {wait}"
            )
        self.pager.escalate(
            incident,
            f"still not acknowledged: paging {', '.join(tiers[-1].notify)} again "
            f"({repeat} of {self.setup.active.config.escalation.repeat_last} repeats)",
            tier=current,
        )

    def tick(self) -> None:
        """Silent signals, incidents ready to plan (or re-examine), flapping calm-downs."""
        now = self.emitter.now
        self._time_out_silent_signals()
        incidents = self.due.due(now)  # what a scan of every incident would act on, and more
        for incident in incidents:
            due = incident.escalation_due
            if due is not None and due <= now and not incident.acknowledged:
                self._page_next_tier(incident)
            if not incident.planned and incident.ready_at <= now:
                self._plan(incident)
            elif incident.flapping and self.all_resolved(incident):
                self.maybe_resolve(incident)
        for incident in incidents:  # still due (muted, say): looked at again at the next tick
            self.due.deadlines(incident, by=now)

    APPLIERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        SignalReceived: _apply_signal,
        SilenceCreated: _apply_silence,
        SilenceExpired: _apply_silence,
        Tick: _apply_tick,
        IncidentOpened: _apply_opened,
        IncidentUpdated: _apply_updated,
        IncidentResolved: _apply_resolved,
        Escalated: _apply_escalated,
        Acknowledged: _apply_acknowledged,
    }
    REACTIONS: ClassVar[dict[type[Payload], Callable[[Any, Any, Prior], None]]] = {
        SignalReceived: _on_signal,
        SilenceCreated: _on_silence,
        SilenceExpired: _on_silence,
    }


def interned(mapping: Mapping[str, str], *, values: bool = True) -> dict[str, str]:
    """A copy of labels (or annotations) for the state, its names (and values) interned: a
    fleet's alerts repeat the same few names and values (severity, service, job) thousands of
    times, and the state holds one string of each."""
    if values:
        return {intern(name): intern(value) for name, value in mapping.items()}
    return {intern(name): value for name, value in mapping.items()}


def _key_text(group_key: dict[str, str]) -> str:
    return to_json(group_key).decode()
