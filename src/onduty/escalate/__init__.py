"""Escalate: notification channels (webhook, Slack, email, PagerDuty) and their delivery.

`parse_channels` validates the `channels:` section of the configuration; `Deliverer` is the
runtime's notifier, delivering each `Notify` command with retries and fallback and recording
`NotificationSent` / `NotificationFailed`.
"""

from onduty.escalate.channels import (
    AnyChannel,
    ChannelConfigError,
    ChannelSpec,
    DeliveryError,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
    parse_channels,
)
from onduty.escalate.deliver import Deliverer, Record, Sender, Spawn, build_sender, dedup_key

__all__ = [
    "AnyChannel",
    "ChannelConfigError",
    "ChannelSpec",
    "Deliverer",
    "DeliveryError",
    "EmailChannel",
    "PagerDutyChannel",
    "Record",
    "Sender",
    "SlackChannel",
    "Spawn",
    "WebhookChannel",
    "build_sender",
    "dedup_key",
    "parse_channels",
]
