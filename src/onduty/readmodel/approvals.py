"""Approval requests as the core sees them, projected from the log."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from onduty.events import Event


def same_person(name: str, other: str) -> bool:
    """Identities are compared without regard to case: `alice` and `Alice` are one person."""
    return name.casefold() == other.casefold()


@dataclass
class PendingApproval:
    """An approval request as the core sees it: pending until granted in full (`required`
    different people approved), denied, expired, or moot (its incident resolved)."""

    approval_id: str
    incident_id: str
    command_id: str
    summary: str
    requested_at: datetime
    expires_at: datetime
    required: int = 1
    round: int = 0
    approved_by: list[str] = field(default_factory=list)
    """Who has approved so far, in order (each person once)."""
    outcome: str = ""
    """Once decided: "granted", "denied", "expired" or "moot"; empty while pending."""
    decided_by: str = ""
    refusals: dict[str, str] = field(default_factory=dict)
    """Answers the core recorded but did not obey, by person (folded case): why."""

    def has_approved(self, person: str) -> bool:
        return any(same_person(person, name) for name in self.approved_by)

    @property
    def waiting_for(self) -> int:
        """How many more different people must approve."""
        return max(self.required - len(self.approved_by), 0)

    @property
    def status(self) -> str:
        """One sentence for people: "1 of 2: approved by alice, waiting for another approver"."""
        if self.outcome == "granted":
            return f"approved by {' and '.join(self.approved_by)}"
        if self.outcome == "denied":
            return f"denied by {self.decided_by}"
        if self.outcome == "expired":
            return "expired unanswered: denied (the safe default)"
        if self.outcome == "moot":
            return "moot: the incident was resolved"
        count = f"{len(self.approved_by)} of {self.required}: " if self.required > 1 else ""
        done = f"approved by {', '.join(self.approved_by)}, " if self.approved_by else ""
        if not self.approved_by:
            wanted = "an approver" if self.required == 1 else f"{self.required} approvers"
        elif self.waiting_for == 1:
            wanted = "another approver"
        else:
            wanted = f"{self.waiting_for} more approvers"
        return f"{count}{done}waiting for {wanted}"


# Decided approvals kept for people who ask about one after the fact (an answer's reply).
ANSWERED_KEPT = 1000


@dataclass
class _Answer:
    """The last approval answer fed, until the core's notes on it have been seen: an answer the
    core refuses (`approval_refused`) is undone here as it is there."""

    event_id: str
    actor: str
    approval: PendingApproval
    approved_by: list[str]


class ApprovalBook:
    """The approval requests of every incident: pending ones, and those decided lately.

    It mirrors the core (lifecycle/actions.py): an answer counts unless the core notes it as
    refused; a person approves once (names compared without regard to case); the request leaves
    the inbox (`awaiting`, its incident's list of pending approval ids) only when granted in
    full, denied, expired or moot."""

    def __init__(self) -> None:
        self.pending: dict[str, PendingApproval] = {}
        self.answered: OrderedDict[str, PendingApproval] = OrderedDict()
        """Approvals decided lately (granted in full, denied, expired, moot), oldest first."""
        self._answer: _Answer | None = None

    def requested(self, incident_id: str, awaiting: list[str], event: Event) -> None:
        data = event.data
        expires_at = datetime.fromisoformat(data["expires_at"])
        known = self.pending.get(data["approval_id"])
        if known is not None:  # asked again, of the next tier: same request, new deadline
            known.expires_at, known.round = expires_at, int(data.get("round", 0))
            return
        awaiting.append(data["approval_id"])
        self.pending[data["approval_id"]] = PendingApproval(
            approval_id=data["approval_id"],
            incident_id=incident_id,
            command_id=data["command_id"],
            summary=data.get("summary", ""),
            requested_at=event.ts,
            expires_at=expires_at,
            required=int(data.get("required", 1)),
            round=int(data.get("round", 0)),
        )

    def answer(self, awaiting: list[str], event: Event) -> None:
        approval = self.pending.get(event.data["approval_id"])
        if approval is None:
            return  # unknown, already decided, expired or moot: the core ignores it too
        self._answer = _Answer(event.id, event.actor, approval, list(approval.approved_by))
        if event.type == "ApprovalDenied":
            approval.decided_by = event.actor
            self.decide(awaiting, approval.approval_id, "denied")
        elif not approval.has_approved(event.actor):  # else: the core notes it as repeated
            approval.approved_by.append(event.actor)
            if not approval.waiting_for:
                self.decide(awaiting, approval.approval_id, "granted")

    def refused(self, awaiting: list[str], note: Event) -> None:
        """The core refused the last answer (the role may not answer approvals)."""
        answer = self._answer
        if answer is None or note.causation_id != answer.event_id:
            return
        self._answer = None
        approval = answer.approval
        approval.approved_by, approval.outcome, approval.decided_by = answer.approved_by, "", ""
        approval.refusals[answer.actor.casefold()] = str(note.data.get("detail", ""))
        if approval.approval_id not in self.pending:
            self.answered.pop(approval.approval_id, None)
            self.pending[approval.approval_id] = approval
            awaiting.append(approval.approval_id)

    def decide(self, awaiting: list[str], approval_id: str, outcome: str) -> None:
        approval = self.pending.pop(approval_id, None)
        if approval_id in awaiting:
            awaiting.remove(approval_id)
        if approval is None:
            return
        approval.outcome = outcome
        self.answered[approval_id] = approval
        while len(self.answered) > ANSWERED_KEPT:
            self.answered.popitem(last=False)

    def get(self, approval_id: str) -> PendingApproval | None:
        """A pending approval, or one decided lately."""
        return self.pending.get(approval_id) or self.answered.get(approval_id)
