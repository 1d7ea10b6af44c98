"""CloudEvents 1.0 over HTTP, in all three content modes.

- **structured** (`Content-Type: application/cloudevents+json`): the body is one event,
      {"specversion": "1.0", "id": "...", "source": "...", "type": "...",
       "subject": "...", "time": "<RFC 3339>", "datacontenttype": "...", "dataschema": "...",
       "data": {...} | "data_base64": "...", "<extension>": ...}
- **batch** (`application/cloudevents-batch+json`): the body is an array of such events;
- **binary** (the CloudEvents SDKs' default): the attributes are `ce-*` headers (`ce-id`,
  `ce-source`, ..., values percent-encoded), the body is the data itself and `Content-Type` is
  its `datacontenttype`. A JSON content type (`application/json`, `*/*+json`), or none, is read
  as JSON (with none, a body that is not JSON is kept as it is); any other data is not parsed
  and is kept whole, as the annotation `data` (text) or `data_base64` (bytes that are not text).

With any other content type and no `ce-*` headers, the body's shape decides: an object is one
event, an array a batch.

The mapping keeps every field (see `onduty.sense._mapping` for the shared rule). For `data` that
is an object:

- status: `data.status` when it is firing, resolved or acknowledged; otherwise resolved when the
  event type ends with `.resolved`, and firing when it does not;
- labels: `data.labels`, then `data.alertname`, `data.service`, `data.instance` and
  `data.severity` when they are strings (over a `data.labels` entry of the same name, which is
  then kept as the annotation `labels.<name>`); `alertname` falls back to the event type; and
  `source` (the event's source) and `subject` (when the event has one), which do not replace
  labels of the same name the data already carries;
- annotations: `data.annotations`, then every other field of `data` under its own name (a
  nested value as compact JSON; on a clash with `data.annotations`, as `data.<name>`);
- fingerprint: `data.fingerprint`, else a hash of the labels;
- delivery_id: `<source>/<id>`, the event's identity, by which a redelivery is recognised;
- time: the event's `time` (else the time of receipt) is when a firing signal started or a
  resolved one ended.

Data that is not an object (text, a number, an array, `data_base64`) is kept as the annotation
`data` (`data_base64` for bytes that are not text), and the event becomes a signal named after
its type. Attributes that reach no signal field are annotations `ce.<name>`: the type (when it is
not the alertname), the subject (when a label of that name differs), `dataschema`, the
`datacontenttype` of data that is not an object, the time of an acknowledgement, and every
extension attribute (`ce.traceparent`, ...).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import msgspec

from onduty.events import Signal, SignalReceived, SignalStatus
from onduty.sense._mapping import as_text, keep, opaque
from onduty.sense._wire import decode_any, fingerprint_of, utc
from onduty.sense.errors import EMPTY, IngestError, from_msgspec, join

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
HEADER_PREFIX = "ce-"

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
_ATTRIBUTES = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
    }
)
# fields of `data` that say what the signal is, rather than being kept as annotations
_CONTROL = frozenset({"labels", "annotations", "fingerprint"})
_DATA_LABELS = ("service", "instance", "severity")


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


def _label(labels: dict[str, str], annotations: dict[str, str], name: str, value: str) -> None:
    """`value` as the label `name`; a different value `data.labels` gave it is kept."""
    prior = labels.get(name)
    labels[name] = value
    if prior is not None and prior != value:
        keep(annotations, f"labels.{name}", prior)


def _map_data(
    data: dict[str, Any], where: str
) -> tuple[dict[str, str], dict[str, str], SignalStatus | None, str | None]:
    """Labels, annotations, stated status and fingerprint of `data` that is an object."""
    labels = dict(_string_map(data, "labels", where))
    annotations = dict(_string_map(data, "annotations", where))
    alertname = _string(data, "alertname", where)
    fingerprint = _string(data, "fingerprint", where)
    stated = data.get("status")
    status = _STATUSES.get(stated) if isinstance(stated, str) else None
    consumed = set(_CONTROL)
    if alertname:
        _label(labels, annotations, "alertname", alertname)
        consumed.add("alertname")
    if status is not None:
        consumed.add("status")
    for name in _DATA_LABELS:
        value = data.get(name)
        if isinstance(value, str) and value:
            _label(labels, annotations, name, value)
            consumed.add(name)
    for key, value in data.items():
        if key not in consumed:
            keep(annotations, key, as_text(value), f"data.{key}")
    return labels, annotations, status, fingerprint


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
    payload: bytes | None = None
    if event.data_base64 is not None:
        if event.data is not None:
            raise IngestError.invalid(
                join(prefix, "data_base64"), "data and data_base64 are mutually exclusive"
            )
        try:
            payload = base64.b64decode(event.data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise IngestError.invalid(join(prefix, "data_base64"), "must be base64") from None
    time = utc(event.time, join(prefix, "time")) if event.time is not None else None

    status: SignalStatus | None = None
    fingerprint: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if isinstance(event.data, dict):
        labels, annotations, status, fingerprint = _map_data(event.data, join(prefix, "data"))
    elif payload is not None or event.data is not None:
        if payload is not None:
            name, text = opaque(payload, _charset(event.datacontenttype))
        else:
            name, text = "data", as_text(event.data)
        keep(annotations, name, text, f"data.{name}")
        if event.datacontenttype:
            keep(annotations, "ce.datacontenttype", event.datacontenttype)
    if status is None:
        status = "resolved" if event.type.endswith(".resolved") else "firing"

    labels.setdefault("alertname", event.type)
    labels.setdefault("source", event.source)
    if labels["alertname"] != event.type:
        keep(annotations, "ce.type", event.type)
    if event.subject and labels.setdefault("subject", event.subject) != event.subject:
        keep(annotations, "ce.subject", event.subject)
    if event.dataschema:
        keep(annotations, "ce.dataschema", event.dataschema)
    if time is not None and status == "acknowledged":
        keep(annotations, "ce.time", time.isoformat())
    for key, value in raw.items():
        if key not in _ATTRIBUTES:
            keep(annotations, f"ce.{key}", as_text(value))
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


def _charset(content_type: str | None) -> str | None:
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def _is_json(media_type: str) -> bool:
    return media_type in ("application/json", "text/json") or media_type.endswith("+json")


def _binary(
    body: bytes, headers: Mapping[str, str], content_type: str | None, received: datetime
) -> Signal:
    """An event in binary mode: attributes from the `ce-*` headers, the body as its data."""
    raw: dict[str, Any] = {}
    for header, value in headers.items():
        name = header.lower()
        if name.startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX):
            raw[name.removeprefix(HEADER_PREFIX)] = unquote(value)
    for name in ("data", "data_base64", "datacontenttype"):
        raw.pop(name, None)  # the body is the data and Content-Type its type, nothing else
    if content_type:
        raw["datacontenttype"] = content_type
    media_type = _media_type(content_type)
    if body and (media_type is None or _is_json(media_type)):
        try:
            raw["data"] = decode_any(body)
        except IngestError:
            if media_type is not None:
                raise IngestError.malformed(
                    f"the body is not JSON, as its Content-Type {media_type} says"
                ) from None
            raw["data_base64"] = base64.b64encode(body).decode("ascii")
    elif body:
        raw["data_base64"] = base64.b64encode(body).decode("ascii")
    try:
        return _event(raw, "", received)
    except IngestError as problem:
        field = problem.field
        if field is not None and field.split(".")[0].split("[")[0] in _ATTRIBUTES - {"data"}:
            field = HEADER_PREFIX + field  # name the header the sender set
        raise IngestError(problem.status, problem.reason, field) from None


def parse(
    body: bytes,
    *,
    received_at: datetime,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> list[Signal]:
    """The events of a structured (`application/cloudevents+json`), batch
    (`application/cloudevents-batch+json`) or binary delivery (`headers` holds `ce-*`
    attributes; `content_type` is then the data's); with any other content type and no `ce-*`
    headers, the body's shape decides: an object is one event, an array a batch."""
    media_type = _media_type(content_type)
    received = utc(received_at, "received_at")
    attributes = {
        name: value
        for name, value in (headers or {}).items()
        if name.lower().startswith(HEADER_PREFIX)
    }
    if attributes and media_type not in (STRUCTURED, BATCH):
        return [_binary(body, attributes, content_type, received)]
    document = decode_any(body)
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
