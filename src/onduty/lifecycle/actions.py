"""Incidents into actions: planning with the runbook agent, governing each proposal, approvals,
the action's outcome, verification, undo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Protocol

from onduty.commands import CountAcrossFleet, Notify, RunCheck, ScheduleTimer, StartAction
from onduty.config import format_duration
from onduty.events import (
    ActionFailed,
    ActionOutcomeUnknown,
    ActionProposed,
    ActionStarted,
    ActionSucceeded,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    CheckCompleted,
    Event,
    FleetCountAnswered,
    FleetCountRequested,
    Payload,
    PolicyEvaluated,
    ProposalRejected,
    VerificationFailed,
    VerificationPassed,
)
from onduty.govern.breaker import breaker_key
from onduty.lifecycle.advisor import AGENT as ADVISOR
from onduty.lifecycle.advisor import Advisor
from onduty.lifecycle.base import Emitter, Pager, Prior, derive_id
from onduty.lifecycle.learning import Learning
from onduty.lifecycle.setup import Setup
from onduty.lifecycle.undo import Undos
from onduty.lifecycle.verdicts import Verdicts
from onduty.state import (
    IN_FLIGHT,
    TERMINAL,
    ActionRecord,
    ActionState,
    ActionStatus,
    Approval,
    BreakerState,
    Incident,
    State,
)
from onduty.think import Proposal, arbitrate


def _same_person(actor: str, people: list[str]) -> bool:
    """Whether `actor` is one of `people`: names are compared without regard to case, so
    `alice` and `Alice` are one approver, never two."""
    folded = actor.casefold()
    return any(person.casefold() == folded for person in people)


class Incidents(Protocol):
    """What the action lifecycle asks of the incident lifecycle."""

    def maybe_resolve(self, incident: Incident) -> None: ...

    def all_resolved(self, incident: Incident) -> bool: ...


@dataclass(eq=False, repr=False)
class ActionLifecycle:
    """Incidents into actions: `plan` an incident that is ready, govern each proposal, ask for
    approvals, follow the action's outcome and verification; `undos` runs what must be undone."""

    state: State
    setup: Setup
    emitter: Emitter
    pager: Pager
    incidents: Incidents
    undos: Undos
    learning: Learning
    advisor: Advisor
    verdicts: Verdicts = field(init=False)
    _by_target: dict[str, dict[str, None]] | None = field(init=False, default=None)
    """Command ids by target, in the order `state.actions` holds them, so that planning looks
    at the actions on the proposed targets instead of scanning every action. Built on first use;
    ids of actions since dropped from the state are forgotten when next met."""

    def __post_init__(self) -> None:
        self.verdicts = Verdicts(self.state, self.setup, self.emitter)

    def _apply_proposed(self, body: ActionProposed, event: Event) -> None:
        incident = self.state.incidents.get(body.incident_id)
        if self._by_target is not None:
            ids = self._by_target.setdefault(body.target, {})
            if body.command_id not in self.state.actions:  # a new key goes last, as in the dict
                ids.pop(body.command_id, None)
            ids[body.command_id] = None
        self.state.actions[body.command_id] = ActionState(
            command_id=body.command_id,
            incident_id=body.incident_id,
            runbook=body.runbook,
            step=body.step,
            action=body.action,
            target=body.target,
            params=dict(body.params),
            timeout_s=body.timeout_s,
            service=incident.service if incident else None,
            agent=body.agent,
        )
        if incident is not None:
            incident.commands.append(body.command_id)

    def _apply_evaluated(self, body: PolicyEvaluated, event: Event) -> None:
        action = self.state.actions.get(body.command_id)
        if action is None:
            return
        if body.verdict == "allow":
            action.status = ActionStatus.ALLOWED
            history = self.state.history
            history.append(
                ActionRecord(event.ts, action.action, action.target, action.service, action.runbook)
            )
            horizon = self.setup.active.history_seconds
            while history and (event.ts - history[0].at).total_seconds() > horizon:
                history.pop(0)
        elif body.verdict == "deny":
            self._finish(action, ActionStatus.DENIED)
        else:
            action.status = ActionStatus.AWAITING_APPROVAL

    def _apply_approval_requested(self, body: ApprovalRequested, event: Event) -> None:
        existing = self.state.approvals.get(body.approval_id)
        if existing is not None:  # asked again, of the next tier: same approval, new deadline
            existing.expires_at, existing.round = body.expires_at, body.round
            return
        self.state.approvals[body.approval_id] = Approval(
            body.approval_id,
            body.command_id,
            body.incident_id,
            body.expires_at,
            required=body.required,
            round=body.round,
        )
        action = self.state.actions.get(body.command_id)
        if action is not None:
            action.approval_id = body.approval_id

    def _apply_approval_answer(self, body: ApprovalGranted | ApprovalDenied, event: Event) -> None:
        approval = self.state.approvals.get(body.approval_id)
        if approval is None or not self._may_answer(body.role):
            return
        if isinstance(body, ApprovalDenied):
            del self.state.approvals[body.approval_id]
            action = self.state.actions.get(approval.command_id)
            if action is not None:
                self._finish(action, ActionStatus.DENIED)
            return
        if _same_person(event.actor, approval.approvers):
            return
        approval.approvers.append(event.actor)
        if len(approval.approvers) >= approval.required:
            del self.state.approvals[body.approval_id]

    def _may_answer(self, role: str | None) -> bool:
        roles = self.setup.configured.config.policy.approvals.roles if self.setup.configured else []
        return not roles or role in roles

    def _apply_approval_expired(self, body: ApprovalExpired, event: Event) -> None:
        self.state.approvals.pop(body.approval_id, None)
        action = self.state.actions.get(body.command_id)
        if action is not None:
            self._finish(action, ActionStatus.DENIED)

    def _apply_started(self, body: ActionStarted, event: Event) -> None:
        action = self.state.actions.get(body.command_id)
        if action is not None and action.status is ActionStatus.ALLOWED:
            action.status = ActionStatus.STARTED
            action.attempt = body.attempt

    def _apply_succeeded(self, body: ActionSucceeded, event: Event) -> None:
        action = self.state.actions.get(body.command_id)
        if action is None or action.status not in (ActionStatus.STARTED, ActionStatus.ALLOWED):
            return
        runbook = self.setup.active.agent.runbook(action.runbook)
        if runbook is not None and action.step + 1 < len(runbook.do):
            self._finish(action, ActionStatus.VERIFIED)
            return
        self.state.breakers.pop(breaker_key(action.action, action.target), None)
        window = runbook.verify.signal_resolved_within if runbook else None
        action.status = ActionStatus.VERIFYING
        action.verify_deadline = event.ts + window if window is not None else event.ts

    def _apply_failed(self, body: ActionFailed | ActionOutcomeUnknown, event: Event) -> None:
        action = self.state.actions.get(body.command_id)
        if action is None or action.status in TERMINAL:
            return
        failed = isinstance(body, ActionFailed)
        self._finish(action, ActionStatus.FAILED if failed else ActionStatus.UNKNOWN)
        if failed:
            self.undos.decide(action, event.ts)
        breaker = self.state.breakers.setdefault(
            breaker_key(action.action, action.target), BreakerState()
        )
        breaker.failures += 1
        if breaker.failures >= self.setup.active.config.policy.breaker.failures:
            breaker.opened_at = event.ts

    def _apply_verification(
        self, body: VerificationPassed | VerificationFailed, event: Event
    ) -> None:
        action = self.state.actions.get(body.command_id)
        if action is not None:
            passed = isinstance(body, VerificationPassed)
            settled = action.status in TERMINAL
            self._finish(action, ActionStatus.VERIFIED if passed else ActionStatus.VERIFY_FAILED)
            if not passed and not settled:
                self.undos.decide(action, event.ts)

    def _variables(self, incident: Incident) -> dict[str, Any]:
        return self.setup.variables(incident, self.emitter.now)

    def _finish(self, action: ActionState, status: ActionStatus) -> None:
        action.status = status
        if action.incident_id not in self.state.incidents:
            self.state.actions.pop(action.command_id, None)

    def plan(self, incident: Incident) -> None:
        setup = self.setup.active
        context = self._variables(incident)
        runbooks = [] if incident.flapping else setup.agent.matching(context)
        self.emitter.note(incident.incident_id, "planned", runbooks[0].name if runbooks else "")
        if incident.flapping:
            return  # already escalated when flapping was detected
        if not runbooks:
            alert = context["signal"]["labels"].get("alertname", "this alert")
            self.pager.escalate(incident, f"no runbook matches {alert}")
            self.advisor.consult(incident, context, matched=False)
            return
        offered = [
            proposal
            for runbook in runbooks
            if (proposal := setup.agent.propose_step(runbook.name, 0, context)) is not None
        ]
        choice = self.learning.choose(incident, offered, context)
        proposals = choice.proposals
        targets = {proposal.target for proposal in proposals}
        in_flight = {
            target: runbook
            for target in targets
            if (runbook := self._runbook_acting_on(target)) is not None
        }
        winner, losers = arbitrate(proposals, in_flight, setup.excludes)
        self._reject(incident, losers)
        self.learning.compare(incident, offered, choice, winner)
        if winner is None:
            self.pager.escalate(incident, f"no proposal could go ahead: {losers[0][1]}")
        else:
            if choice.set_aside:
                winner = replace(winner, rationale=f"{winner.rationale}; {choice.set_aside}")
            self._propose(incident, winner, context)
        self.advisor.consult(incident, context, matched=True)

    def offer(self, incident: Incident, proposal: Proposal) -> None:
        """A proposal that arrives after planning (the advisor's): the arbiter weighs it against
        what is acting on its target, then the guardrails judge it."""
        acting = self._runbook_acting_on(proposal.target)
        in_flight = {proposal.target: acting} if acting is not None else {}
        winner, losers = arbitrate([proposal], in_flight, self.setup.active.excludes)
        self._reject(incident, losers)
        if winner is not None:
            self._propose(incident, winner, self._variables(incident))

    def _reject(self, incident: Incident, losers: list[tuple[Proposal, str]]) -> None:
        """Record the proposals that lost arbitration, with why."""
        for loser, reason in losers:
            self.emitter.emit(
                ProposalRejected(
                    incident_id=incident.incident_id,
                    agent=loser.agent,
                    runbook=loser.runbook,
                    action=loser.action,
                    target=loser.target,
                    reason=reason,
                ),
                incident.incident_id,
            )

    def _runbook_acting_on(self, target: str) -> str | None:
        """The runbook of the last in-flight action on `target` (in `state.actions` order), as
        the arbiter needs it; None when nothing is acting there."""
        if self._by_target is None:
            self._by_target = {}
            for known in self.state.actions.values():
                self._by_target.setdefault(known.target, {})[known.command_id] = None
        ids = self._by_target.get(target, {})
        acting: str | None = None
        for command_id in list(ids):
            action = self.state.actions.get(command_id)
            if action is None or action.target != target:
                del ids[command_id]
            elif action.status in IN_FLIGHT:
                acting = action.runbook
        return acting

    def _propose(self, incident: Incident, proposal: Proposal, context: dict[str, Any]) -> None:
        # the advisor may start a runbook the runbook agent started too: its own command ids
        advised = (ADVISOR,) if proposal.agent == ADVISOR else ()
        command_id = derive_id(
            "cmd", incident.incident_id, proposal.runbook, str(proposal.step), *advised
        )
        proposed = asdict(proposal)
        del proposed["priority"]  # the arbiter's business, already settled
        proposed["model"] = proposal.model or self.learning.context_model()
        self.emitter.emit(
            ActionProposed(command_id=command_id, incident_id=incident.incident_id, **proposed),
            incident.incident_id,
        )
        self._govern(incident, self.state.actions[command_id], context, approved_by=None)

    def _govern(
        self,
        incident: Incident,
        action: ActionState,
        context: dict[str, Any],
        approved_by: str | None,
    ) -> None:
        verdict = self.verdicts.decide(incident, action, context, approved_by)
        if verdict is not None:  # else it waits for its fleet-wide counts
            self._follow(incident, action, verdict)

    def _follow(self, incident: Incident, action: ActionState, verdict: PolicyEvaluated) -> None:
        """Act on a verdict: start the action, ask for approval, or escalate the refusal."""
        if verdict.verdict == "allow":
            self.emitter.command(self.start_command(action))
        elif verdict.verdict == "require_approval":
            self._request_approval(incident, action, verdict)
        else:
            self.pager.escalate(
                incident,
                f"action {action.action} on {action.target or '?'} not taken: {verdict.reason}",
                command_id=action.command_id,
            )

    def _request_approval(
        self, incident: Incident, action: ActionState, verdict: PolicyEvaluated
    ) -> None:
        approvals = self.setup.active.config.policy.approvals
        approval_id = derive_id("apr", action.command_id)
        summary = f"{action.action} on {action.target} for {incident.title} ({verdict.reason})"
        self._ask(incident, action.command_id, approval_id, summary, approvals.notify, round_=0)

    def _ask(
        self,
        incident: Incident,
        command_id: str,
        approval_id: str,
        summary: str,
        notify: list[str],
        round_: int,
    ) -> None:
        approvals = self.setup.active.config.policy.approvals
        expires = self.emitter.now + approvals.timeout
        self.emitter.emit(
            ApprovalRequested(
                approval_id=approval_id,
                command_id=command_id,
                incident_id=incident.incident_id,
                expires_at=expires,
                notify=list(notify),
                summary=summary,
                required=approvals.required,
                round=round_,
            ),
            incident.incident_id,
        )
        self.emitter.command(
            Notify("approval", incident.incident_id, tuple(notify), summary, approval_id)
        )
        self.emitter.command(ScheduleTimer(f"approval:{approval_id}", expires))

    def _answered(self, before: Prior, role: str | None) -> tuple[Approval, Incident] | None:
        """The approval an answer is for and its incident, unless the answer changes nothing:
        the approval is unknown, already answered, expired or moot, or the role may not answer
        (recorded, not obeyed)."""
        approval = before.approval
        incident = self.state.incidents.get(approval.incident_id) if approval else None
        if approval is None or incident is None or self._refused(incident, role):
            return None
        return approval, incident

    def _on_approval_granted(self, body: ApprovalGranted, before: Prior) -> None:
        action = self.state.actions.get(before.approval.command_id) if before.approval else None
        answered = self._answered(before, body.role) if action is not None else None
        if action is None or answered is None:
            return
        prior, incident = answered
        actor = self.emitter.actor
        if _same_person(actor, prior.approvers):
            self.emitter.note(
                incident.incident_id,
                "approval_repeated",
                f"{actor} already approved; {prior.required} different people must approve",
            )
            return
        approvers = [*prior.approvers, actor]
        if len(approvers) < prior.required:
            self.emitter.note(
                incident.incident_id,
                "approval_partial",
                f"{len(approvers)} of {prior.required} approvals: {', '.join(approvers)}",
            )
            return
        self._govern(
            incident,
            action,
            self._variables(incident),
            approved_by=" and ".join(approvers),
        )

    def _refused(self, incident: Incident, role: str | None) -> bool:
        """An answer from someone whose role may not answer approvals is recorded, not obeyed."""
        if self._may_answer(role):
            return False
        roles = ", ".join(self.setup.active.config.policy.approvals.roles)
        self.emitter.note(
            incident.incident_id,
            "approval_refused",
            f"{self.emitter.actor} (role {role or 'none'}) may not answer approvals; "
            f"allowed roles: {roles}",
        )
        return True

    def _on_approval_denied(self, body: ApprovalDenied, before: Prior) -> None:
        answered = self._answered(before, body.role)
        if answered is None:
            return
        approval, incident = answered
        note = f": {body.comment}" if body.comment else ""
        self.pager.escalate(
            incident,
            f"approval denied by {self.emitter.actor}{note}",
            command_id=approval.command_id,
        )

    def _apply_fleet_requested(self, body: FleetCountRequested, event: Event) -> None:
        # with the time it was asked at: the counts are of that moment, asked again or not
        waiting = {"request": body.model_dump(mode="json"), "asked_at": event.ts.isoformat()}
        self.state.waiting_fleet[body.command_id] = waiting

    def _apply_fleet_answered(self, body: FleetCountAnswered, event: Event) -> None:
        self.state.waiting_fleet.pop(body.command_id, None)

    def _on_fleet_answered(self, body: FleetCountAnswered, before: Prior) -> None:
        """The fleet-wide counts an action waited for: its verdict is completed and followed.
        An answer nothing waits for (asked twice, or for an incident closed meanwhile) changes
        nothing."""
        acting = self._acting(body.command_id) if before.waiting is not None else None
        if acting is None or before.waiting is None:
            return
        action, incident = acting
        self._follow(incident, action, self.verdicts.completed(before.waiting, body))

    def waiting_for_fleet(self) -> list[CountAcrossFleet]:
        """After a restart: the counts asked for and never answered, to ask again."""
        commands = []
        for waiting in self.state.waiting_fleet.values():
            request = FleetCountRequested.model_validate(waiting["request"])
            if request.command_id not in self.state.actions:
                continue
            commands.append(
                CountAcrossFleet(
                    request.command_id,
                    request.incident_id,
                    tuple(count.model_dump(mode="json") for count in request.counts),
                    datetime.fromisoformat(waiting["asked_at"]),
                )
            )
        return commands

    def _acting(self, command_id: str) -> tuple[ActionState, Incident] | None:
        """The action and its incident, while both are open."""
        action = self.state.actions.get(command_id)
        incident = self.state.incidents.get(action.incident_id) if action else None
        return (action, incident) if action and incident else None

    def _on_succeeded(self, body: ActionSucceeded, before: Prior) -> None:
        acting = self._acting(body.command_id)
        if acting is None:
            return
        action, incident = acting
        if action.status is ActionStatus.VERIFIED:  # an earlier step of a longer runbook
            proposal = self.setup.active.agent.propose_step(
                action.runbook, action.step + 1, self._variables(incident)
            )
            if proposal is not None:
                if action.agent == ADVISOR:  # its next step too, with the advisor's autonomy
                    proposal = replace(proposal, agent=ADVISOR)
                self._propose(incident, proposal, self._variables(incident))
            return
        if action.status is ActionStatus.VERIFYING and action.verify_deadline is not None:
            check = self.verification_check(action)
            if check is None and self.incidents.all_resolved(incident):
                self.incidents.maybe_resolve(incident)
                return
            if check is not None:
                self.emitter.command(
                    RunCheck(action.command_id, incident.incident_id, check, action.verify_deadline)
                )
            self.emitter.command(
                ScheduleTimer(f"verify:{action.command_id}", action.verify_deadline)
            )

    def verification_check(self, action: ActionState) -> dict[str, Any] | None:
        runbook = self.setup.active.agent.runbook(action.runbook)
        return runbook.verify.check() if runbook is not None else None

    def _fail_verification(
        self, incident: Incident, action: ActionState, reason: str, summary: str = ""
    ) -> None:
        """Not fixed: record it, undo the runbook's steps, hand it to humans."""
        self.emitter.emit(
            VerificationFailed(
                command_id=action.command_id, incident_id=incident.incident_id, reason=reason
            ),
            incident.incident_id,
        )
        self.undos.run(action.command_id)
        self.pager.escalate(
            incident,
            f"{action.action} on {action.target} did not fix it: {summary or reason}",
            command_id=action.command_id,
        )

    def _on_check(self, body: CheckCompleted, before: Prior) -> None:
        """The shell's probe or query of an action's effect came back."""
        acting = self._acting(body.command_id)
        if acting is None or acting[0].status is not ActionStatus.VERIFYING:
            return  # already settled (the signals resolved, or the deadline passed)
        action, incident = acting
        if body.ok:
            self.emitter.emit(
                VerificationPassed(
                    command_id=action.command_id,
                    incident_id=incident.incident_id,
                    check=body.detail or "the verification check passed",
                ),
                incident.incident_id,
            )
            self.incidents.maybe_resolve(incident)
            return
        self._fail_verification(incident, action, body.detail or "the verification check failed")

    def _on_failed(self, body: ActionFailed | ActionOutcomeUnknown, before: Prior) -> None:
        acting = self._acting(body.command_id)
        if acting is None:
            return
        incident = acting[1]
        if isinstance(body, ActionFailed):
            repeated = before.action is None or before.action in TERMINAL
            if not repeated:  # undo it once, never again for a repeated failure
                self.undos.run(body.command_id)
            reason = f"action failed: {body.error}"
        else:
            reason = f"action outcome unknown, not re-run: {body.reason}"
        self.pager.escalate(incident, reason, command_id=body.command_id)
        self.incidents.maybe_resolve(incident)

    def start_command(self, action: ActionState) -> StartAction:
        return StartAction.of(action)

    def tick(self) -> None:
        """Deadlines of approvals and verifications."""
        self._expire_approvals()
        self._end_verifications()

    def _expire_approvals(self) -> None:
        """An unanswered approval is asked of the next tier (`on_timeout: escalate`) or denied,
        the safe default."""
        now = self.emitter.now
        approvals = self.setup.active.config.policy.approvals
        for approval in [a for a in self.state.approvals.values() if a.expires_at <= now]:
            incident = self.state.incidents.get(approval.incident_id)
            tiers = self.setup.active.config.escalation.tiers(
                incident.service if incident else None
            )
            if (
                incident is not None
                and approvals.on_timeout == "escalate"
                and approval.round + 1 < len(tiers)
            ):
                tier = tiers[approval.round + 1]
                self.pager.escalate(
                    incident,
                    f"approval not answered within {format_duration(approvals.timeout)}; "
                    f"asking {', '.join(tier.notify)}",
                    command_id=approval.command_id,
                    tier=approval.round + 1,
                )
                self._ask(
                    incident,
                    approval.command_id,
                    approval.approval_id,
                    f"{incident.title}: approval not answered in time",
                    tier.notify,
                    round_=approval.round + 1,
                )
                continue
            self.emitter.emit(
                ApprovalExpired(approval_id=approval.approval_id, command_id=approval.command_id),
                approval.incident_id,
            )
            if incident is not None:
                self.pager.escalate(
                    incident,
                    "nobody answered the approval in time; the safe default is deny",
                    command_id=approval.command_id,
                )

    def _end_verifications(self) -> None:
        """A verification window passed without the fix being seen: it failed."""
        now = self.emitter.now
        due = [
            a.command_id
            for a in self.state.actions.values()
            if a.status is ActionStatus.VERIFYING
            and a.verify_deadline is not None
            and a.verify_deadline <= now
        ]
        for acting in [self._acting(command_id) for command_id in due]:
            if acting is None:
                continue
            action, incident = acting
            if self.verification_check(action) is None:
                reason = "the incident's signals did not resolve within the verification window"
                summary = "still firing after the verification window"
            else:
                reason = "the verification check did not pass within the verification window"
                summary = ""
            self._fail_verification(incident, action, reason, summary)

    APPLIERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        ActionProposed: _apply_proposed,
        PolicyEvaluated: _apply_evaluated,
        ApprovalRequested: _apply_approval_requested,
        ApprovalGranted: _apply_approval_answer,
        ApprovalDenied: _apply_approval_answer,
        ApprovalExpired: _apply_approval_expired,
        ActionStarted: _apply_started,
        ActionSucceeded: _apply_succeeded,
        ActionFailed: _apply_failed,
        ActionOutcomeUnknown: _apply_failed,
        VerificationPassed: _apply_verification,
        VerificationFailed: _apply_verification,
        FleetCountRequested: _apply_fleet_requested,
        FleetCountAnswered: _apply_fleet_answered,
    }
    REACTIONS: ClassVar[dict[type[Payload], Callable[[Any, Any, Prior], None]]] = {
        ApprovalGranted: _on_approval_granted,
        ApprovalDenied: _on_approval_denied,
        ActionSucceeded: _on_succeeded,
        ActionFailed: _on_failed,
        ActionOutcomeUnknown: _on_failed,
        CheckCompleted: _on_check,
        FleetCountAnswered: _on_fleet_answered,
    }
