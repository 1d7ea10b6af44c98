"""PagerDuty's Events API v2 (`POST /v2/enqueue`): one alert event per request.

    {"routing_key": "...", "event_action": "trigger|acknowledge|resolve", "dedup_key": "...",
     "payload": {"summary", "source", "severity", "timestamp", "component", "group", "class",
                 "custom_details": {...}},
     "images": [{"src", "href", "alt"}], "links": [{"href", "text"}],
     "client": "...", "client_url": "..."}

The mapping: trigger -> firing, acknowledge -> acknowledged, resolve -> resolved; the
fingerprint is `pd:<dedup_key>`, so the acknowledge and resolve that name a trigger's key reach
the same signal. A trigger without a dedup_key gets one derived from what it says (summary,
source, severity, component, group, class), so a re-sent trigger is the same alert; the key is
returned for the HTTP layer to echo, as PagerDuty does.

Every field is kept (the shared rule is in `onduty.sense._mapping`):

- labels: `alertname` (`payload.class`, else `PagerDutyEvent`), `source`, `severity`,
  `component`, `group`, `service` (the component, else the group) and `instance` (the source);
  a custom detail named `alertname`, `service`, `instance` or `severity` whose value is a string
  fills that label when the payload leaves it unset;
- annotations: `summary`, `client`, `links` and `images` (compact JSON arrays, as sent), the
  `timestamp` of an acknowledge or resolve, and every other custom detail under its own name (a
  nested value as compact JSON; a detail whose name is taken, `custom_details.<name>`);
- `client_url` is the generator URL, `payload.timestamp` when a trigger started.

The routing_key is a secret: it is checked and dropped, never copied into a Signal, and should
a sender have pasted it into a detail or a label, it is masked there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from onduty.events import Signal, SignalReceived, SignalStatus
from onduty.sense._mapping import LABEL_NAMES, as_text, keep
from onduty.sense._wire import decode, parse_time, stable_hash, utc
from onduty.sense.errors import EMPTY, IngestError

SOURCE = "pagerduty"
DEFAULT_ALERTNAME = "PagerDutyEvent"
MAX_DEDUP_KEY = 255
REDACTED = "[redacted]"
_MIN_SECRET = 8  # shorter keys are not real routing keys, and masking them would mangle text

_ACTIONS: dict[str, SignalStatus] = {
    "trigger": "firing",
    "acknowledge": "acknowledged",
    "resolve": "resolved",
}
_SEVERITIES = frozenset({"critical", "error", "warning", "info"})


class Image(msgspec.Struct, gc=False, omit_defaults=True):
    src: str
    href: str | None = None
    alt: str | None = None


class Link(msgspec.Struct, gc=False, omit_defaults=True):
    href: str
    text: str | None = None


class EventPayload(msgspec.Struct, gc=False):
    summary: str | None = None
    source: str | None = None
    severity: str | None = None
    timestamp: str | None = None
    component: str | None = None
    group: str | None = None
    class_: str | None = msgspec.field(default=None, name="class")
    custom_details: dict[str, Any] | None = None


class AlertEvent(msgspec.Struct, gc=False):
    routing_key: str
    event_action: str
    dedup_key: str | None = None
    payload: EventPayload | None = None
    images: list[Image] | None = None
    links: list[Link] | None = None
    client: str | None = None
    client_url: str | None = None


def _labels(payload: EventPayload | None) -> dict[str, str]:
    if payload is None:
        return {}
    candidates = {
        "alertname": payload.class_,
        "source": payload.source,
        "severity": payload.severity,
        "component": payload.component,
        "group": payload.group,
        "service": payload.component or payload.group,
        "instance": payload.source,
    }
    return {name: value for name, value in candidates.items() if value}


def _mapped(event: AlertEvent, status: SignalStatus) -> tuple[dict[str, str], dict[str, str]]:
    """The event's labels and annotations: every field but the routing key, which is a secret,
    and those that have a Signal field of their own (dedup_key, client_url, a trigger's
    timestamp)."""
    payload = event.payload
    labels = _labels(payload)
    annotations: dict[str, str] = {}
    if payload is not None and payload.summary:
        annotations["summary"] = payload.summary
    if event.client:
        keep(annotations, "client", event.client)
    if event.links:
        keep(annotations, "links", as_text(msgspec.to_builtins(event.links)))
    if event.images:
        keep(annotations, "images", as_text(msgspec.to_builtins(event.images)))
    if payload is not None and payload.timestamp is not None and status != "firing":
        keep(annotations, "timestamp", payload.timestamp)
    details = (payload.custom_details if payload is not None else None) or {}
    for key, value in details.items():
        wellknown = key in LABEL_NAMES and isinstance(value, str) and value
        if wellknown and labels.setdefault(key, value) == value:
            continue  # a label now (or already, with this value)
        keep(annotations, key, as_text(value), f"custom_details.{key}")
    labels.setdefault("alertname", DEFAULT_ALERTNAME)
    return labels, annotations


def _derived_key(payload: EventPayload | None) -> str:
    if payload is None:  # not reached: only a trigger may omit its key, and it has a payload
        raise IngestError.missing("dedup_key")
    facts = [
        payload.summary,
        payload.source,
        payload.severity,
        payload.component,
        payload.group,
        payload.class_,
    ]
    return stable_hash(msgspec.json.encode(facts))


def _validate(event: AlertEvent) -> SignalStatus:
    if not event.routing_key:
        raise IngestError.invalid("routing_key", EMPTY)
    status = _ACTIONS.get(event.event_action)
    if status is None:
        raise IngestError.invalid("event_action", "must be one of trigger, acknowledge, resolve")
    if event.dedup_key is not None and len(event.dedup_key) > MAX_DEDUP_KEY:
        raise IngestError.invalid("dedup_key", f"must be at most {MAX_DEDUP_KEY} characters")
    payload = event.payload
    if status == "firing":
        if payload is None:
            raise IngestError.missing("payload")
        for name in ("summary", "source", "severity"):
            value = getattr(payload, name)
            if value is None:
                raise IngestError.missing(f"payload.{name}")
            if not value:
                raise IngestError.invalid(f"payload.{name}", EMPTY)
    elif not event.dedup_key:
        raise IngestError.missing("dedup_key")
    severity = payload.severity if payload is not None else None
    if severity is not None and severity not in _SEVERITIES:
        raise IngestError.invalid(
            "payload.severity", "must be one of critical, error, warning, info"
        )
    return status


def _mask(text: str, secret: str) -> str:
    return text.replace(secret, REDACTED) if secret in text else text


def _masked(mapping: dict[str, str], secret: str) -> dict[str, str]:
    return {_mask(key, secret): _mask(value, secret) for key, value in mapping.items()}


def parse_with_keys(
    body: bytes, *, received_at: datetime, content_type: str | None = None
) -> tuple[list[Signal], list[str]]:
    """The event as a `Signal`, and its dedup_key (given, or derived for a trigger)."""
    event = decode(body, AlertEvent)
    status = _validate(event)
    payload = event.payload
    timestamp = None
    if payload is not None and payload.timestamp is not None:
        timestamp = parse_time(payload.timestamp, "payload.timestamp")
    received = utc(received_at, "received_at")
    starts_at = (timestamp or received) if status == "firing" else None
    ends_at = received if status == "resolved" else None
    dedup_key = event.dedup_key or _derived_key(payload)
    labels, annotations = _mapped(event, status)
    fingerprint, generator_url = "pd:" + dedup_key, event.client_url or None
    secret = event.routing_key
    if len(secret) >= _MIN_SECRET:
        labels, annotations = _masked(labels, secret), _masked(annotations, secret)
        fingerprint = _mask(fingerprint, secret)
        generator_url = _mask(generator_url, secret) if generator_url else None
    signal = SignalReceived(
        source=SOURCE,
        fingerprint=fingerprint,
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=generator_url,
        delivery_id=None,
    )
    return [signal], [dedup_key]


def parse(body: bytes, *, received_at: datetime, content_type: str | None = None) -> list[Signal]:
    """The event as a `Signal` (see `parse_with_keys` for its dedup_key as well)."""
    signals, _ = parse_with_keys(body, received_at=received_at, content_type=content_type)
    return signals
