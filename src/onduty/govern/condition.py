"""Condition rules: a CEL expression over the proposal's context, with an effect."""

from __future__ import annotations

from dataclasses import dataclass

from onduty.events import RuleOutcome, Verdict
from onduty.expressions import Condition
from onduty.govern.base import outcome
from onduty.govern.context import Facts


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
            return outcome(
                self.name,
                "allow",
                f"{self.name}: approval required and given by {facts.approved_by}",
            )
        return outcome(self.name, self.effect, f"{self.name}: `{self.condition.source}` holds")
