"""Safe mode as a guardrail: where onduty cannot trust what it sees, autonomy is lowered to
`suggest`: every autonomous proposal there is denied, naming the problem (`lifecycle/
safemode.py` decides when a scope enters and leaves safe mode)."""

from __future__ import annotations

from dataclasses import dataclass

from onduty.events import RuleOutcome
from onduty.govern.base import outcome
from onduty.govern.context import Facts


@dataclass(frozen=True)
class SafeModeRule:
    name: str = "safe-mode"

    def check(self, facts: Facts) -> RuleOutcome | None:
        if facts.approved_by is not None:
            return None  # a person looked at this proposal and decided: safe mode asks for that
        for mode in facts.safe_modes:
            for service in (facts.incident_service, facts.target_service):
                if mode.covers(service):
                    where = service or "every service"
                    return outcome(
                        self.name,
                        "deny",
                        f"{self.name}: {where} is in safe mode since "
                        f"{mode.since.strftime('%Y-%m-%d %H:%M:%S')}Z because {mode.reason}; "
                        "autonomy is lowered to suggest: proposed to humans, not run",
                    )
        return None
