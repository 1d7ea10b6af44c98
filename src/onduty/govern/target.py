"""An empty or unknown target always means do nothing."""

from __future__ import annotations

from dataclasses import dataclass

from onduty.events import RuleOutcome
from onduty.govern.base import outcome
from onduty.govern.context import Facts


@dataclass(frozen=True)
class KnownTarget:
    """An empty or unknown target always means do nothing."""

    name: str = "known-target"

    def check(self, facts: Facts) -> RuleOutcome | None:
        target = facts.proposal.target
        if not target:
            return outcome(
                self.name, "deny", f"{self.name}: no target ({facts.proposal.rationale})"
            )
        if not facts.target_known:
            return outcome(self.name, "deny", f"{self.name}: {target!r} is not in the inventory")
        if (
            facts.incident_service is not None
            and facts.target_service is not None
            and facts.target_service != facts.incident_service
        ):
            return outcome(
                self.name,
                "deny",
                f"{self.name}: {target} belongs to {facts.target_service}, "
                f"not to the incident's service {facts.incident_service}",
            )
        return None
