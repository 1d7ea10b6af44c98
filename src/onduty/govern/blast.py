"""Blast radius: how much of a service may be affected at once, like a PodDisruptionBudget.

Affected = instances already down (one of `down_alerts` firing), instances being acted on, and
instances acted on within the window. An action on an instance that is already affected adds
nothing; an action on a new one must keep the total within the limit; an action on the whole
service affects every instance."""

from __future__ import annotations

import math
from dataclasses import dataclass

from onduty.config import BlastRadius
from onduty.events import FleetCount, RuleOutcome
from onduty.govern.base import outcome, recent, window_text
from onduty.govern.context import Facts


@dataclass(frozen=True)
class BlastRadiusRule:
    name: str
    limit: BlastRadius

    def allowed(self, facts: Facts) -> int:
        if self.limit.max is not None:
            return self.limit.max
        return math.floor((self.limit.max_fraction or 0.0) * len(facts.service_instances))

    def affected(self, facts: Facts) -> set[str]:
        instances = set(facts.service_instances)
        since = facts.now - self.limit.window
        touched: set[str] = set(facts.in_flight_targets)
        touched.update(
            record.target
            for record in recent(facts.history, since)
            if record.service == facts.incident_service
        )
        affected = {target for target in touched if target in instances}
        if any(target not in instances for target in touched):
            affected = set(instances)  # an action on the whole service touched every instance
        down = set(self.limit.down_alerts)
        affected |= {i for i, names in facts.firing_by_instance.items() if names & down}
        return affected

    def fleet_count(self, facts: Facts) -> FleetCount | None:
        """What to count across the fleet for this proposal (`across: fleet`): the distinct
        instances of its service acted on within the window, every manager's, or None (an
        action on the whole service is judged here alone)."""
        proposal = facts.proposal
        if (
            self.limit.across != "fleet"
            or self.limit.action not in ("*", proposal.action)
            or proposal.target not in facts.service_instances
            or proposal.target in self.affected(facts)  # no more disruption: nothing counted
        ):
            return None
        return FleetCount(
            rule=self.name,
            scope=f"blast:{self.name}:{facts.incident_service or ''}",
            limit=self.allowed(facts),
            window_s=self.limit.window.total_seconds(),
            target=proposal.target,
            distinct=True,
        )

    def check(self, facts: Facts) -> RuleOutcome | None:
        proposal = facts.proposal
        if self.limit.action not in ("*", proposal.action) or not facts.service_instances:
            return None
        instances = set(facts.service_instances)
        adds = {proposal.target} if proposal.target in instances else instances
        affected = self.affected(facts)
        new = adds - affected
        if not new:
            return None  # everything it touches is already affected: no extra disruption
        allowed = self.allowed(facts)
        total = len(affected | adds)
        if total <= allowed:
            return None
        service = facts.incident_service or "the service"
        return outcome(
            self.name,
            "deny",
            f"{self.name}: {proposal.action} on {proposal.target} would make {total} of "
            f"{len(instances)} {service} instances affected within "
            f"{window_text(self.limit.window.total_seconds())} "
            f"({len(affected)} already down or acted on), limit {allowed}",
        )
