"""Kill switches: an operator stops automation at once for one actuator, runbook or service.

A switch enters the core as an input event (`KillSwitchSet`, `KillSwitchCleared`), so replay
reproduces every verdict it caused. An actuator is named by the action it runs
(`process.restart`) or an action family (`process`, covering every `process.*` action)."""

from __future__ import annotations

from dataclasses import dataclass

from onduty.events import RuleOutcome
from onduty.govern.base import outcome
from onduty.govern.context import Facts
from onduty.state import KillSwitch


def applies(switch: KillSwitch, facts: Facts) -> bool:
    proposal = facts.proposal
    if switch.kind == "runbook":
        return proposal.runbook == switch.name
    if switch.kind == "actuator":
        return proposal.action == switch.name or proposal.action.startswith(switch.name + ".")
    if switch.kind == "service":
        return switch.name in (facts.incident_service, facts.target_service)
    return False


def describe(switch: KillSwitch) -> str:
    by = f" by {switch.set_by}" if switch.set_by else ""
    because = f": {switch.reason}" if switch.reason else ""
    return f"kill switch on {switch.kind} {switch.name} (set{by}{because})"


@dataclass(frozen=True)
class KillSwitchRule:
    name: str = "kill-switch"

    def check(self, facts: Facts) -> RuleOutcome | None:
        for switch in facts.kill_switches:
            if applies(switch, facts):
                return outcome(self.name, "deny", f"{self.name}: {describe(switch)}")
        return None
