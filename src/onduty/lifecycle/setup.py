"""The active configuration as the lifecycles use it: what is derived from it (the policy, the
runbook agent, the inventory, the correlator), a candidate policy beside it, and the questions
asked of it together with the state (an incident's CEL variables, a service's autonomy)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from onduty.config import Autonomy, Config, Service
from onduty.correlate.correlator import Correlator
from onduty.expressions import Condition
from onduty.govern import Policy
from onduty.govern.variables import situation_variables
from onduty.state import Incident, SignalState, State
from onduty.think import RunbookAgent

# How long allowed actions are remembered for rate limits when no rule asks for longer.
_MIN_HISTORY_SECONDS = 86400.0


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
        self.judges_quality = config.quality.enabled


@dataclass(frozen=True)
class Candidate:
    """A policy evaluated beside the active one: in `shadow` never enforced, as a `canary`
    enforced where its selector holds."""

    configured: Configured
    role: str
    selector: Condition | None


class Setup:
    """The active configuration (None until a policy activates) and the correlator built for
    it, both rebuilt by `activate`; the candidate policy, rebuilt by `load_candidate`."""

    def __init__(self, state: State, override: Config | None = None) -> None:
        self.state = state
        self._override = override
        self.configured: Configured | None = None
        self.correlator: Correlator | None = None
        self.candidate: Candidate | None = None

    def activate(self, document: dict[str, Any]) -> None:
        config = self._override or Config.model_validate(document)
        self.configured = Configured(config)
        self.correlator = Correlator(self.state, config.correlation)

    def load_candidate(self) -> None:
        state = self.state
        if state.candidate is None:
            self.candidate = None
            return
        selector = state.candidate_selector
        self.candidate = Candidate(
            Configured(Config.model_validate(state.candidate)),
            state.candidate_role,
            Condition.compile(selector) if selector else None,
        )

    @property
    def active(self) -> Configured:
        assert self.configured is not None, "no policy is active"
        return self.configured

    @property
    def correlation(self) -> Correlator:
        assert self.correlator is not None, "no policy is active"
        return self.correlator

    def autonomy(self, service: Service | None, runbook_name: str, agent: str = "") -> Autonomy:
        """How far an action may go on its own: the service's level (or its override), capped
        by its runbook's, and for the advisor's proposals by the advisor's cap."""
        if service is None:
            return Autonomy.SUGGEST  # acting on something we cannot place is never autonomous
        override = self.state.autonomy_overrides.get(service.name)
        level = Autonomy.parse(override) if override else service.autonomy
        runbook = self.active.agent.runbook(runbook_name)
        if runbook is not None and runbook.autonomy is not None:
            level = min(level, runbook.autonomy)
        if agent == "advisor":
            level = min(level, self.active.config.advisor.cap(service.name))
        return level

    def service_of(self, labels: dict[str, str]) -> str | None:
        """The service a signal is about: its `service` label, else the owner of its
        `instance` or `job`."""
        owner = self.active.owner
        if labels.get("service"):
            return labels["service"]
        for label in ("instance", "job"):
            if labels.get(label) in owner:
                return owner[labels[label]]
        return None

    def primary_signal(self, incident: Incident, now: datetime) -> SignalState | None:
        """The signal an incident is acted on for: the first firing one that is not muted
        (another signal of the group may be under maintenance), else the first one."""
        members = [s for fp in incident.fingerprints if (s := self.state.signals.get(fp))]
        firing = [s for s in members if s.status == "firing"]
        correlator = self.correlator
        for signal in firing:
            if correlator is None or not correlator.mute_reason(
                signal.fingerprint, signal.labels, now
            ):
                return signal
        candidates = firing or members
        return candidates[0] if candidates else None

    def variables(self, incident: Incident, now: datetime) -> dict[str, Any]:
        """The variables conditions and templates see of an incident: signal, incident,
        service, now (`govern/variables.py`)."""
        first = self.primary_signal(incident, now)
        service = self.active.services.get(incident.service or "")
        return situation_variables(
            labels=first.labels if first else {},
            annotations=first.annotations if first else {},
            status=first.status if first else "resolved",
            source=first.source if first else "",
            fingerprint=first.fingerprint if first else "",
            incident_id=incident.incident_id,
            title=incident.title,
            service_name=incident.service or "",
            signals=len(incident.fingerprints),
            flapping=incident.flapping,
            service=service,
            autonomy=self.autonomy(service, "") if service else None,
            now=now,
        )
