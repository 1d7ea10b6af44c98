"""Alertmanager's webhook notification (payload version 4).

    {"version": "4", "groupKey": ..., "truncatedAlerts": 0, "status": "firing|resolved",
     "receiver": ..., "groupLabels": {...}, "commonLabels": {...}, "commonAnnotations": {...},
     "externalURL": ..., "alerts": [{"status", "labels", "annotations", "startsAt", "endsAt",
                                     "generatorURL", "fingerprint"}, ...]}

Each alert becomes one `Signal` with the alert's own status (a group notification can carry
resolved alerts under a firing group). The group-level fields are validated and otherwise
unused: the alerts' own labels already contain the common ones. `delivery_id` stays empty: the
replicas of an Alertmanager cluster each send the same notification, and the core's
deduplication by fingerprint and status is what counts it once.

Senders that imitate Alertmanager often leave fields out; every field but `alerts` and each
alert's `labels` may be absent (or null). An alert without a status takes the group's.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from onduty.events import Signal, SignalReceived, SignalStatus
from onduty.sense._wire import decode, fingerprint_of, utc
from onduty.sense.errors import IngestError

SOURCE = "alertmanager"
VERSION = "4"
_STATUSES: dict[str, SignalStatus] = {"firing": "firing", "resolved": "resolved"}


class Alert(msgspec.Struct, gc=False):
    labels: dict[str, str]
    status: str | None = None
    annotations: dict[str, str] | None = None
    starts_at: datetime | None = msgspec.field(default=None, name="startsAt")
    ends_at: datetime | None = msgspec.field(default=None, name="endsAt")
    generator_url: str | None = msgspec.field(default=None, name="generatorURL")
    fingerprint: str | None = None


class Notification(msgspec.Struct, gc=False):
    alerts: list[Alert]
    version: str | None = None
    group_key: str | None = msgspec.field(default=None, name="groupKey")
    truncated_alerts: int | None = msgspec.field(default=None, name="truncatedAlerts")
    status: str | None = None
    receiver: str | None = None
    group_labels: dict[str, str] | None = msgspec.field(default=None, name="groupLabels")
    common_labels: dict[str, str] | None = msgspec.field(default=None, name="commonLabels")
    common_annotations: dict[str, str] | None = msgspec.field(
        default=None, name="commonAnnotations"
    )
    external_url: str | None = msgspec.field(default=None, name="externalURL")


def _time(value: datetime | None, position: int, name: str) -> datetime | None:
    """Alertmanager writes Go's zero time (`0001-01-01T00:00:00Z`) for "no time"."""
    if value is None or value.year == 1:
        return None
    return utc(value, f"alerts[{position}].{name}")


def _status(value: str | None, field: str | int) -> SignalStatus | None:
    """A status, if given; `field` is the top-level name or the position of the alert."""
    if value is None:
        return None
    status = _STATUSES.get(value)
    if status is not None:
        return status
    where = f"alerts[{field}].status" if isinstance(field, int) else field
    raise IngestError.invalid(where, "must be one of firing, resolved")


def parse(body: bytes, *, received_at: datetime, content_type: str | None = None) -> list[Signal]:
    """One `Signal` per alert of an Alertmanager webhook notification."""
    notification = decode(body, Notification)
    if notification.version is not None and notification.version != VERSION:
        raise IngestError.invalid("version", f'unsupported version, expected "{VERSION}"')
    if notification.truncated_alerts is not None and notification.truncated_alerts < 0:
        raise IngestError.invalid("truncatedAlerts", "must not be negative")
    group_status = _status(notification.status, "status")
    received = utc(received_at, "received_at")
    signals: list[Signal] = []
    for position, alert in enumerate(notification.alerts):
        status = _status(alert.status, position) or group_status
        if status is None:
            raise IngestError.missing(f"alerts[{position}].status")
        starts_at = _time(alert.starts_at, position, "startsAt")
        ends_at = _time(alert.ends_at, position, "endsAt")
        if status == "resolved" and ends_at is None:
            ends_at = received
        signals.append(
            SignalReceived(
                source=SOURCE,
                fingerprint=alert.fingerprint or fingerprint_of(alert.labels),
                status=status,
                labels=alert.labels,
                annotations=alert.annotations or {},
                starts_at=starts_at or (received if status == "firing" else None),
                ends_at=ends_at,
                generator_url=alert.generator_url or None,
                delivery_id=None,
            )
        )
    return signals
