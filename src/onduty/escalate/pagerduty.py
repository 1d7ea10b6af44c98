"""The PagerDuty channel: the Events API v2 (`POST {url}`, by default
https://events.pagerduty.com/v2/enqueue).

Kinds map to event actions: `resolved` resolves, `acknowledged` acknowledges, and everything
else (an escalation, an approval request, a suggestion) triggers, with severity `critical`,
`warning` and `info` respectively.

The event's `dedup_key` is the *incident's* key, `onduty-<incident id>`: PagerDuty folds every
trigger with one key into one alert and resolves it by the same key, so a retried trigger, the
next tier's page and the final resolve all land on the one alert for the incident. The
notification's own dedup key travels in `payload.custom_details.dedup_key` (and the
`X-Onduty-Dedup-Key` header). The routing key is the only secret in the body, where the API
requires it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from onduty.commands import Notify
from onduty.escalate.channels import (
    incident_url,
    kind_word,
    title_of,
)
from onduty.escalate.specs import (
    PagerDutyChannel,
    url_for_display,
)
from onduty.escalate.webhook import JsonSender
from onduty.secrets import Secrets, resolve_references

_SUMMARY_LIMIT = 1024
_KEY_LIMIT = 255
EVENT_ACTIONS = {"resolved": "resolve", "acknowledged": "acknowledge"}
SEVERITIES = {"escalation": "critical", "approval": "warning", "suggestion": "info"}


def incident_dedup_key(incident_id: str) -> str:
    """The alert's key in PagerDuty: stable for the incident (at most 255 characters)."""
    key = f"onduty-{incident_id}"
    if len(key) <= _KEY_LIMIT:
        return key
    return "onduty-" + hashlib.sha256(incident_id.encode()).hexdigest()


def event_action(kind: str) -> str:
    return EVENT_ACTIONS.get(kind, "trigger")


def pagerduty_event(
    command: Notify,
    dedup_key: str,
    *,
    routing_key: str,
    source: str,
    now: datetime,
    console_url: str | None,
) -> dict[str, Any]:
    """The Events API v2 body."""
    action = event_action(command.kind)
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": incident_dedup_key(command.incident_id),
    }
    if action != "trigger":
        return event
    title = title_of(command)
    summary = f"{kind_word(command.kind)}: {title}"
    if len(summary) > _SUMMARY_LIMIT:
        summary = summary[: _SUMMARY_LIMIT - 1] + "…"
    link = incident_url(console_url, command.incident_id)
    payload: dict[str, Any] = {
        "summary": summary,
        "source": source,
        "severity": SEVERITIES.get(command.kind, "error"),
        "timestamp": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "class": command.kind,
        "custom_details": {
            "message": command.message,
            "incident_id": command.incident_id,
            "kind": command.kind,
            "tier": command.tier,
            "service": command.service,
            "approval_id": command.approval_id,
            "dedup_key": dedup_key,
            "incident_url": link,
        },
    }
    if command.service:
        payload["component"] = command.service
        payload["group"] = command.service
    event["payload"] = payload
    event["client"] = "onduty"
    if link is not None:
        event["client_url"] = link
        event["links"] = [{"href": link, "text": "Open the incident in onduty"}]
    return event


class PagerDutySender(JsonSender[PagerDutyChannel]):
    """Delivers to a `PagerDutyChannel`. The routing key is resolved here (raising
    `SecretError` naming the reference) and never appears in `repr` or messages."""

    def _resolve(self, env: Mapping[str, str] | None) -> Secrets:
        resolved, secrets = resolve_references(
            {"routing_key": self.spec.routing_key}, what="channel " + repr(self.name), env=env
        )
        self._routing_key = resolved.as_dict()["routing_key"]
        return secrets

    def _describe(self) -> str:
        return f"pagerduty {self.name!r} ({url_for_display(self.spec.url)})"

    def __repr__(self) -> str:
        return f"PagerDutySender(name={self.name!r}, routing_key=[redacted])"

    def send(self, command: Notify, dedup_key: str) -> None:
        event = pagerduty_event(
            command,
            dedup_key,
            routing_key=self._routing_key,
            source=self.spec.source,
            now=self._clock(),
            console_url=self._console_url,
        )
        self._post(self.spec.url, event, {"X-Onduty-Dedup-Key": dedup_key})
