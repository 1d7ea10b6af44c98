"""The circuit breaker, per action and target: repeated failures stop automation from hammering
something that does not respond to it; after a cool-down one trial is let through."""

from __future__ import annotations

from dataclasses import dataclass

from onduty.config import Breaker, format_duration
from onduty.events import RuleOutcome
from onduty.govern.base import outcome
from onduty.govern.context import Facts


def breaker_key(action: str, target: str) -> str:
    return f"{action}|{target}"


@dataclass(frozen=True)
class BreakerRule:
    settings: Breaker
    name: str = "breaker"

    def check(self, facts: Facts) -> RuleOutcome | None:
        proposal = facts.proposal
        state = facts.breaker
        if state is None or state.opened_at is None or state.failures < self.settings.failures:
            return None
        where = f"{proposal.action} on {proposal.target}"
        trial_at = state.opened_at + self.settings.cooldown
        if facts.now < trial_at:
            return outcome(
                self.name,
                "deny",
                f"{self.name}: open after {state.failures} failures of {where}; "
                f"a trial is allowed {format_duration(self.settings.cooldown)} after the last "
                f"({trial_at:%Y-%m-%d %H:%M:%S}Z)",
            )
        if proposal.target in facts.in_flight_targets:
            return outcome(
                self.name, "deny", f"{self.name}: half-open, a trial of {where} is already running"
            )
        return None  # half-open: this proposal is the trial
