"""Verdicts on proposals: the facts gathered once per verdict, the active policy's verdict (or
a canary's, where its selector holds), and where a candidate policy disagrees."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onduty.commands import CountAcrossFleet
from onduty.events import (
    FleetCount,
    FleetCountAnswered,
    FleetCountRequested,
    PolicyEvaluated,
    PolicyShadowDiverged,
    RuleOutcome,
)
from onduty.expressions import prepare
from onduty.govern import Facts
from onduty.govern.facts import gather, history_counts
from onduty.govern.variables import proposal_variables
from onduty.lifecycle.base import Emitter
from onduty.lifecycle.setup import Setup
from onduty.state import ActionState, Incident, State
from onduty.think import Proposal


@dataclass(eq=False, repr=False)
class Verdicts:
    state: State
    setup: Setup
    emitter: Emitter
    on_facts: list[Callable[[Facts], None]] = field(default_factory=list)
    """Called with the facts of each verdict before any policy sees them (the table tests and
    the linter check theirs against these). The facts lend the live history: copy what you
    keep."""

    def decide(
        self,
        incident: Incident,
        action: ActionState,
        context: dict[str, Any],
        approved_by: str | None,
    ) -> PolicyEvaluated | None:
        """The verdict on `action`, recorded: the active policy's, or where a canary's selector
        holds the canary's; a candidate that disagrees is recorded beside it. None when the
        deciding policy allows it here but it must still pass fleet-wide counts: they are asked
        for (`FleetCountRequested`), and their answer completes the verdict (`completed`)."""
        setup = self.setup.active
        proposal = Proposal(
            agent=action.agent,
            runbook=action.runbook,
            step=action.step,
            action=action.action,
            target=action.target,
            rationale="",
            params=action.params,
            timeout_s=action.timeout_s,
        )
        facts = self._facts(incident, proposal, context, approved_by)
        for observe in self.on_facts:
            observe(facts)
        ids = {"command_id": action.command_id, "incident_id": incident.incident_id}
        deciding = setup.policy
        verdict = deciding.evaluate(facts, **ids)
        candidate = self.setup.candidate
        other: PolicyEvaluated | None = None
        if candidate is not None:
            other = candidate.configured.policy.evaluate(facts, **ids)
            if candidate.role == "canary" and (
                candidate.selector is None or candidate.selector.holds(prepare(context))
            ):
                verdict, other = other, verdict  # the canary decides here
                deciding = candidate.configured.policy
        counts = deciding.fleet_counts(facts) if verdict.verdict == "allow" else []
        if counts:
            self._ask_fleet(verdict, counts, incident)
        else:
            self.emitter.emit(verdict, incident.incident_id)
        if candidate is not None and other is not None and other.verdict != verdict.verdict:
            self.emitter.emit(
                PolicyShadowDiverged(
                    command_id=action.command_id,
                    incident_id=incident.incident_id,
                    mode="canary" if candidate.role == "canary" else "shadow",
                    enforced=verdict.verdict,
                    enforced_version=verdict.policy_version,
                    other=other.verdict,
                    other_version=other.policy_version,
                    other_reason=other.reason,
                ),
                incident.incident_id,
            )
        return None if counts else verdict

    def _ask_fleet(
        self, verdict: PolicyEvaluated, counts: list[FleetCount], incident: Incident
    ) -> None:
        request = FleetCountRequested(
            command_id=verdict.command_id,
            incident_id=verdict.incident_id,
            policy_version=verdict.policy_version,
            rules=verdict.rules,
            reason=verdict.reason,
            counts=counts,
        )
        self.emitter.emit(request, incident.incident_id)
        self.emitter.command(
            CountAcrossFleet(
                verdict.command_id,
                verdict.incident_id,
                tuple(count.model_dump(mode="json") for count in counts),
                self.emitter.now,
            )
        )

    def completed(self, waiting: dict[str, Any], answer: FleetCountAnswered) -> PolicyEvaluated:
        """The verdict an action waited for, recorded: allowed as it was here when every
        fleet-wide count granted it, else denied with the first refusal's reason."""
        request = FleetCountRequested.model_validate(waiting["request"])
        outcomes = [
            RuleOutcome(
                rule=item.rule, effect="allow" if item.granted else "deny", reason=item.reason
            )
            for item in answer.answers
        ]
        refused = [outcome for outcome in outcomes if outcome.effect == "deny"]
        verdict = PolicyEvaluated(
            command_id=request.command_id,
            incident_id=request.incident_id,
            verdict="allow" if answer.granted and not refused else "deny",
            policy_version=request.policy_version,
            rules=[*request.rules, *outcomes],
            reason=refused[0].reason if refused else request.reason,
        )
        self.emitter.emit(verdict, request.incident_id)
        return verdict

    def _facts(
        self,
        incident: Incident,
        proposal: Proposal,
        context: dict[str, Any],
        approved_by: str | None,
    ) -> Facts:
        setup = self.setup.active
        candidate = self.setup.candidate
        policies = (
            [setup.policy] if candidate is None else [setup.policy, candidate.configured.policy]
        )
        target_service = setup.owner.get(proposal.target, "")
        variables = None
        if any(policy.needs_variables for policy in policies):
            counts = history_counts(
                self.state, target=proposal.target, service=incident.service, now=self.emitter.now
            )
            variables = prepare(
                {
                    **context,
                    **proposal_variables(
                        action=proposal.action,
                        runbook=proposal.runbook,
                        params=proposal.params,
                        target=proposal.target,
                        target_service=target_service,
                        counts=counts,
                    ),
                }
            )
        service = setup.services.get(incident.service or "") or setup.services.get(target_service)
        return gather(
            self.state,
            proposal=proposal,
            incident_service=incident.service,
            services=setup.services,
            owner=setup.owner,
            autonomy=self.setup.autonomy(service, proposal.runbook, proposal.agent),
            approved_by=approved_by,
            variables=variables,
            now=self.emitter.now,
            fleet=any(policy.needs_fleet for policy in policies),
            in_flight_needed=any(policy.needs_in_flight for policy in policies),
            members=setup.members,
            total_instances=setup.total_instances,
        )
