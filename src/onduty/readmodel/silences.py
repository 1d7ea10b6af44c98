"""Silences and maintenance windows, projected from the log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from onduty.events import Event


@dataclass
class SilenceView:
    silence_id: str
    matchers: list[str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    kind: str

    def state(self, at: datetime) -> str:
        if at < self.starts_at:
            return "pending"
        return "active" if at < self.ends_at else "expired"


class SilenceProjection:
    """Silences and maintenance windows as created and expired in the log."""

    def __init__(self) -> None:
        self.silences: dict[str, SilenceView] = {}

    def feed(self, event: Event) -> None:
        data = event.data
        if event.type == "SilenceCreated":
            self.silences[data["silence_id"]] = SilenceView(
                silence_id=data["silence_id"],
                matchers=list(data["matchers"]),
                starts_at=datetime.fromisoformat(data["starts_at"]),
                ends_at=datetime.fromisoformat(data["ends_at"]),
                created_by=event.actor,
                comment=data["comment"],
                kind=data.get("kind", "silence"),
            )
        elif event.type == "SilenceExpired":
            view = self.silences.get(data["silence_id"])
            if view is not None and event.ts < view.ends_at:
                view.ends_at = max(event.ts, view.starts_at)
