"""onduty's own format: a `Signal` as JSON, one object or a list of them.

    {"source": "...", "fingerprint": "...", "status": "firing|resolved|acknowledged",
     "labels": {...}, "annotations": {...}, "starts_at": "<RFC 3339>", "ends_at": "<RFC 3339>",
     "generator_url": "...", "delivery_id": "..."}

Times are normalised to UTC (a time without an offset is taken as UTC). Fields that are not
Signal fields are dropped: what enters the log is exactly what onduty knows how to read.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from onduty.events import Signal, SignalReceived, SignalStatus
from onduty.sense._wire import decode, utc
from onduty.sense.errors import EMPTY, IngestError, join

_STATUSES: dict[str, SignalStatus] = {
    "firing": "firing",
    "resolved": "resolved",
    "acknowledged": "acknowledged",
}


class WireSignal(msgspec.Struct, gc=False):
    source: str
    fingerprint: str
    status: str
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    generator_url: str | None = None
    delivery_id: str | None = None


def _signal(wire: WireSignal, prefix: str) -> Signal:
    status = _STATUSES.get(wire.status)
    if status is None:
        raise IngestError.invalid(
            join(prefix, "status"), "must be one of firing, resolved, acknowledged"
        )
    if not wire.source:
        raise IngestError.invalid(join(prefix, "source"), EMPTY)
    if not wire.fingerprint:
        raise IngestError.invalid(join(prefix, "fingerprint"), EMPTY)
    starts_at = wire.starts_at
    ends_at = wire.ends_at
    return SignalReceived(
        source=wire.source,
        fingerprint=wire.fingerprint,
        status=status,
        labels=wire.labels or {},
        annotations=wire.annotations or {},
        starts_at=utc(starts_at, join(prefix, "starts_at")) if starts_at else None,
        ends_at=utc(ends_at, join(prefix, "ends_at")) if ends_at else None,
        generator_url=wire.generator_url,
        delivery_id=wire.delivery_id,
    )


def parse(body: bytes, *, received_at: datetime, content_type: str | None = None) -> list[Signal]:
    """One signal object, or a list of them (an empty list is a valid, empty delivery)."""
    document = decode(body, WireSignal | list[WireSignal])  # type: ignore[arg-type]
    if isinstance(document, WireSignal):
        return [_signal(document, "")]
    return [_signal(wire, f"[{position}]") for position, wire in enumerate(document)]
