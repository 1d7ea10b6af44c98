"""The Slack channel: a Block Kit message to a Slack-compatible incoming webhook.

The message reads, top to bottom: a header with the incident's title; a section with the
message and fields for the kind, the escalation tier (counted from 1 for people), the service
and the approval id; a button to the incident in the console (`{console_url}/incidents/{id}`,
when a console URL is configured); a context line with the incident id and the notification's
dedup key. `text` repeats the essentials for notifications and clients without blocks.

Everything that comes from alerts is escaped (`&`, `<`, `>`), so an alert's text cannot mention
`@channel` or forge a link. Texts are cut to Block Kit's limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onduty.commands import Notify
from onduty.escalate.channels import (
    incident_url,
    kind_word,
    title_of,
)
from onduty.escalate.specs import (
    SlackChannel,
    check_resolved_url,
)
from onduty.escalate.webhook import JsonSender
from onduty.secrets import Secrets, resolve_references

_HEADER_LIMIT = 150
_SECTION_LIMIT = 3000
_FIELD_LIMIT = 2000
_FALLBACK_LIMIT = 4000


def escape(text: str) -> str:
    """Slack's escaping for text shown as mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_message(command: Notify, dedup_key: str, *, console_url: str | None) -> dict[str, Any]:
    """The webhook body: `text` and `blocks`."""
    title = title_of(command)
    word = kind_word(command.kind)
    fields = [
        {"type": "mrkdwn", "text": f"*Kind*\n{escape(word)}"},
        {"type": "mrkdwn", "text": f"*Tier*\n{command.tier + 1}"},
        {"type": "mrkdwn", "text": f"*Service*\n{escape(command.service or '—')}"},
    ]
    if command.approval_id:
        fields.append({"type": "mrkdwn", "text": f"*Approval*\n`{escape(command.approval_id)}`"})
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(title, _HEADER_LIMIT), "emoji": True},
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _cut(escape(command.message or title), _SECTION_LIMIT),
            },
            "fields": [{**field, "text": _cut(field["text"], _FIELD_LIMIT)} for field in fields],
        },
    ]
    link = incident_url(console_url, command.incident_id)
    if link is not None:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "onduty_open_incident",
                        "text": {"type": "plain_text", "text": "Open incident"},
                        "url": link,
                    }
                ],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _cut(
                        f"incident `{escape(command.incident_id)}` · "
                        f"dedup key `{escape(dedup_key)}`",
                        _FIELD_LIMIT,
                    ),
                }
            ],
        }
    )
    fallback = escape(f"{word}: {title}" + (f" — {command.message}" if command.message else ""))
    fallback = _cut(fallback, _FALLBACK_LIMIT - 200)
    if link is not None:
        fallback += f" <{link}|open incident>"
    return {"text": fallback, "blocks": blocks}


class SlackSender(JsonSender[SlackChannel]):
    """Delivers to a `SlackChannel`. The webhook URL (a credential) is resolved here and is
    never shown: messages say `slack 'name'`."""

    def _resolve(self, env: Mapping[str, str] | None) -> Secrets:
        resolved, secrets = resolve_references({"url": self.spec.url}, what="channel", env=env)
        self._url = check_resolved_url(resolved.as_dict()["url"], f"channel {self.name!r}")
        return secrets | Secrets([self._url])

    def _describe(self) -> str:
        return f"slack {self.name!r}"

    def __repr__(self) -> str:
        return f"SlackSender(name={self.name!r}, url=[redacted])"

    def send(self, command: Notify, dedup_key: str) -> None:
        message = slack_message(command, dedup_key, console_url=self._console_url)
        self._post(self._url, message, {"X-Onduty-Dedup-Key": dedup_key})
