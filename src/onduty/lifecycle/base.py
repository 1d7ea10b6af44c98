"""What both lifecycles share: the state, the active configuration, emitting decisions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from onduty.commands import Command, Notify, ScheduleTimer
from onduty.config import Autonomy, Config, Service
from onduty.correlate.correlator import Correlator
from onduty.events import (
    Escalated,
    Event,
    Payload,
    make_event,
)
from onduty.expressions import Condition
from onduty.govern import Policy
from onduty.state import (
    Incident,
    SignalState,
    State,
)
from onduty.think import RunbookAgent

# How long allowed actions are remembered for rate limits when no rule asks for longer.
_MIN_HISTORY_SECONDS = 86400.0


@dataclass(frozen=True)
class Decision:
    """What handling one input produced: facts to record (in order), then effects to run."""

    events: tuple[Event, ...] = ()
    commands: tuple[Command, ...] = ()


def derive_id(prefix: str, *parts: str) -> str:
    """A stable id from the facts that caused it: a re-issued command gets the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
    return f"{prefix}-{digest}"


class Configured:
    """Everything derived from the active configuration, rebuilt when a policy activates."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.policy = Policy(config)
        self.agent = RunbookAgent(config.runbooks)
        self.excludes = {r.name: frozenset(r.excludes) for r in config.runbooks if r.excludes}
        self.services: dict[str, Service] = {s.name: s for s in config.services}
        self.members = {s.name: frozenset(s.instances) for s in config.services}
        self.total_instances = sum(len(s.instances) for s in config.services)
        self.owner: dict[str, str] = {}
        for service in config.services:
            self.owner[service.name] = service.name
            for instance in service.instances:
                self.owner[instance] = service.name
        windows = [
            g.rate.per.total_seconds() for g in config.policy.guardrails if g.rate is not None
        ]
        self.history_seconds = max([_MIN_HISTORY_SECONDS, *windows])


@dataclass(frozen=True)
class Candidate:
    """A policy evaluated beside the active one: in `shadow` never enforced, as a `canary`
    enforced where its selector holds."""

    configured: Configured
    role: str
    selector: Condition | None


class CoreBase:
    """The machinery the lifecycles share. Subclasses react to inputs by emitting decision
    events (applied at once) and commands; they never touch the outside world."""

    state: State
    _configured: Configured | None
    _correlator: Correlator | None
    _candidate: Candidate | None
    _cause: Event | None
    _events: list[Event]
    _commands: list[Command]

    # Implemented by the lifecycles; declared here so each can call across.
    def _plan(self, incident: Incident) -> None:
        raise NotImplementedError

    def _maybe_resolve(self, incident: Incident) -> None:
        raise NotImplementedError

    def _undo(self, incident: Incident, command_id: str) -> None:
        raise NotImplementedError

    def _muted(self, incident: Incident) -> bool:
        raise NotImplementedError

    def _all_resolved(self, incident: Incident) -> bool:
        raise NotImplementedError

    def _apply(self, body: Payload, event: Event) -> None:
        raise NotImplementedError

    def _setup(self) -> Configured:
        assert self._configured is not None, "no policy is active"
        return self._configured

    def _correlation(self) -> Correlator:
        assert self._correlator is not None, "no policy is active"
        return self._correlator

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

    def _escalate(
        self,
        incident: Incident,
        reason: str,
        command_id: str | None = None,
        tier: int | None = None,
    ) -> None:
        """Hand the incident to humans: page `tier` (by default the tier already paged, or the
        first), and wait for an acknowledgement before paging the next one."""
        tiers = self._setup().config.escalation.tiers(incident.service)
        level = min(max(incident.escalation_tier, 0) if tier is None else tier, len(tiers) - 1)
        event = self._emit(
            Escalated(
                incident_id=incident.incident_id,
                reason=reason,
                tier=level,
                notify=list(tiers[level].notify),
                command_id=command_id,
            ),
            incident.incident_id,
        )
        self._commands.append(
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
            self._commands.append(
                ScheduleTimer(f"escalate:{incident.incident_id}", incident.escalation_due)
            )

    def _primary_signal(self, incident: Incident) -> SignalState | None:
        """The signal an incident is acted on for: the first firing one that is not muted
        (another signal of the group may be under maintenance), else the first one."""
        members = [s for fp in incident.fingerprints if (s := self.state.signals.get(fp))]
        firing = [s for s in members if s.status == "firing"]
        correlator = self._correlator
        for signal in firing:
            if correlator is None or not correlator.mute_reason(
                signal.fingerprint, signal.labels, self._now
            ):
                return signal
        candidates = firing or members
        return candidates[0] if candidates else None

    def _context(self, incident: Incident) -> dict[str, Any]:
        """The variables conditions and templates see: signal, incident, service, now."""
        setup = self._setup()
        first = self._primary_signal(incident)
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

    def _autonomy(self, service: Service | None, runbook_name: str) -> Autonomy:
        if service is None:
            return Autonomy.SUGGEST  # acting on something we cannot place is never autonomous
        override = self.state.autonomy_overrides.get(service.name)
        level = Autonomy.parse(override) if override else service.autonomy
        runbook = self._setup().agent.runbook(runbook_name)
        if runbook is not None and runbook.autonomy is not None:
            level = min(level, runbook.autonomy)
        return level
