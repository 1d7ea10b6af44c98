"""CloudEvents 1.0 in JSON: structured mode (one event) and batch mode (an array of events).

    {"specversion": "1.0", "id": "...", "source": "...", "type": "...",
     "subject": "...", "time": "<RFC 3339>", "datacontenttype": "...", "dataschema": "...",
     "data": {...} | "data_base64": "...", "<extension>": ...}

The mapping, for `data` that is an object:

- status: `data.status` when it is firing, resolved or acknowledged; otherwise resolved when the
  event type ends with `.resolved`, and firing when it does not;
- labels: `data.labels`, plus `alertname` (`data.alertname`, else the label of that name, else
  the event type), `source` (the event's source) and `subject` (when the event has one); the
  latter two do not replace labels of the same name the data already carries;
- annotations: `data.annotations`; fingerprint: `data.fingerprint`, else a hash of the labels;
- delivery_id: `<source>/<id>`, the event's identity, by which a redelivery is recognised;
- time: the event's `time` (else the time of receipt) is when a firing signal started or a
  resolved one ended.

Data that is not an object (text, `data_base64`, none) carries no alert fields; the event still
becomes a signal named after its type. Extension attributes are accepted and not mapped.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import msgspec

from onduty.events import Signal, SignalReceived, SignalStatus
from onduty.sense._wire import decode_any, fingerprint_of, utc
from onduty.sense.errors import EMPTY, IngestError, from_msgspec, join

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"

_STATUSES: dict[str, SignalStatus] = {
    "firing": "firing",
    "resolved": "resolved",
    "acknowledged": "acknowledged",
}
_JSON_TYPES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


class CloudEvent(msgspec.Struct, gc=False):
    specversion: str
    id: str
    source: str
    type: str
    subject: str | None = None
    time: datetime | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: Any = None
    data_base64: str | None = None


def _got(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "a value")


def _string(data: dict[str, Any], name: str, prefix: str) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    raise IngestError.invalid(join(prefix, name), f"expected a string, got {_got(value)}")


def _string_map(data: dict[str, Any], name: str, prefix: str) -> dict[str, str]:
    value = data.get(name)
    if value is None:
        return {}
    field = join(prefix, name)
    if not isinstance(value, dict):
        raise IngestError.invalid(field, f"expected an object, got {_got(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise IngestError.invalid(join(field, key), f"expected a string, got {_got(item)}")
    return value


def _event(raw: Any, prefix: str, received: datetime) -> Signal:
    if not isinstance(raw, dict):
        raise IngestError.invalid(prefix, f"expected an object, got {_got(raw)}")
    try:
        event = msgspec.convert(raw, CloudEvent)
    except msgspec.ValidationError as error:
        raise from_msgspec(error, prefix=prefix) from None
    if event.specversion != SPECVERSION:
        raise IngestError.invalid(
            join(prefix, "specversion"), f'unsupported specversion, expected "{SPECVERSION}"'
        )
    for name in ("id", "source", "type"):
        if not getattr(event, name):
            raise IngestError.invalid(join(prefix, name), EMPTY)
    if event.data_base64 is not None:
        if event.data is not None:
            raise IngestError.invalid(
                join(prefix, "data_base64"), "data and data_base64 are mutually exclusive"
            )
        try:
            base64.b64decode(event.data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise IngestError.invalid(join(prefix, "data_base64"), "must be base64") from None
    time = utc(event.time, join(prefix, "time")) if event.time is not None else None

    data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
    where = join(prefix, "data")
    labels = dict(_string_map(data, "labels", where))
    annotations = _string_map(data, "annotations", where)
    alertname = _string(data, "alertname", where)
    fingerprint = _string(data, "fingerprint", where)
    stated = data.get("status")
    status = _STATUSES.get(stated) if isinstance(stated, str) else None
    if status is None:
        status = "resolved" if event.type.endswith(".resolved") else "firing"

    labels["alertname"] = alertname or labels.get("alertname") or event.type
    labels.setdefault("source", event.source)
    if event.subject:
        labels.setdefault("subject", event.subject)
    return SignalReceived(
        source=event.source,
        fingerprint=fingerprint or fingerprint_of(labels),
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=(time or received) if status == "firing" else None,
        ends_at=(time or received) if status == "resolved" else None,
        generator_url=None,
        delivery_id=f"{event.source}/{event.id}",
    )


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.partition(";")[0].strip().lower() or None


def parse(body: bytes, *, received_at: datetime, content_type: str | None = None) -> list[Signal]:
    """The events of a structured (`application/cloudevents+json`) or batch
    (`application/cloudevents-batch+json`) delivery; with any other content type the body's
    shape decides: an object is one event, an array a batch."""
    media_type = _media_type(content_type)
    document = decode_any(body)
    received = utc(received_at, "received_at")
    if media_type == BATCH and not isinstance(document, list):
        raise IngestError.malformed(f"not the expected shape: {BATCH} must be a JSON array")
    if media_type == STRUCTURED and not isinstance(document, dict):
        raise IngestError.malformed(f"not the expected shape: {STRUCTURED} must be a JSON object")
    if isinstance(document, dict):
        return [_event(document, "", received)]
    if isinstance(document, list):
        return [_event(raw, f"[{i}]", received) for i, raw in enumerate(document)]
    raise IngestError.malformed(
        f"not the expected shape: expected an event object or a batch array, got {_got(document)}"
    )
