"""The policy: the guardrails of a configuration, composed. The most restrictive verdict wins:
deny over require_approval over allow; every rule that had an opinion is reported."""

from __future__ import annotations

from onduty.config import Config
from onduty.events import PolicyEvaluated, RuleOutcome, Verdict
from onduty.expressions import Condition
from onduty.govern.context import Facts
from onduty.govern.guardrails import (
    AutonomyLevel,
    ConcurrencyRule,
    ConditionRule,
    Guardrail,
    KnownTarget,
    RateLimitRule,
)

_SEVERITY: dict[Verdict, int] = {"allow": 0, "require_approval": 1, "deny": 2}


class Policy:
    def __init__(self, config: Config) -> None:
        self.version = config.version
        rules: list[Guardrail] = [KnownTarget(), AutonomyLevel()]
        for guardrail in config.policy.guardrails:
            if guardrail.rate is not None:
                rules.append(RateLimitRule(guardrail.name, guardrail.rate))
            elif guardrail.concurrent is not None:
                rules.append(ConcurrencyRule(guardrail.name, guardrail.concurrent))
            elif guardrail.when is not None and guardrail.effect is not None:
                rules.append(
                    ConditionRule(
                        guardrail.name, Condition.compile(guardrail.when), guardrail.effect
                    )
                )
        self.rules = tuple(rules)
        self.needs_variables = any(isinstance(rule, ConditionRule) for rule in rules)

    def evaluate(self, facts: Facts, *, command_id: str, incident_id: str) -> PolicyEvaluated:
        outcomes: list[RuleOutcome] = []
        for rule in self.rules:
            outcome = rule.check(facts)
            if outcome is not None:
                outcomes.append(outcome)
        verdict: Verdict = "allow"
        reason = "no guardrail objected"
        for outcome in outcomes:
            if _SEVERITY[outcome.effect] > _SEVERITY[verdict]:
                verdict, reason = outcome.effect, outcome.reason
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
