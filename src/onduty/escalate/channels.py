"""Notifications for humans: what every sender shares (the wording of a notification, the
link to its incident, `DeliveryError`).

The `channels:` section's models (`webhook`, `slack`, `email`, `pagerduty`) are in
`onduty.escalate.specs`. Secrets are resolved when a channel's sender is
built, and never appear in an event, an error or a `repr`.
"""

from __future__ import annotations

from urllib.parse import quote

from onduty.commands import Notify

__all__ = [
    "DeliveryError",
    "incident_url",
    "kind_word",
    "title_of",
]


class DeliveryError(Exception):
    """A delivery attempt failed. `permanent`: trying again cannot help (a rejected payload, a
    refused credential, an unknown recipient), so the next channel is tried at once. The message
    holds no secret."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# --------------------------------------------------------------------------- wording

_KIND_WORDS = {
    "escalation": "Escalation",
    "approval": "Approval needed",
    "suggestion": "Suggestion",
    "resolved": "Resolved",
    "acknowledged": "Acknowledged",
}


def kind_word(kind: str) -> str:
    """How a notification's kind reads in a subject or a header."""
    return _KIND_WORDS.get(kind, kind.capitalize() or "Notification")


def title_of(command: Notify) -> str:
    """The notification's title: the incident's title, else its message's first line."""
    if command.title.strip():
        return " ".join(command.title.split())
    first = command.message.strip().splitlines()[0] if command.message.strip() else ""
    return " ".join(first.split()) or f"incident {command.incident_id}"


def incident_url(console_url: str | None, incident_id: str) -> str | None:
    """`{console_url}/incidents/{id}` (the id percent-encoded), or None without a console."""
    if not console_url:
        return None
    return f"{console_url.rstrip('/')}/incidents/{quote(incident_id, safe='')}"
