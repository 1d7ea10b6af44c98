"""The outage brake: when a large part of the fleet alerts at once, stop fixing and call humans.

Automation that restarts things one incident at a time can make a wide outage worse (a shared
dependency is down, a network partition); past the threshold every autonomous action is denied
and the incident is escalated."""

from __future__ import annotations

from dataclasses import dataclass

from onduty.config import OutageBrake
from onduty.events import RuleOutcome
from onduty.govern.base import outcome
from onduty.govern.context import Facts


@dataclass(frozen=True)
class OutageBrakeRule:
    name: str
    brake: OutageBrake

    def check(self, facts: Facts) -> RuleOutcome | None:
        if self.brake.of == "services":
            alerting, total = facts.alerting_services, facts.total_services
        else:
            alerting, total = facts.alerting_instances, facts.total_instances
        if total == 0 or alerting / total <= self.brake.max_fraction:
            return None
        return outcome(
            self.name,
            "deny",
            f"{self.name}: {alerting} of {total} {self.brake.of} are alerting "
            f"(more than {self.brake.max_fraction:.0%}): automation pauses during an outage",
        )
