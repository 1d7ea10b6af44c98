"""The policy: a configuration's guardrails, composed.

Every rule is evaluated; each that has an opinion is reported with its reason. The most
restrictive opinion wins: deny over require_approval over allow. An `allow` rule therefore never
overrides a deny: rules can only add caution, which is what makes a policy safe to extend.
A rule with a `when` applies only where its condition holds."""

from __future__ import annotations

from dataclasses import dataclass

from onduty.config import Config
from onduty.config import Guardrail as GuardrailSpec
from onduty.events import FleetCount, PolicyEvaluated, RuleOutcome, Verdict
from onduty.expressions import Condition
from onduty.govern.autonomy import AutonomyLevel
from onduty.govern.base import Guardrail
from onduty.govern.blast import BlastRadiusRule
from onduty.govern.breaker import BreakerRule
from onduty.govern.concurrency import ConcurrencyRule
from onduty.govern.condition import ConditionRule
from onduty.govern.context import Facts
from onduty.govern.freeze import FreezeRule
from onduty.govern.killswitch import KillSwitchRule
from onduty.govern.outage import OutageBrakeRule
from onduty.govern.rate import RateLimitRule
from onduty.govern.safemode import SafeModeRule
from onduty.govern.target import KnownTarget

SEVERITY: dict[Verdict, int] = {"allow": 0, "require_approval": 1, "deny": 2}


@dataclass(frozen=True)
class Scoped:
    """A rule that applies only where a condition holds."""

    rule: Guardrail
    condition: Condition

    @property
    def name(self) -> str:
        return self.rule.name

    def check(self, facts: Facts) -> RuleOutcome | None:
        if not self.condition.holds(facts.variables):
            return None
        return self.rule.check(facts)


def build_rule(spec: GuardrailSpec) -> Guardrail:
    rule: Guardrail
    if spec.rate is not None:
        rule = RateLimitRule(spec.name, spec.rate)
    elif spec.concurrent is not None:
        rule = ConcurrencyRule(spec.name, spec.concurrent)
    elif spec.blast is not None:
        rule = BlastRadiusRule(spec.name, spec.blast)
    elif spec.outage is not None:
        rule = OutageBrakeRule(spec.name, spec.outage)
    elif spec.freeze is not None:
        rule = FreezeRule(spec.name, spec.freeze)
    else:
        assert spec.when is not None and spec.effect is not None
        return ConditionRule(spec.name, Condition.compile(spec.when), spec.effect)
    return Scoped(rule, Condition.compile(spec.when)) if spec.when else rule


class Policy:
    def __init__(self, config: Config) -> None:
        self.version = config.version
        rules: list[Guardrail] = [
            KnownTarget(),
            AutonomyLevel(),
            BreakerRule(config.policy.breaker),
            KillSwitchRule(),
            SafeModeRule(),
        ]
        rules.extend(build_rule(spec) for spec in config.policy.guardrails)
        self.rules = tuple(rules)
        self.needs_variables = any(isinstance(rule, ConditionRule | Scoped) for rule in rules)
        self.needs_in_flight = any(
            isinstance(
                rule.rule if isinstance(rule, Scoped) else rule, ConcurrencyRule | BlastRadiusRule
            )
            for rule in rules
        )
        self._across_fleet = tuple(
            rule
            for rule in rules
            if isinstance(
                inner := rule.rule if isinstance(rule, Scoped) else rule,
                RateLimitRule | BlastRadiusRule,
            )
            and inner.limit.across == "fleet"
        )
        # Only these rules look at the whole fleet; without them, gathering skips that scan.
        self.needs_fleet = any(
            isinstance(
                rule.rule if isinstance(rule, Scoped) else rule, BlastRadiusRule | OutageBrakeRule
            )
            for rule in rules
        )

    def fleet_counts(self, facts: Facts) -> list[FleetCount]:
        """The fleet-wide counts an action this policy allows must still pass (its rate
        limits and blast radii `across: fleet` that apply to it), in the policy's order."""
        counts = []
        for rule in self._across_fleet:
            inner = rule.rule if isinstance(rule, Scoped) else rule
            if isinstance(rule, Scoped) and not rule.condition.holds(facts.variables):
                continue
            assert isinstance(inner, RateLimitRule | BlastRadiusRule)
            count = inner.fleet_count(facts)
            if count is not None:
                counts.append(count)
        return counts

    def evaluate(self, facts: Facts, *, command_id: str, incident_id: str) -> PolicyEvaluated:
        outcomes: list[RuleOutcome] = []
        for rule in self.rules:
            opinion = rule.check(facts)
            if opinion is not None:
                outcomes.append(opinion)
        verdict: Verdict = "allow"
        reason = "no guardrail objected"
        for opinion in outcomes:
            if SEVERITY[opinion.effect] > SEVERITY[verdict]:
                verdict, reason = opinion.effect, opinion.reason
        if verdict == "allow" and outcomes:
            reason = outcomes[-1].reason
        return PolicyEvaluated(
            command_id=command_id,
            incident_id=incident_id,
            verdict=verdict,
            policy_version=self.version,
            rules=outcomes,
            reason=reason,
        )
