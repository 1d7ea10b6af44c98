"""The answer desk: every answer to an approval request passes here, whatever door it came
through — the HTTP API (and so the console and `onduty approve`), and the simulated on-call
people of `onduty demo`, `onduty sim` and `serve --sim`.

The desk checks the answer against the read model (is the request still pending? has this
person already approved it?), settles the role the answer is given in, and builds the input
event. The core decides what the answer means (`lifecycle/actions.py`); the read model mirrors
that decision, and `status` says it in one sentence.

The autonomy desk is the same rule for the autonomy of a service: where actions need N
approvers (`policy.approvals.required`), making a service more autonomous needs N different
admins too — a raise is a request the others confirm — while lowering takes effect at once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from onduty.events import (
    ApprovalDenied,
    ApprovalGranted,
    AutonomyChanged,
    AutonomyRaiseConfirmed,
    AutonomyRaiseRequested,
)
from onduty.readmodel import AutonomyRaise, AutonomyRaises, IncidentProjection, PendingApproval
from onduty.runtime import Input

Verdict = Literal["approve", "deny"]
APPROVER = "approver"
STREAM = "approvals"


@dataclass(frozen=True)
class Refusal:
    """An answer the desk does not record: `status` is the HTTP status that says why."""

    status: int
    reason: str
    field: str = "approval_id"


@dataclass(frozen=True)
class Answer:
    """An answer to record: the input event's payload and who gives it."""

    body: ApprovalGranted | ApprovalDenied
    actor: str

    def input(self) -> Input:
        return Input(self.body, stream=STREAM, actor=self.actor)


def answering_role(held: Collection[str], allowed: Iterable[str]) -> str:
    """The role an answer is given in: the first of the policy's approval roles the person
    holds, else `approver` (the core then records the answer as refused)."""
    for role in allowed:
        if role in held:
            return role
    return APPROVER


def approval_json(item: PendingApproval) -> dict[str, Any]:
    """An approval request as the API shows it."""
    return {
        "id": item.approval_id,
        "incident_id": item.incident_id,
        "command_id": item.command_id,
        "summary": item.summary,
        "requested_at": item.requested_at.isoformat(),
        "expires_at": item.expires_at.isoformat(),
        "required": item.required,
        "approved_by": list(item.approved_by),
        "waiting_for": item.waiting_for,
        "round": item.round,
        "outcome": item.outcome or "pending",
        "status": item.status,
    }


class AnswerDesk:
    """Checks and builds approval answers over an incident read model. `projection` is the read
    model (guarded by `lock` when another thread feeds it); `allowed_roles` gives the roles the
    active policy lets answer approvals (empty: anyone who may answer)."""

    def __init__(
        self,
        projection: IncidentProjection,
        allowed_roles: Callable[[], Sequence[str]],
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self._projection = projection
        self._allowed_roles = allowed_roles
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()

    def pending(self) -> list[PendingApproval]:
        with self._lock:
            return sorted(self._projection.approvals.values(), key=lambda a: a.expires_at)

    def answer(
        self,
        approval_id: str,
        person: str,
        roles: Collection[str],
        verdict: Verdict,
        comment: str = "",
    ) -> Answer | Refusal:
        """The answer `person` (holding `roles`) gives, ready to record, or why not."""
        with self._lock:
            approval = self._projection.approvals.get(approval_id)
            if approval is None:
                decided = self._projection.answered.get(approval_id)
                later = f" (it was {decided.status})" if decided is not None else ""
                return Refusal(404, f"no pending approval {approval_id}{later}")
            if approval.has_approved(person):
                return Refusal(
                    409,
                    f"{person} has already approved {approval_id} ({approval.status}); "
                    + (
                        "another person must approve it"
                        if verdict == "approve"
                        else "an approval cannot be taken back: another person may deny it"
                    ),
                )
        role = answering_role(roles, self._allowed_roles())
        body: ApprovalGranted | ApprovalDenied
        if verdict == "approve":
            body = ApprovalGranted(approval_id=approval_id, comment=comment, role=role)
        else:
            body = ApprovalDenied(approval_id=approval_id, comment=comment, role=role)
        return Answer(body, person)

    def report(self, approval_id: str, person: str) -> dict[str, Any]:
        """What became of a request once an answer from `person` was recorded: the request as
        `approval_json` shows it, and whether the answer counted (and if not, why)."""
        with self._lock:
            item = self._projection.approval(approval_id)
            if item is None:
                return {"approval_id": approval_id, "recorded": True}
            body = approval_json(item)
            refused = item.refusals.get(person.casefold())
            counted = refused is None or item.has_approved(person) or item.decided_by == person
        return {
            "approval_id": approval_id,
            "recorded": True,
            "counted": counted,
            **({} if counted else {"refused": refused}),
            **{k: v for k, v in body.items() if k != "id"},
        }


# --------------------------------------------------------------------------- autonomy

LEVELS = ("observe", "suggest", "approve", "act")


@dataclass(frozen=True)
class AutonomyOutcome:
    """What to record for an autonomy change (possibly nothing) and what to answer."""

    inputs: list[Input]
    reply: dict[str, Any]
    status: int = 202
    changed: bool = field(default=False)


def raise_json(request: AutonomyRaise, now: datetime) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "service": request.service,
        "level": request.level,
        "previous": request.previous,
        "required": request.required,
        "confirmed_by": list(request.confirmed_by),
        "requested_at": request.requested_at.isoformat(),
        "expires_at": request.expires_at.isoformat(),
        "state": request.state(now),
        "status": request.status(now),
    }


class AutonomyDesk:
    """Changes of a service's autonomy. Lowering is immediate (it is always safe); a raise
    where `required` > 1 is a request that `required` different admins must confirm before it
    expires; the last confirmation and the change are recorded together. `now` is the
    service's clock, `new_id` names a new request."""

    def __init__(
        self,
        raises: AutonomyRaises,
        now: Callable[[], datetime],
        new_id: Callable[[], str],
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self._raises = raises
        self._now = now
        self._new_id = new_id
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()

    def pending(self) -> list[dict[str, Any]]:
        now = self._now()
        with self._lock:
            return [raise_json(r, now) for r in self._raises.pending(now)]

    def change(
        self,
        service: str,
        level: str,
        previous: str,
        person: str,
        *,
        required: int,
        timeout: timedelta,
    ) -> AutonomyOutcome | Refusal:
        answer = {"service": service, "level": level, "previous": previous}
        if previous == level:
            return AutonomyOutcome([], {**answer, "changed": False}, 200)
        stream = f"service:{service}"
        raising = LEVELS.index(level) > LEVELS.index(previous) if previous in LEVELS else True
        if not raising or required <= 1:
            changed = AutonomyChanged(service=service, level=level, previous=previous)
            return AutonomyOutcome(
                [Input(changed, stream=stream, actor=person)],
                {**answer, "changed": True},
                changed=True,
            )
        now = self._now()
        with self._lock:
            request = self._raises.pending_for(service, now)
            if request is not None and request.level == level:
                found = raise_json(request, now)
            else:
                found = None
        if found is not None:
            return self.confirm(str(found["id"]), person)
        body = AutonomyRaiseRequested(
            request_id=self._new_id(),
            service=service,
            level=level,
            previous=previous,
            required=required,
            expires_at=now + timeout,
        )
        count = f"1 of {required}"
        wanted = "another admin" if required == 2 else f"{required - 1} more admins"
        return AutonomyOutcome(
            [Input(body, stream=stream, actor=person)],
            {
                **answer,
                "changed": False,
                "pending": True,
                "request_id": body.request_id,
                "required": required,
                "confirmed_by": [person],
                "expires_at": body.expires_at.isoformat(),
                "status": f"{count}: asked by {person}, waiting for {wanted} to confirm "
                f"raising {service} to {level}",
            },
        )

    def confirm(self, request_id: str, person: str) -> AutonomyOutcome | Refusal:
        now = self._now()
        with self._lock:
            request = self._raises.requests.get(request_id)
            if request is None or request.state(now) != "pending":
                later = f" (it is {request.status(now)})" if request is not None else ""
                return Refusal(404, f"no pending autonomy raise {request_id}{later}", "request_id")
            if request.has_confirmed(person):
                return Refusal(
                    409,
                    f"{person} has already asked for or confirmed {request_id} "
                    f"({request.status(now)}); another admin must confirm it",
                    "request_id",
                )
            confirmed_by = [*request.confirmed_by, person]
            service, level, previous = request.service, request.level, request.previous
            required = request.required
        stream = f"service:{service}"
        inputs = [Input(AutonomyRaiseConfirmed(request_id=request_id), stream=stream, actor=person)]
        done = len(confirmed_by) >= required
        if done:
            changed = AutonomyChanged(service=service, level=level, previous=previous)
            inputs.append(Input(changed, stream=stream, actor=person))
            status = f"{service} raised to {level}: confirmed by " + " and ".join(confirmed_by)
        else:
            left = required - len(confirmed_by)
            wanted = "another admin" if left == 1 else f"{left} more admins"
            status = (
                f"{len(confirmed_by)} of {required}: asked by {confirmed_by[0]}, confirmed by "
                f"{', '.join(confirmed_by[1:])}, waiting for {wanted}"
            )
        return AutonomyOutcome(
            inputs,
            {
                "service": service,
                "level": level,
                "previous": previous,
                "changed": done,
                "pending": not done,
                "request_id": request_id,
                "required": required,
                "confirmed_by": confirmed_by,
                "status": status,
            },
            changed=done,
        )
