"""Concurrency: at most N actions in flight per service."""

from __future__ import annotations

import math
from dataclasses import dataclass

from onduty.config import Concurrency
from onduty.events import RuleOutcome
from onduty.govern.base import outcome
from onduty.govern.context import Facts


@dataclass(frozen=True)
class ConcurrencyRule:
    """At most N (or a fraction of the service's instances) actions in flight per service."""

    name: str
    limit: Concurrency

    def check(self, facts: Facts) -> RuleOutcome | None:
        service = facts.incident_service or facts.target_service
        if service is None:
            return None
        if self.limit.max is not None:
            allowed = self.limit.max
        else:
            allowed = math.floor((self.limit.max_fraction or 0.0) * facts.service_size)
        busy = facts.in_flight_by_service.get(service, 0)
        if busy >= allowed:
            return outcome(
                self.name,
                "deny",
                f"{self.name}: {busy} action(s) in flight on {service}, limit {allowed}",
            )
        return None
