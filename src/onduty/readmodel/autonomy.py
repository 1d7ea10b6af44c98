"""Autonomy raises that need several admins, projected from the log."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from onduty.events import Event
from onduty.readmodel.approvals import ANSWERED_KEPT, same_person


@dataclass
class AutonomyRaise:
    """A request to make a service more autonomous, waiting for `required` different admins
    (the requester first); it ends applied, superseded (the autonomy changed otherwise
    meanwhile, a lowering say) or, unconfirmed at `expires_at`, expired."""

    request_id: str
    service: str
    level: str
    previous: str | None
    required: int
    requested_at: datetime
    expires_at: datetime
    confirmed_by: list[str] = field(default_factory=list)
    outcome: str = ""
    """"applied" or "superseded" once decided; empty while open."""

    def has_confirmed(self, person: str) -> bool:
        return any(same_person(person, name) for name in self.confirmed_by)

    def state(self, now: datetime) -> str:
        if self.outcome:
            return self.outcome
        return "expired" if now >= self.expires_at else "pending"

    def status(self, now: datetime) -> str:
        """One sentence: "1 of 2: asked by root, waiting for another admin"."""
        state = self.state(now)
        count = f"{len(self.confirmed_by)} of {self.required}"
        if state == "applied":
            return f"{self.service} raised to {self.level}: confirmed by " + " and ".join(
                self.confirmed_by
            )
        if state == "superseded":
            return f"superseded: the autonomy of {self.service} was changed meanwhile"
        if state == "expired":
            return f"expired with {count} confirmations; {self.service} stays {self.previous}"
        asked = f"asked by {self.confirmed_by[0]}" if self.confirmed_by else "asked"
        others = self.confirmed_by[1:]
        also = f", confirmed by {', '.join(others)}" if others else ""
        left = self.required - len(self.confirmed_by)
        wanted = "another admin" if left == 1 else f"{left} more admins"
        return f"{count}: {asked}{also}, waiting for {wanted}"


class AutonomyRaises:
    """Autonomy raises that need several admins, as requested and confirmed in the log."""

    def __init__(self, kept: int = ANSWERED_KEPT) -> None:
        self.requests: OrderedDict[str, AutonomyRaise] = OrderedDict()
        self._kept = kept

    def feed(self, event: Event) -> None:
        data = event.data
        if event.type == "AutonomyRaiseRequested":
            for other in self._open(data["service"]):  # one open request per service
                other.outcome = "superseded"
            self.requests[data["request_id"]] = AutonomyRaise(
                request_id=data["request_id"],
                service=data["service"],
                level=data["level"],
                previous=data.get("previous"),
                required=int(data.get("required", 2)),
                requested_at=event.ts,
                expires_at=datetime.fromisoformat(data["expires_at"]),
                confirmed_by=[event.actor],
            )
            while len(self.requests) > self._kept:
                self.requests.popitem(last=False)
        elif event.type == "AutonomyRaiseConfirmed":
            request = self.requests.get(data["request_id"])
            if (
                request is not None
                and request.state(event.ts) == "pending"
                and not request.has_confirmed(event.actor)
            ):
                request.confirmed_by.append(event.actor)
        elif event.type == "AutonomyChanged":
            # the change that follows a request's last confirmation carries it out; any other
            # change of the service (a lowering, say) voids it
            for request in self._open(data["service"]):
                applied = (
                    data["level"] == request.level and len(request.confirmed_by) >= request.required
                )
                request.outcome = "applied" if applied else "superseded"

    def _open(self, service: str) -> list[AutonomyRaise]:
        return [r for r in self.requests.values() if r.service == service and not r.outcome]

    def pending(self, now: datetime) -> list[AutonomyRaise]:
        return [r for r in self.requests.values() if r.state(now) == "pending"]

    def pending_for(self, service: str, now: datetime) -> AutonomyRaise | None:
        return next((r for r in self.pending(now) if r.service == service), None)
