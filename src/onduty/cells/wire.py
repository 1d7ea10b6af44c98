"""An input as it travels on the bus: the payload's type and fields, its stream and actor.

What a sender handed to ingest is decoded by the manager exactly as it was accepted: the type
names a registered payload, the fields are validated again on arrival (the bus is a boundary:
a message that does not decode is refused by name, never half-applied).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from onduty.events import EVENT_TYPES, Origin
from onduty.runtime import Input


class UndecodableMessage(ValueError):
    """A message on the bus that is not an input onduty can take; the message says why."""


def encode_input(item: Input) -> bytes:
    body = item.body
    message: dict[str, Any] = {
        "type": type(body).__name__,
        "data": body.model_dump(mode="json", exclude_none=False),
        "stream": item.stream,
        "actor": item.actor,
    }
    if item.ts is not None:
        message["ts"] = item.ts.isoformat()
    return orjson.dumps(message)


def decode_input(payload: bytes) -> Input:
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise UndecodableMessage(f"not JSON: {error}") from None
    if not isinstance(message, dict):
        raise UndecodableMessage("not a JSON object")
    kind = message.get("type")
    spec = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if spec is None or spec.origin is not Origin.INPUT:
        raise UndecodableMessage(f"type {kind!r} is not an input onduty knows")
    try:
        body = spec.model.model_validate(message.get("data"))
    except ValidationError as error:
        raise UndecodableMessage(f"{kind}: {error.errors()[0].get('msg', error)}") from None
    ts = message.get("ts")
    try:
        when = datetime.fromisoformat(ts) if isinstance(ts, str) else None
    except ValueError:
        raise UndecodableMessage(f"ts {ts!r} is not an ISO 8601 time") from None
    stream, actor = message.get("stream", ""), message.get("actor", "onduty")
    if not isinstance(stream, str) or not isinstance(actor, str):
        raise UndecodableMessage("stream and actor must be strings")
    return Input(body, stream=stream, actor=actor, ts=when)
