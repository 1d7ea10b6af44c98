"""What every wire format shares: decoding, times, stable fingerprints."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from onduty.sense.errors import BAD_TIME, IngestError, from_msgspec

T = TypeVar("T")

STATUSES = ("firing", "resolved", "acknowledged")


def decode(body: bytes, type_: type[T]) -> T:
    """Decode a body into msgspec types; every failure becomes an `IngestError`."""
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as error:
        raise from_msgspec(error, body=body) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise IngestError.malformed(f"malformed JSON: {_lower(str(error))}") from None
    except RecursionError:
        raise IngestError.malformed("malformed JSON: nested too deeply") from None


def decode_any(body: bytes) -> Any:
    """Decode a body into plain Python values (dict, list, str, int, float, bool, None)."""
    try:
        return msgspec.json.decode(body)
    except msgspec.ValidationError as error:  # a number out of range, say
        raise IngestError.malformed(f"malformed JSON: {_lower(str(error))}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise IngestError.malformed(f"malformed JSON: {_lower(str(error))}") from None
    except RecursionError:
        raise IngestError.malformed("malformed JSON: nested too deeply") from None


def _lower(message: str) -> str:
    return message[:1].lower() + message[1:]


def utc(value: datetime, field: str) -> datetime:
    """An aware UTC time; a time without an offset is taken as UTC."""
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 has no UTC equivalent
        raise IngestError.invalid(field, BAD_TIME) from None


def parse_time(text: str, field: str) -> datetime:
    """A lenient ISO 8601 time (PagerDuty documents `2015-07-17T08:42:58.315+0000`)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise IngestError.invalid(field, BAD_TIME) from None
    return utc(value, field)


def fingerprint_of(labels: dict[str, str]) -> str:
    """A stable hex identity of a label set: the same labels give the same fingerprint in any
    process, order of keys notwithstanding."""
    return stable_hash(msgspec.json.encode(labels, order="sorted"))


def stable_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
