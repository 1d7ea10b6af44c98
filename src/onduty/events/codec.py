"""The envelope and its canonical encoding: what the log stores, hashes and reads back.

The envelope is generic (its `data` is the JSON form of a typed payload) so the log can store,
hash and verify events without knowing their types; `payload` turns `data` back into its typed
form, upcast from the version it was written with.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from onduty.events.upcasters import upcast
from onduty.events.vocabulary import (
    EVENT_TYPES,
    Origin,
    P,
    Payload,
    SignalReceived,
    UnknownEventType,
)


class Event(BaseModel):
    """The envelope. `seq`, `prev_hash` and `hash` are set by the log when it appends."""

    model_config = ConfigDict(frozen=True)

    seq: int = 0
    id: str
    type: str
    v: int = 1
    ts: datetime
    stream: str
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str = "onduty"
    data: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str = ""
    hash: str = ""

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("event time must carry a time zone (UTC)")
        return value.astimezone(UTC)

    @property
    def origin(self) -> Origin:
        spec = EVENT_TYPES.get(self.type)
        return spec.origin if spec else Origin.INPUT


_ENVELOPE_FIELDS = frozenset(Event.model_fields)


_OPT = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z


def canonical_body(event: Event) -> bytes:
    """Canonical JSON of the envelope without `hash`: sorted keys, no spaces, UTC 'Z' times."""
    return encode_body(event, event.seq, event.prev_hash)[0]


def encode_body(event: Event, seq: int, prev_hash: str) -> tuple[bytes, bytes, str]:
    """The canonical body of `event` placed at `seq` after `prev_hash`; with the canonical JSON
    of its data and its time as text, which a log stores or compares besides.

    The data is serialized once, with sorted keys; the envelope around it is written with its
    keys already in sorted order (the canonical order) instead of sorting them every time."""
    data = orjson.dumps(event.data, option=_OPT)
    ts = orjson.dumps(event.ts, option=_OPT)[1:-1].decode()
    body = orjson.dumps(
        {
            "actor": event.actor,
            "causation_id": event.causation_id,
            "correlation_id": event.correlation_id,
            "data": orjson.Fragment(data),
            "id": event.id,
            "prev_hash": prev_hash,
            "seq": seq,
            "stream": event.stream,
            "ts": ts,
            "type": event.type,
            "v": event.v,
        }
    )
    return body, data, ts


def event_from_body(body: bytes, hash_: str) -> Event:
    """Rebuild an event from the bytes the log stored (the inverse of `canonical_body`).

    The body is the log's own canonical JSON, which was validated when it was written and is
    covered by the chain hash, so it is rebuilt without validating it again: reading is the hot
    path of recovery and replay. `verify` is what checks the stored bytes."""
    fields = orjson.loads(body)
    fields["ts"] = datetime.fromisoformat(fields["ts"])
    fields["hash"] = hash_
    return _trusted_event(fields)


def _trusted_event(fields: dict[str, Any]) -> Event:
    """An Event from fields known to be valid, without running validation again."""
    event = object.__new__(Event)
    object.__setattr__(event, "__dict__", fields)
    # A mutable set of its own: `model_copy(update=...)` (and so `seal`) adds to it.
    object.__setattr__(event, "__pydantic_fields_set__", set(_ENVELOPE_FIELDS))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


def to_json(value: Any) -> bytes:
    """Canonical JSON for anything the project hashes or compares (configs, decisions)."""
    return orjson.dumps(value, option=_OPT)


def payload(event: Event) -> Payload:
    """The typed payload of an event, upcast to the current schema."""
    spec = EVENT_TYPES.get(event.type)
    if spec is None:
        raise UnknownEventType(f"unknown event type {event.type!r}")
    data = event.data if event.v == spec.version else upcast(event.type, event.v, event.data)
    return spec.model.model_validate(data)


def payload_as(event: Event, model: type[P]) -> P:
    value = payload(event)
    if not isinstance(value, model):
        raise TypeError(f"event {event.id} is {event.type}, not {model.__name__}")
    return value


def make_event(
    body: Payload,
    *,
    id: str,
    ts: datetime,
    stream: str,
    actor: str = "onduty",
    causation_id: str | None = None,
    correlation_id: str | None = None,
) -> Event:
    """Wrap a payload in an envelope (not yet placed in a log)."""
    type_ = type(body).__name__
    spec = EVENT_TYPES.get(type_)
    if spec is None or spec.model is not type(body):
        raise UnknownEventType(f"{type_} is not a registered event type (see EVENT_TYPES)")
    if ts.tzinfo is None:
        Event(id=id, type=type_, ts=ts, stream=stream)  # raises the validation error
    # Every field here is already typed and valid (the payload was validated when it was built),
    # so the envelope is assembled without validating it again: this is the ingest hot path.
    return _trusted_event(
        {
            "seq": 0,
            "id": id,
            "type": type_,
            "v": spec.version,
            "ts": ts if ts.tzinfo is UTC else ts.astimezone(UTC),
            "stream": stream,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "actor": actor,
            "data": _signal_json(body) or body.model_dump(mode="json"),
            "prev_hash": "",
            "hash": "",
        }
    )


# The fields `_signal_json` writes: a field added to Signal turns it off until it writes that one
_SIGNAL_FIELDS = {
    "source", "fingerprint", "status", "labels", "annotations", "starts_at", "ends_at",
    "generator_url", "delivery_id", "traceparent",
}  # fmt: skip
_SIGNAL_FAST = set(SignalReceived.model_fields) == _SIGNAL_FIELDS


def _utc_text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _signal_json(body: Payload) -> dict[str, Any] | None:
    """`body.model_dump(mode="json")` of a received signal, written out rather than through
    pydantic's generic serializer (every received alert goes through here); None for any
    other payload, and for a signal with extra fields or a time not in UTC."""
    if type(body) is not SignalReceived or body.__pydantic_extra__ or not _SIGNAL_FAST:
        return None
    starts, ends = body.starts_at, body.ends_at
    if (starts is not None and starts.tzinfo is not UTC) or (
        ends is not None and ends.tzinfo is not UTC
    ):
        return None
    written = {
        "source": body.source,
        "fingerprint": body.fingerprint,
        "status": body.status,
        "labels": dict(body.labels),
        "annotations": dict(body.annotations),
        "starts_at": _utc_text(starts),
        "ends_at": _utc_text(ends),
        "generator_url": body.generator_url,
        "delivery_id": body.delivery_id,
    }
    if body.traceparent is not None:
        written["traceparent"] = body.traceparent
    return written


def json_schemas() -> dict[str, Any]:
    """JSON Schema of the envelope and of every payload type, keyed by type name."""
    return {
        "envelope": Event.model_json_schema(),
        "types": {
            name: {
                "version": spec.version,
                "origin": spec.origin.value,
                "schema": spec.model.model_json_schema(),
            }
            for name, spec in sorted(EVENT_TYPES.items())
        },
    }


def parse_ts(value: str) -> datetime:
    """Parse an ISO-8601 time; naive times are taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
