"""Escalate: notification channels (webhook, Slack, email, PagerDuty) and their delivery.

`parse_channels` validates the `channels:` section of the configuration; `Deliverer` is the
runtime's notifier, delivering each `Notify` command with retries and fallback and recording
`NotificationSent` / `NotificationFailed`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from onduty.escalate.channels import (
    DeliveryError,
)
from onduty.escalate.specs import (
    AnyChannel,
    ChannelConfigError,
    ChannelSpec,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
    parse_channels,
)

if TYPE_CHECKING:
    from onduty.escalate.deliver import SENDERS, Deliverer, Record, Sender, Spawn, dedup_key

# The senders are imported on first use, so that importing the channels' configuration models
# (`onduty.escalate.specs`) loads no HTTP client.
_LAZY = dict.fromkeys(
    ("Deliverer", "Record", "Sender", "Spawn", "SENDERS", "dedup_key"),
    "onduty.escalate.deliver",
)

__all__ = [
    "SENDERS",
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
    "dedup_key",
    "parse_channels",
]


def __getattr__(name: str) -> Any:
    """The deliverer and its senders, imported when first asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
