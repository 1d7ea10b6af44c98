"""The webhook channel: one JSON POST per notification.

The body (`version` 1):

    {"version": 1, "dedup_key": "...", "kind": "escalation", "incident_id": "...",
     "title": "...", "message": "...", "tier": 0, "service": "checkout",
     "approval_id": null, "channel": "ops-hook", "incident_url": "https://.../incidents/..."}

`dedup_key` (also sent as the `X-Onduty-Dedup-Key` and `Idempotency-Key` headers) is the same
for every delivery of one notification, on every channel: a receiver that gets it twice (a
retry after a lost answer) can tell. `tier` counts from 0, like the `Escalated` event.

`post_json` is shared with the Slack and PagerDuty channels: it sends one request, never
follows a redirect, and turns every failure into a `DeliveryError` that says whether trying
again can help, with every secret redacted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from onduty.commands import Notify
from onduty.escalate.channels import (
    ChannelSender,
    DeliveryError,
    SpecT,
    incident_url,
    title_of,
)
from onduty.escalate.specs import (
    WebhookChannel,
    check_resolved_url,
    url_for_display,
)
from onduty.httpbits import connect_error_reason
from onduty.secrets import Secrets, resolve_references
from onduty.values import format_seconds

_MAX_ANSWER = 4096
_ERROR_TEXT = 300
# Answers worth another attempt: the receiver is overloaded, restarting or rate limiting.
_TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})


def post_json(
    url: str,
    body: Any,
    *,
    headers: Mapping[str, str],
    timeout: float,
    secrets: Secrets,
    where: str,
    client: httpx.Client | None = None,
) -> tuple[int, str]:
    """POST `body` as JSON; return the 2xx status and the beginning of the answer (redacted).

    Raises `DeliveryError`: transient for network errors, timeouts, 408, 425, 429 and 5xx;
    permanent for any other answer (a redirect included). `where` names the destination in
    messages (never the resolved URL, which may hold a token)."""
    content = orjson.dumps(body)
    sent = {"Content-Type": "application/json", **headers}
    try:
        if client is None:
            with httpx.Client(follow_redirects=False) as own:
                status, text = _exchange(own, url, content, sent, timeout)
        else:
            status, text = _exchange(client, url, content, sent, timeout)
    except httpx.TimeoutException:
        raise DeliveryError(f"{where}: timed out after {format_seconds(timeout)}") from None
    except httpx.HTTPError as error:
        reason = secrets.redact(connect_error_reason(error))
        raise DeliveryError(f"{where}: {reason}") from None
    text = secrets.redact(text)
    if 200 <= status < 300:
        return status, text
    summary = " ".join(text.split())
    if len(summary) > _ERROR_TEXT:
        summary = summary[:_ERROR_TEXT] + "…"
    message = f"{where}: HTTP {status}" + (f": {summary}" if summary else "")
    permanent = status not in _TRANSIENT and not 500 <= status < 600
    raise DeliveryError(message, permanent=permanent)


class JsonSender(ChannelSender[SpecT]):
    """A sender that POSTs JSON: one request with the channel's timeout and redacted secrets."""

    def _post(self, url: str, body: Any, headers: Mapping[str, str]) -> None:
        post_json(
            url,
            body,
            headers=headers,
            timeout=self.spec.timeout.total_seconds(),
            secrets=self.secrets,
            where=self._where,
            client=self._client,
        )


def _exchange(
    client: httpx.Client, url: str, content: bytes, headers: Mapping[str, str], timeout: float
) -> tuple[int, str]:
    with client.stream(
        "POST",
        url,
        content=content,
        headers=dict(headers),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
    ) as response:
        answer = bytearray()
        for chunk in response.iter_bytes():
            answer += chunk
            if len(answer) >= _MAX_ANSWER:
                break
        return response.status_code, bytes(answer[:_MAX_ANSWER]).decode(errors="replace")


def notification_body(
    command: Notify, dedup_key: str, *, channel: str, console_url: str | None
) -> dict[str, Any]:
    """The webhook's JSON body (see the module's documentation)."""
    return {
        "version": 1,
        "dedup_key": dedup_key,
        "kind": command.kind,
        "incident_id": command.incident_id,
        "title": title_of(command),
        "message": command.message,
        "tier": command.tier,
        "service": command.service,
        "approval_id": command.approval_id,
        "channel": channel,
        "incident_url": incident_url(console_url, command.incident_id),
    }


class WebhookSender(JsonSender[WebhookChannel]):
    """Delivers to a `WebhookChannel`. Header and URL references are resolved here (raising
    `SecretError` naming the reference); the values are kept out of `repr` and messages."""

    def _resolve(self, env: Mapping[str, str] | None) -> Secrets:
        spec = self.spec
        self._headers, header_secrets = resolve_references(spec.headers, what="header", env=env)
        url, url_secrets = resolve_references({"url": spec.url}, what="channel", env=env)
        self._url = check_resolved_url(url.as_dict()["url"], f"channel {spec.name!r}")
        return header_secrets | url_secrets

    def _describe(self) -> str:
        return f"webhook {self.name!r} ({url_for_display(self.spec.url)})"

    def __repr__(self) -> str:
        return f"WebhookSender(name={self.name!r}, headers={self._headers.names()!r})"

    def send(self, command: Notify, dedup_key: str) -> None:
        body = notification_body(
            command, dedup_key, channel=self.name, console_url=self._console_url
        )
        headers = {
            **self._headers.as_dict(),
            "X-Onduty-Dedup-Key": dedup_key,
            "Idempotency-Key": dedup_key,
        }
        self._post(self._url, body, headers)
