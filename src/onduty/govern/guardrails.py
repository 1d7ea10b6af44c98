"""The guardrail kinds. Each checks one thing and, when it has an opinion, says why."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from onduty.config import Autonomy, Concurrency, RateLimit
from onduty.events import RuleOutcome, Verdict
from onduty.expressions import Condition
from onduty.govern.context import Facts


class Guardrail(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, facts: Facts) -> RuleOutcome | None:
        """An outcome when the rule has an opinion on this proposal, else None."""
        ...


def _outcome(rule: str, effect: Verdict, reason: str) -> RuleOutcome:
    return RuleOutcome(rule=rule, effect=effect, reason=reason)


@dataclass(frozen=True)
class KnownTarget:
    """An empty or unknown target always means do nothing."""

    name: str = "known-target"

    def check(self, facts: Facts) -> RuleOutcome | None:
        target = facts.proposal.target
        if not target:
            return _outcome(
                self.name, "deny", f"{self.name}: no target ({facts.proposal.rationale})"
            )
        if not facts.target_known:
            return _outcome(self.name, "deny", f"{self.name}: {target!r} is not in the inventory")
        if (
            facts.incident_service is not None
            and facts.target_service is not None
            and facts.target_service != facts.incident_service
        ):
            return _outcome(
                self.name,
                "deny",
                f"{self.name}: {target} belongs to {facts.target_service}, "
                f"not to the incident's service {facts.incident_service}",
            )
        return None


@dataclass(frozen=True)
class AutonomyLevel:
    """Progressive empowerment: observe < suggest < approve < act."""

    name: str = "autonomy"

    def check(self, facts: Facts) -> RuleOutcome | None:
        where = facts.incident_service or "this service"
        level = facts.autonomy
        if level is Autonomy.OBSERVE:
            return _outcome(self.name, "deny", f"{self.name}: {where} is at observe: record only")
        if level is Autonomy.SUGGEST:
            return _outcome(
                self.name,
                "deny",
                f"{self.name}: {where} is at suggest: proposed to humans, not run",
            )
        if level is Autonomy.APPROVE and facts.approved_by is None:
            return _outcome(
                self.name, "require_approval", f"{self.name}: {where} needs a human to approve"
            )
        if facts.approved_by is not None:
            return _outcome(self.name, "allow", f"{self.name}: approved by {facts.approved_by}")
        return _outcome(self.name, "allow", f"{self.name}: {where} may act within guardrails")


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
            for record in facts.history
            if record.at > since
            and self.limit.action in ("*", record.action)
            and self._key(record.target, record.service, record.runbook) == key
        )
        window = _window(self.limit.per.total_seconds())
        what = proposal.action if self.limit.action != "*" else "actions"
        if count >= self.limit.max:
            return _outcome(
                self.name,
                "deny",
                f"{self.name}: {count} {what} on {key} in the last {window}, "
                f"limit {self.limit.max}",
            )
        return None

    def _key(self, target: str, service: str | None, runbook: str) -> str:
        if self.limit.key == "service":
            return service or ""
        if self.limit.key == "runbook":
            return runbook
        return target


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
            return _outcome(
                self.name,
                "deny",
                f"{self.name}: {busy} action(s) in flight on {service}, limit {allowed}",
            )
        return None


@dataclass(frozen=True)
class ConditionRule:
    """A CEL condition over the proposal's context, with a declared effect."""

    name: str
    condition: Condition
    effect: Verdict

    def check(self, facts: Facts) -> RuleOutcome | None:
        if not self.condition.holds(facts.variables):
            return None
        if self.effect == "require_approval" and facts.approved_by is not None:
            return _outcome(
                self.name,
                "allow",
                f"{self.name}: approval required and given by {facts.approved_by}",
            )
        return _outcome(self.name, self.effect, f"{self.name}: `{self.condition.source}` holds")


def _window(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return (
                f"{count}{unit}" if count != 1 else {"d": "day", "h": "hour", "m": "minute"}[unit]
            )
    return f"{seconds:g}s"
