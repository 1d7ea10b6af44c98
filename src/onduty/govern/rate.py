"""Rate limits: at most N matching actions per key in a sliding window."""

from __future__ import annotations

from dataclasses import dataclass

from onduty.config import RateLimit
from onduty.events import FleetCount, RuleOutcome
from onduty.govern.base import outcome, recent, window_text
from onduty.govern.context import Facts


@dataclass(frozen=True)
class RateLimitRule:
    """At most `max` matching actions per key in a sliding window."""

    name: str
    limit: RateLimit

    def check(self, facts: Facts) -> RuleOutcome | None:
        proposal = facts.proposal
        if self.limit.action not in ("*", proposal.action):
            return None
        key = self._key(proposal.target, facts.incident_service, proposal.runbook)
        since = facts.now - self.limit.per
        count = sum(
            1
            for record in recent(facts.history, since)
            if self.limit.action in ("*", record.action)
            and self._key(record.target, record.service, record.runbook) == key
        )
        window = window_text(self.limit.per.total_seconds())
        what = proposal.action if self.limit.action != "*" else "actions"
        if count >= self.limit.max:
            return outcome(
                self.name,
                "deny",
                f"{self.name}: {count} {what} on {key} in the last {window}, "
                f"limit {self.limit.max}",
            )
        return None

    def fleet_count(self, facts: Facts) -> FleetCount | None:
        """What to count across the fleet for this proposal (`across: fleet`), or None: the
        same key as here, in a scope of this rule's own."""
        proposal = facts.proposal
        if self.limit.across != "fleet" or self.limit.action not in ("*", proposal.action):
            return None
        key = self._key(proposal.target, facts.incident_service, proposal.runbook)
        return FleetCount(
            rule=self.name,
            scope=f"rate:{self.name}:{key}",
            limit=self.limit.max,
            window_s=self.limit.per.total_seconds(),
            target=proposal.target,
        )

    def _key(self, target: str, service: str | None, runbook: str) -> str:
        if self.limit.key == "service":
            return service or ""
        if self.limit.key == "runbook":
            return runbook
        return target
