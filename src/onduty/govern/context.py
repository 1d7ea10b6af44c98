"""The facts a verdict is computed from: the proposal, where it lands, and recent history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from onduty.config import Autonomy
from onduty.state import ActionRecord, BreakerState, KillSwitch, SafeMode
from onduty.think.proposal import Proposal


@dataclass(frozen=True)
class Facts:
    proposal: Proposal
    now: datetime
    incident_service: str | None
    target_service: str | None
    target_known: bool
    autonomy: Autonomy
    approved_by: str | None
    history: Sequence[ActionRecord]
    in_flight_by_service: dict[str, int]
    service_size: int
    service_instances: tuple[str, ...] = ()
    in_flight_targets: frozenset[str] = frozenset()
    """Targets of actions in flight on the incident's service."""
    firing_by_instance: dict[str, frozenset[str]] = field(default_factory=dict)
    """For each instance of the incident's service with firing signals, their alert names."""
    alerting_services: int = 0
    total_services: int = 0
    alerting_instances: int = 0
    total_instances: int = 0
    breaker: BreakerState | None = None
    """The circuit breaker of this action on this target."""
    kill_switches: tuple[KillSwitch, ...] = ()
    """The active kill switches (all of them; the rule tells which apply)."""
    safe_modes: tuple[SafeMode, ...] = ()
    """The scopes in safe mode (all of them; the rule tells which apply)."""
    variables: Any = None
    """The CEL variables (signal, incident, action, target, service, now), prepared once per
    verdict with `onduty.expressions.prepare`; None when no rule needs them."""
