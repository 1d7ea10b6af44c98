"""Verdicts on proposals: the facts gathered once per verdict, the active policy's verdict (or
a canary's, where its selector holds), and where a candidate policy disagrees."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onduty.events import PolicyEvaluated, PolicyShadowDiverged
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
    ) -> PolicyEvaluated:
        """The verdict on `action`, recorded: the active policy's, or where a canary's selector
        holds the canary's; a candidate that disagrees is recorded beside it."""
        setup = self.setup.active
        proposal = Proposal(
            agent="runbook",
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
        verdict = setup.policy.evaluate(facts, **ids)
        candidate = self.setup.candidate
        other: PolicyEvaluated | None = None
        if candidate is not None:
            other = candidate.configured.policy.evaluate(facts, **ids)
            if candidate.role == "canary" and (
                candidate.selector is None or candidate.selector.holds(prepare(context))
            ):
                verdict, other = other, verdict  # the canary decides here
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
            autonomy=self.setup.autonomy(service, proposal.runbook),
            approved_by=approved_by,
            variables=variables,
            now=self.emitter.now,
            fleet=any(policy.needs_fleet for policy in policies),
            in_flight_needed=any(policy.needs_in_flight for policy in policies),
            members=setup.members,
            total_instances=setup.total_instances,
        )
