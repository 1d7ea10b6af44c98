"""Safe mode: when onduty cannot trust what it sees (a source silent, skewed or drifting, its own
log, bus or pace failing) it stops acting on its own where that matters, says why, and steps
forward again when the problem is over.

Each problem puts one scope in safe mode: autonomy there is lowered to `suggest` (the
`safe-mode` guardrail denies every autonomous proposal, naming the problem) and the escalation
tiers are paged once, through an incident of its own that resolves when the scope recovers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from onduty.events import (
    DependencyDegraded,
    DependencyRecovered,
    Event,
    IncidentOpened,
    IncidentResolved,
    Payload,
    SafeModeEntered,
    SafeModeExited,
)
from onduty.lifecycle.base import Emitter, Pager, Prior, derive_id
from onduty.lifecycle.setup import Setup
from onduty.state import SafeMode, State


def where(services: list[str]) -> str:
    return ", ".join(services) if services else "every service"


@dataclass(eq=False, repr=False)
class SafeModes:
    state: State
    setup: Setup
    emitter: Emitter
    pager: Pager

    def applies_to(self, check: str) -> bool:
        return check in self.setup.active.config.quality.safe_mode

    def enter(self, scope: str, services: list[str], reason: str) -> None:
        """Put `services` (empty: every service) in safe mode for the problem `scope`, once; a
        scope already in safe mode widens to services it did not cover (a source that reports
        for one more service), without paging again."""
        current = self.state.safe_modes.get(scope)
        if current is not None:
            wider = [name for name in services if name not in current.services]
            if current.services and wider:
                self.emitter.emit(
                    SafeModeEntered(
                        scope=scope,
                        services=[*current.services, *wider],
                        reason=current.reason,
                        incident_id=current.incident_id,
                    ),
                    current.incident_id,
                )
            return
        assert self.emitter.cause is not None
        incident_id = derive_id("inc", self.emitter.cause.id, "safe-mode", scope)
        title = f"Safe mode for {where(services)}: {reason}"
        self.emitter.emit(
            IncidentOpened(
                incident_id=incident_id,
                group_key={"safe_mode": scope},
                service=services[0] if len(services) == 1 else None,
                title=title,
                fingerprint=f"safe-mode:{scope}",
            ),
            incident_id,
        )
        # Nothing is planned for it: it asks people to look, it has no runbook.
        self.emitter.note(incident_id, "planned", "")
        self.emitter.emit(
            SafeModeEntered(scope=scope, services=services, reason=reason, incident_id=incident_id),
            incident_id,
        )
        incident = self.state.incidents[incident_id]
        self.pager.escalate(
            incident,
            f"safe mode: autonomy lowered to suggest for {where(services)} because {reason}",
        )

    def exit(self, scope: str, reason: str) -> None:
        mode = self.state.safe_modes.get(scope)
        if mode is None:
            return
        self.emitter.emit(SafeModeExited(scope=scope, reason=reason), mode.incident_id)
        if mode.incident_id in self.state.incidents:
            self.emitter.emit(
                IncidentResolved(incident_id=mode.incident_id, reason=f"safe mode over: {reason}"),
                mode.incident_id,
            )

    def _apply_entered(self, body: SafeModeEntered, event: Event) -> None:
        current = self.state.safe_modes.get(body.scope)
        if current is not None:  # widened: since when and why stay
            current.services = list(body.services)
            return
        self.state.safe_modes[body.scope] = SafeMode(
            scope=body.scope,
            services=list(body.services),
            reason=body.reason,
            since=event.ts,
            incident_id=body.incident_id,
        )

    def _apply_exited(self, body: SafeModeExited, event: Event) -> None:
        self.state.safe_modes.pop(body.scope, None)

    def _on_dependency(self, body: DependencyDegraded | DependencyRecovered, before: Prior) -> None:
        scope = f"dependency:{body.component}"
        if isinstance(body, DependencyRecovered):
            self.exit(scope, f"{body.component} is healthy again")
        elif self.applies_to("dependency"):
            self.enter(scope, [], f"onduty's {body.component} is degraded: {body.reason}")

    APPLIERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        SafeModeEntered: _apply_entered,
        SafeModeExited: _apply_exited,
    }
    REACTIONS: ClassVar[dict[type[Payload], Callable[[Any, Any, Prior], None]]] = {
        DependencyDegraded: _on_dependency,
        DependencyRecovered: _on_dependency,
    }
