"""Notifications for humans: what every sender shares (the wording of a notification, the
link to its incident, `DeliveryError`).

The `channels:` section's models (`webhook`, `slack`, `email`, `pagerduty`) are in
`onduty.escalate.specs`. Secrets are resolved when a channel's sender is
built, and never appear in an event, an error or a `repr`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, TypeVar
from urllib.parse import quote

from onduty.commands import Notify
from onduty.escalate.specs import ChannelFields
from onduty.secrets import Secrets

if TYPE_CHECKING:  # the configuration imports this module; it must not load an HTTP client
    import httpx

__all__ = [
    "ChannelSender",
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


def utcnow() -> datetime:
    return datetime.now(UTC)


SpecT = TypeVar("SpecT", bound=ChannelFields)


class ChannelSender(ABC, Generic[SpecT]):
    """What every sender shares: built from its channel's spec with the same arguments (so a
    table can build any of them), it resolves its secrets at once (`_resolve`, raising
    `SecretError` naming the reference) and names itself in messages by `_describe` (never by a
    resolved secret)."""

    def __init__(
        self,
        spec: SpecT,
        *,
        env: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], datetime] = utcnow,
        console_url: str | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self._client = client
        self._clock = clock
        self._console_url = spec.console_url or console_url
        self.secrets = self._resolve(env)
        self._where = self._describe()

    @abstractmethod
    def _resolve(self, env: Mapping[str, str] | None) -> Secrets:
        """Resolve the channel's secret references; return every secret value to redact."""

    @abstractmethod
    def _describe(self) -> str:
        """How messages name the channel."""

    @abstractmethod
    def send(self, command: Notify, dedup_key: str) -> None:
        """Deliver one notification, or raise `DeliveryError`."""


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
