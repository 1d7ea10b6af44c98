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

Grafana Alerting's webhook contact point sends this shape with `"version": "1"` and more fields:
`orgId`, `title`, `state`, `message` for the group, `values` (or `valueString`), `silenceURL`,
`dashboardURL`, `panelURL`, `imageURL` for each alert. Its alerts become signals of source
`grafana`, and every extra field, of the group or of the alert, becomes an annotation named
`grafana_` + the field in snake case (`grafana_silence_url`, `grafana_values`), its value as
sent when a string, else compact JSON (`{"B":44.2,"C":1}`); empty ones are left out, and an
annotation of the alert's own with the same name wins. Grafana's `receiver`, `externalURL` and
`groupKey` are kept too; `groupLabels`, `commonLabels` and `commonAnnotations` repeat what
each alert carries, and are not.
"""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

from onduty.events import Signal, SignalReceived, SignalStatus
from onduty.sense._wire import decode, fingerprint_of, utc
from onduty.sense.errors import IngestError

SOURCE = "alertmanager"
VERSION = "4"
GRAFANA = "grafana"
GRAFANA_VERSION = "1"
# The fields Alertmanager's shape already maps; Grafana's others become annotations.
_GROUP_FIELDS = frozenset(
    {"alerts", "version", "status", "truncatedAlerts", "groupLabels", "commonLabels",
     "commonAnnotations"}
)  # fmt: skip
_ALERT_FIELDS = frozenset(
    {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
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


def _annotation_name(field: str) -> str:
    """`silenceURL` -> `grafana_silence_url`."""
    return "grafana_" + _CAMEL.sub("_", field).lower()


def _annotation_text(raw: msgspec.Raw) -> str | None:
    """A field as an annotation: a string as sent, anything else as the sender's own JSON
    text, compacted (no number goes through a float); None for an empty one."""
    text = bytes(raw)
    if text.startswith(b'"'):
        return msgspec.json.decode(text, type=str) or None
    if text in (b"null", b"{}", b"[]"):
        return None
    return msgspec.json.format(text, indent=-1).decode()


def _extras(document: dict[str, msgspec.Raw], known: frozenset[str]) -> dict[str, str]:
    """The fields of `document` that Alertmanager's shape has no place for, as annotations."""
    extras: dict[str, str] = {}
    for field, raw in document.items():
        text = _annotation_text(raw) if field not in known else None
        if text is not None:
            extras[_annotation_name(field)] = text
    return extras


def _grafana_extras(body: bytes) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Grafana's extra fields: the group's, and each alert's (the body is known to be the
    expected shape already)."""
    document = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    group = _extras(document, _GROUP_FIELDS)
    truncated = document.get("truncatedAlerts")
    if truncated is not None and bytes(truncated) != b"0":
        group["grafana_truncated_alerts"] = bytes(truncated).decode()
    alerts = msgspec.json.decode(document["alerts"], type=list[dict[str, msgspec.Raw]])
    return group, [_extras(alert, _ALERT_FIELDS) for alert in alerts]


def parse(body: bytes, *, received_at: datetime, content_type: str | None = None) -> list[Signal]:
    """One `Signal` per alert of an Alertmanager (or Grafana Alerting) webhook notification."""
    notification = decode(body, Notification)
    grafana = notification.version == GRAFANA_VERSION
    if notification.version is not None and notification.version != VERSION and not grafana:
        raise IngestError.invalid(
            "version",
            f'unsupported version, expected "{VERSION}" (Alertmanager) '
            f'or "{GRAFANA_VERSION}" (Grafana Alerting)',
        )
    if notification.truncated_alerts is not None and notification.truncated_alerts < 0:
        raise IngestError.invalid("truncatedAlerts", "must not be negative")
    group_status = _status(notification.status, "status")
    received = utc(received_at, "received_at")
    group_extras, alert_extras = _grafana_extras(body) if grafana else ({}, [])
    signals: list[Signal] = []
    for position, alert in enumerate(notification.alerts):
        status = _status(alert.status, position) or group_status
        if status is None:
            raise IngestError.missing(f"alerts[{position}].status")
        starts_at = _time(alert.starts_at, position, "startsAt")
        ends_at = _time(alert.ends_at, position, "endsAt")
        if status == "resolved" and ends_at is None:
            ends_at = received
        annotations = alert.annotations or {}
        if grafana:
            annotations = {**group_extras, **alert_extras[position], **annotations}
        signals.append(
            SignalReceived(
                source=GRAFANA if grafana else SOURCE,
                fingerprint=alert.fingerprint or fingerprint_of(alert.labels),
                status=status,
                labels=alert.labels,
                annotations=annotations,
                starts_at=starts_at or (received if status == "firing" else None),
                ends_at=ends_at,
                generator_url=alert.generator_url or None,
                delivery_id=None,
            )
        )
    return signals
