"""Incidents into actions: planning with the runbook agent, governing each proposal, approvals,
the action's outcome, verification, undo."""

from __future__ import annotations

from typing import Any

from onduty.commands import Notify, RunCheck, ScheduleTimer, StartAction, StartUndo
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
    IncidentUpdated,
    PolicyEvaluated,
    PolicyShadowDiverged,
    ProposalRejected,
    UndoFinished,
    UndoStarted,
    VerificationFailed,
    VerificationPassed,
)
from onduty.expressions import prepare
from onduty.govern import Facts
from onduty.govern.breaker import breaker_key
from onduty.govern.facts import gather, history_counts
from onduty.lifecycle.base import CoreBase, derive_id
from onduty.state import (
    IN_FLIGHT,
    TERMINAL,
    ActionRecord,
    ActionState,
    ActionStatus,
    Approval,
    BreakerState,
    Incident,
    UndoState,
    UndoStatus,
)
from onduty.think import Proposal, arbitrate


def _same_person(actor: str, people: list[str]) -> bool:
    """Whether `actor` is one of `people`: names are compared without regard to case, so
    `alice` and `Alice` are one approver, never two."""
    folded = actor.casefold()
    return any(person.casefold() == folded for person in people)


class ActionLifecycle(CoreBase):
    def _apply_proposed(self, body: ActionProposed, event: Event) -> None:
        incident = self.state.incidents.get(body.incident_id)
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
            horizon = self._setup().history_seconds
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
        roles = self._setup().config.policy.approvals.roles if self._configured else []
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
        runbook = self._setup().agent.runbook(action.runbook)
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
            self._decide_undos(action, event)
        breaker = self.state.breakers.setdefault(
            breaker_key(action.action, action.target), BreakerState()
        )
        breaker.failures += 1
        if breaker.failures >= self._setup().config.policy.breaker.failures:
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
                self._decide_undos(action, event)

    def _finish(self, action: ActionState, status: ActionStatus) -> None:
        action.status = status
        if action.incident_id not in self.state.incidents:
            self.state.actions.pop(action.command_id, None)

    def _plan(self, incident: Incident) -> None:
        if self._muted(incident):
            return  # recorded, never acted on; re-examined when silences or sources change
        setup = self._setup()
        context = self._context(incident)
        runbooks = [] if incident.flapping else setup.agent.matching(context)
        self._emit(
            IncidentUpdated(
                incident_id=incident.incident_id,
                change="planned",
                detail=runbooks[0].name if runbooks else "",
            ),
            incident.incident_id,
        )
        if incident.flapping:
            return  # already escalated when flapping was detected
        if not runbooks:
            alert = context["signal"]["labels"].get("alertname", "this alert")
            self._escalate(incident, f"no runbook matches {alert}")
            return
        proposals = [
            proposal
            for runbook in runbooks
            if (proposal := setup.agent.propose_step(runbook.name, 0, context)) is not None
        ]
        in_flight = {
            a.target: a.runbook for a in self.state.actions.values() if a.status in IN_FLIGHT
        }
        winner, losers = arbitrate(proposals, in_flight, setup.excludes)
        for loser, reason in losers:
            self._emit(
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
        if winner is None:
            self._escalate(incident, f"no proposal could go ahead: {losers[0][1]}")
            return
        self._propose(incident, winner, context)

    def _propose(self, incident: Incident, proposal: Proposal, context: dict[str, Any]) -> None:
        command_id = derive_id("cmd", incident.incident_id, proposal.runbook, str(proposal.step))
        self._emit(
            ActionProposed(
                command_id=command_id,
                incident_id=incident.incident_id,
                agent=proposal.agent,
                runbook=proposal.runbook,
                step=proposal.step,
                action=proposal.action,
                target=proposal.target,
                params=proposal.params,
                timeout_s=proposal.timeout_s,
                rationale=proposal.rationale,
            ),
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
        setup = self._setup()
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
        ids = {"command_id": action.command_id, "incident_id": incident.incident_id}
        verdict = setup.policy.evaluate(facts, **ids)
        candidate = self._candidate
        other: PolicyEvaluated | None = None
        if candidate is not None:
            other = candidate.configured.policy.evaluate(facts, **ids)
            if candidate.role == "canary" and (
                candidate.selector is None or candidate.selector.holds(prepare(context))
            ):
                verdict, other = other, verdict  # the canary decides here
        self._emit(verdict, incident.incident_id)
        if candidate is not None and other is not None and other.verdict != verdict.verdict:
            self._emit(
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
        if verdict.verdict == "allow":
            self._commands.append(self._start_command(action))
        elif verdict.verdict == "require_approval":
            self._request_approval(incident, action, verdict)
        else:
            self._escalate(
                incident,
                f"action {action.action} on {action.target or '?'} not taken: {verdict.reason}",
                command_id=action.command_id,
            )

    def _request_approval(
        self, incident: Incident, action: ActionState, verdict: PolicyEvaluated
    ) -> None:
        approvals = self._setup().config.policy.approvals
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
        approvals = self._setup().config.policy.approvals
        expires = self._now + approvals.timeout
        self._emit(
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
        self._commands.append(
            Notify("approval", incident.incident_id, tuple(notify), summary, approval_id)
        )
        self._commands.append(ScheduleTimer(f"approval:{approval_id}", expires))

    def _on_approval_granted(self, body: ApprovalGranted, prior: Approval | None) -> None:
        if prior is None:
            return  # unknown, already answered, expired or moot: nothing to do
        action = self.state.actions.get(prior.command_id)
        incident = self.state.incidents.get(prior.incident_id)
        if action is None or incident is None:
            return
        assert self._cause is not None
        actor = self._cause.actor
        if self._refused(incident, body.role):
            return
        if _same_person(actor, prior.approvers):
            self._note(
                incident,
                "approval_repeated",
                f"{actor} already approved; {prior.required} different people must approve",
            )
            return
        approvers = [*prior.approvers, actor]
        if len(approvers) < prior.required:
            self._note(
                incident,
                "approval_partial",
                f"{len(approvers)} of {prior.required} approvals: {', '.join(approvers)}",
            )
            return
        self._govern(incident, action, self._context(incident), approved_by=" and ".join(approvers))

    def _refused(self, incident: Incident, role: str | None) -> bool:
        """An answer from someone whose role may not answer approvals is recorded, not obeyed."""
        if self._may_answer(role):
            return False
        assert self._cause is not None
        roles = ", ".join(self._setup().config.policy.approvals.roles)
        self._note(
            incident,
            "approval_refused",
            f"{self._cause.actor} (role {role or 'none'}) may not answer approvals; "
            f"allowed roles: {roles}",
        )
        return True

    def _note(self, incident: Incident, change: str, detail: str) -> None:
        self._emit(
            IncidentUpdated(incident_id=incident.incident_id, change=change, detail=detail),
            incident.incident_id,
        )

    def _on_approval_denied(self, body: ApprovalDenied, prior: Approval | None) -> None:
        if prior is None:
            return
        incident = self.state.incidents.get(prior.incident_id)
        if incident is not None:
            assert self._cause is not None
            if self._refused(incident, body.role):
                return
            note = f": {body.comment}" if body.comment else ""
            self._escalate(
                incident,
                f"approval denied by {self._cause.actor}{note}",
                command_id=prior.command_id,
            )

    def _on_succeeded(self, body: ActionSucceeded, prior: None) -> None:
        action = self.state.actions.get(body.command_id)
        if action is None:
            return
        incident = self.state.incidents.get(action.incident_id)
        if incident is None:
            return
        if action.status is ActionStatus.VERIFIED:  # an earlier step of a longer runbook
            proposal = self._setup().agent.propose_step(
                action.runbook, action.step + 1, self._context(incident)
            )
            if proposal is not None:
                self._propose(incident, proposal, self._context(incident))
            return
        if action.status is ActionStatus.VERIFYING and action.verify_deadline is not None:
            check = self._verification_check(action)
            if check is None and self._all_resolved(incident):
                self._maybe_resolve(incident)
                return
            if check is not None:
                self._commands.append(
                    RunCheck(action.command_id, incident.incident_id, check, action.verify_deadline)
                )
            self._commands.append(
                ScheduleTimer(f"verify:{action.command_id}", action.verify_deadline)
            )

    def _verification_check(self, action: ActionState) -> dict[str, Any] | None:
        runbook = self._setup().agent.runbook(action.runbook)
        return runbook.verify.check() if runbook is not None else None

    def _fail_verification(
        self, incident: Incident, action: ActionState, reason: str, summary: str = ""
    ) -> None:
        """Not fixed: record it, undo the runbook's steps, hand it to humans."""
        self._emit(
            VerificationFailed(
                command_id=action.command_id, incident_id=incident.incident_id, reason=reason
            ),
            incident.incident_id,
        )
        self._undo(incident, action.command_id)
        self._escalate(
            incident,
            f"{action.action} on {action.target} did not fix it: {summary or reason}",
            command_id=action.command_id,
        )

    def _on_check(self, body: CheckCompleted, prior: None) -> None:
        """The shell's probe or query of an action's effect came back."""
        action = self.state.actions.get(body.command_id)
        if action is None or action.status is not ActionStatus.VERIFYING:
            return  # already settled (the signals resolved, or the deadline passed)
        incident = self.state.incidents.get(action.incident_id)
        if incident is None:
            return
        if body.ok:
            self._emit(
                VerificationPassed(
                    command_id=action.command_id,
                    incident_id=incident.incident_id,
                    check=body.detail or "the verification check passed",
                ),
                incident.incident_id,
            )
            self._maybe_resolve(incident)
            return
        self._fail_verification(incident, action, body.detail or "the verification check failed")

    def _on_failed(
        self, body: ActionFailed | ActionOutcomeUnknown, prior: ActionStatus | None
    ) -> None:
        incident_id = self._incident_of(body.command_id)
        incident = self.state.incidents.get(incident_id) if incident_id else None
        if incident is None:
            return
        if isinstance(body, ActionFailed):
            if prior is not None and prior not in TERMINAL:  # not a repeat: undo it, once
                self._undo(incident, body.command_id)
            reason = f"action failed: {body.error}"
        else:
            reason = f"action outcome unknown, not re-run: {body.reason}"
        self._escalate(incident, reason, command_id=body.command_id)
        self._maybe_resolve(incident)

    # ------------------------------------------------------------------ undo

    def _decide_undos(self, action: ActionState, event: Event) -> None:
        """`action` failed, or did not fix its incident: its runbook's undo steps are decided
        now, in reverse order (like a stack), and remembered until each has finished.

        This happens as the event is applied, not in a reaction, so folding the log learns of
        them exactly as handling it did: a restart runs an undo that was decided but never
        started, and settles one that started but has no recorded outcome (`in_doubt`)."""
        incident = self.state.incidents.get(action.incident_id)
        if incident is None:
            return
        setup = self._setup()
        cause = self._cause
        # The context's `now` is the event's time: while folding (or applying an input before
        # it is handled) there is no cause yet, and a decision shares its cause's time.
        self._cause = cause or event
        try:
            steps = list(enumerate(setup.agent.undo_steps(action.runbook, self._context(incident))))
        finally:
            self._cause = cause
        for index, step in reversed(steps):
            if not step.target or step.target not in setup.owner:
                continue  # an unknown target means do nothing, for undo too
            command_id = derive_id("undo", action.command_id, str(index))
            self.state.undos.setdefault(
                command_id,
                UndoState(
                    command_id=command_id,
                    of_command_id=action.command_id,
                    incident_id=incident.incident_id,
                    step=index,
                    action=step.action,
                    target=step.target,
                    params=dict(step.params),
                    timeout_s=step.timeout_s,
                    decided=self.state.applied,
                    of_action=action.action,
                    of_target=action.target,
                    service=incident.service,
                    title=incident.title,
                ),
            )

    def _undo(self, incident: Incident, command_id: str) -> None:
        """Run the undo steps decided for `command_id` that have not started."""
        for undo in self._undos(of_command_id=command_id):
            if undo.status is UndoStatus.DECIDED:
                self._commands.append(self._undo_command(undo))

    def _undos(self, of_command_id: str | None = None) -> list[UndoState]:
        """Undo steps in flight (of one action), in the order they were decided."""
        return sorted(
            (
                undo
                for undo in self.state.undos.values()
                if of_command_id is None or undo.of_command_id == of_command_id
            ),
            key=lambda undo: (undo.decided, -undo.step),
        )

    @staticmethod
    def _undo_command(undo: UndoState) -> StartUndo:
        return StartUndo(
            command_id=undo.command_id,
            of_command_id=undo.of_command_id,
            incident_id=undo.incident_id,
            action=undo.action,
            target=undo.target,
            params=undo.params,
            timeout_s=undo.timeout_s,
        )

    def _apply_undo_started(self, body: UndoStarted, event: Event) -> None:
        undo = self.state.undos.get(body.command_id)
        if undo is not None:
            undo.status = UndoStatus.STARTED

    def _apply_undo_finished(self, body: UndoFinished, event: Event) -> None:
        self.state.undos.pop(body.command_id, None)

    def _on_undo_finished(self, body: UndoFinished, prior: UndoState | None) -> None:
        """An undo whose outcome is unknown (onduty stopped while it ran, and it could not be
        checked) is never run again: a human must look at it."""
        if prior is None or not body.unknown:
            return
        incident = self.state.incidents.get(prior.incident_id)
        if incident is None:  # closed since the undo was decided: page about it all the same
            incident = Incident(
                incident_id=prior.incident_id,
                group_key={},
                service=prior.service,
                title=prior.title or prior.incident_id,
                opened_at=self._now,
                ready_at=self._now,
            )
        self._escalate(
            incident,
            f"undo {prior.action} on {prior.target} (of {prior.of_action} on {prior.of_target}) "
            f"is in doubt and was not run again; check {prior.target} by hand: {body.error}",
            command_id=prior.command_id,
        )

    def _facts(
        self,
        incident: Incident,
        proposal: Proposal,
        context: dict[str, Any],
        approved_by: str | None,
    ) -> Facts:
        setup = self._setup()
        variables = None
        candidate = self._candidate
        if setup.policy.needs_variables or (
            candidate is not None and candidate.configured.policy.needs_variables
        ):
            target_service = setup.owner.get(proposal.target, "")
            variables = prepare(
                {
                    **context,
                    "action": {
                        "name": proposal.action,
                        "runbook": proposal.runbook,
                        "params": proposal.params,
                    },
                    "target": {"name": proposal.target, "service": target_service},
                    "counts": history_counts(
                        self.state,
                        target=proposal.target,
                        service=incident.service,
                        now=self._now,
                    ),
                }
            )
        service = setup.services.get(incident.service or "") or setup.services.get(
            setup.owner.get(proposal.target, "")
        )
        return gather(
            self.state,
            proposal=proposal,
            incident_service=incident.service,
            services=setup.services,
            owner=setup.owner,
            autonomy=self._autonomy(service, proposal.runbook),
            approved_by=approved_by,
            variables=variables,
            now=self._now,
            fleet=setup.policy.needs_fleet
            or (candidate is not None and candidate.configured.policy.needs_fleet),
            in_flight_needed=setup.policy.needs_in_flight
            or (candidate is not None and candidate.configured.policy.needs_in_flight),
            members=setup.members,
            total_instances=setup.total_instances,
        )

    def _incident_of(self, command_id: str) -> str | None:
        action = self.state.actions.get(command_id)
        return action.incident_id if action else None

    def _start_command(self, action: ActionState) -> StartAction:
        return StartAction(
            command_id=action.command_id,
            incident_id=action.incident_id,
            action=action.action,
            target=action.target,
            params=action.params,
            timeout_s=action.timeout_s,
        )

    def _tick_actions(self) -> None:
        """Deadlines of approvals and verifications."""
        now = self._now
        approvals = self._setup().config.policy.approvals
        for approval in [a for a in self.state.approvals.values() if a.expires_at <= now]:
            incident = self.state.incidents.get(approval.incident_id)
            tiers = self._setup().config.escalation.tiers(incident.service if incident else None)
            if (
                incident is not None
                and approvals.on_timeout == "escalate"
                and approval.round + 1 < len(tiers)
            ):
                tier = tiers[approval.round + 1]
                self._escalate(
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
            self._emit(
                ApprovalExpired(approval_id=approval.approval_id, command_id=approval.command_id),
                approval.incident_id,
            )
            if incident is not None:
                self._escalate(
                    incident,
                    "nobody answered the approval in time; the safe default is deny",
                    command_id=approval.command_id,
                )
        for action in [
            a for a in self.state.actions.values() if a.status is ActionStatus.VERIFYING
        ]:
            if action.verify_deadline is None or action.verify_deadline > now:
                continue
            incident = self.state.incidents.get(action.incident_id)
            if incident is None:
                continue
            if self._verification_check(action) is None:
                self._fail_verification(
                    incident,
                    action,
                    "the incident's signals did not resolve within the verification window",
                    "still firing after the verification window",
                )
            else:
                self._fail_verification(
                    incident,
                    action,
                    "the verification check did not pass within the verification window",
                )
