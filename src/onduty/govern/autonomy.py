"""Autonomy levels: observe < suggest < approve < act, per service and per runbook."""

from __future__ import annotations

from dataclasses import dataclass

from onduty.config import Autonomy
from onduty.events import RuleOutcome
from onduty.govern.base import outcome
from onduty.govern.context import Facts


@dataclass(frozen=True)
class AutonomyLevel:
    """Progressive empowerment: observe < suggest < approve < act."""

    name: str = "autonomy"

    def check(self, facts: Facts) -> RuleOutcome | None:
        where = facts.incident_service or "this service"
        level = facts.autonomy
        if level is Autonomy.OBSERVE:
            return outcome(self.name, "deny", f"{self.name}: {where} is at observe: record only")
        if level is Autonomy.SUGGEST:
            return outcome(
                self.name,
                "deny",
                f"{self.name}: {where} is at suggest: proposed to humans, not run",
            )
        if level is Autonomy.APPROVE and facts.approved_by is None:
            needs = (
                f"the advisor's proposals for {where} need"
                if facts.proposal.agent == "advisor"
                else f"{where} needs"
            )
            return outcome(
                self.name, "require_approval", f"{self.name}: {needs} a human to approve"
            )
        if facts.approved_by is not None:
            return outcome(self.name, "allow", f"{self.name}: approved by {facts.approved_by}")
        return outcome(self.name, "allow", f"{self.name}: {where} may act within guardrails")
