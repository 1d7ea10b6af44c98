from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from onduty.events import Signal, SignalReceived
from onduty.sense import IngestError, parse_native

from .payloads import NATIVE, NATIVE_LIST, RECEIVED_AT, dump

GOLDEN = SignalReceived(
    source="probe",
    fingerprint="probe:checkout:http",
    status="firing",
    labels={"alertname": "ProbeFailed", "service": "checkout"},
    annotations={"summary": "GET /health failed 3 times"},
    starts_at=datetime(2024, 5, 1, 11, 58, tzinfo=UTC),
    generator_url="https://probes.example.com/checkout",
    delivery_id="probe-run-918",
)


def _parse(document: Any) -> list[Signal]:
    return parse_native(dump(document), received_at=RECEIVED_AT)


def _error(document: Any) -> IngestError:
    with pytest.raises(IngestError) as caught:
        _parse(document)
    return caught.value


def test_golden_single_signal() -> None:
    [signal] = _parse(NATIVE)
    assert signal == GOLDEN
    assert signal.starts_at is not None and signal.starts_at.tzinfo is UTC


def test_golden_list() -> None:
    assert _parse(NATIVE_LIST) == [
        GOLDEN,
        SignalReceived(
            source="probe",
            fingerprint="probe:db:tcp",
            status="resolved",
            starts_at=datetime(2024, 5, 1, 11, tzinfo=UTC),
            ends_at=datetime(2024, 5, 1, 11, 30, tzinfo=UTC),
        ),
        SignalReceived(source="pager", fingerprint="pd:42", status="acknowledged"),
    ]


def test_round_trip_of_a_signal_as_json() -> None:
    assert _parse(GOLDEN.model_dump(mode="json")) == [GOLDEN]


def test_empty_list_and_unknown_fields() -> None:
    assert _parse([]) == []
    [signal] = _parse({**NATIVE, "team": "payments"})
    assert signal == GOLDEN
    assert signal.model_extra == {}


def test_time_without_offset_is_utc() -> None:
    [signal] = _parse({**NATIVE, "starts_at": "2024-05-01T11:58:00"})
    assert signal.starts_at == GOLDEN.starts_at


def _with(document: Any, path: list[str | int], value: Any) -> Any:
    changed = copy.deepcopy(document)
    node = changed
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return changed


def _without(document: Any, path: list[str | int]) -> Any:
    changed = copy.deepcopy(document)
    node = changed
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return changed


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        (_without(NATIVE, ["source"]), "source", "required field is missing"),
        (_without(NATIVE, ["fingerprint"]), "fingerprint", "required field is missing"),
        (_without(NATIVE, ["status"]), "status", "required field is missing"),
        (_with(NATIVE, ["status"], "ok"), "status", "must be one of firing, resolved, ack"),
        (_with(NATIVE, ["source"], ""), "source", "must not be empty"),
        (_with(NATIVE, ["fingerprint"], ""), "fingerprint", "must not be empty"),
        (_with(NATIVE, ["labels"], "a=b"), "labels", "expected an object, got a string"),
        (_with(NATIVE, ["labels", "n"], 1), "labels.n", "expected a string, got an integer"),
        (_with(NATIVE, ["annotations"], []), "annotations", "expected an object, got an array"),
        (_with(NATIVE, ["starts_at"], "noon"), "starts_at", "must be RFC 3339 time"),
        (_with(NATIVE, ["ends_at"], 1714564800), "ends_at", "expected an RFC 3339 time"),
        (_with(NATIVE, ["ends_at"], "0001-01-01T00:30:00+01:00"), "ends_at", "must be RFC 3339"),
        (_with(NATIVE, ["delivery_id"], 9), "delivery_id", "expected a string, got an integer"),
        (_with(NATIVE_LIST, [2, "status"], "open"), "[2].status", "must be one of"),
        (_without(NATIVE_LIST, [1, "fingerprint"]), "[1].fingerprint", "required field is"),
        (_with(NATIVE_LIST, [0, "labels", "x"], None), "[0].labels.x", "expected a string"),
        (_with(NATIVE_LIST, [1], "signal"), "[1]", "expected an object, got a string"),
    ],
)
def test_field_errors_name_the_field(document: Any, field: str, reason: str) -> None:
    error = _error(document)
    assert (error.status, error.field) == (422, field)
    assert error.reason.startswith(reason)


@pytest.mark.parametrize("body", [b"", b"{", b'"signal"', b"null", b"true"])
def test_bad_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(IngestError) as caught:
        parse_native(body, received_at=RECEIVED_AT)
    assert (caught.value.status, caught.value.field) == (400, None)
