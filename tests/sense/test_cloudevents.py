from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from onduty.events import Signal, SignalReceived
from onduty.sense import IngestError, parse_cloudevents
from onduty.sense.cloudevents import BATCH, STRUCTURED

from .payloads import CLOUDEVENT, CLOUDEVENT_BATCH, RECEIVED_AT, dump

FIRING = SignalReceived(
    source="//monitoring.example.com/rules/disk",
    fingerprint="",  # filled in below: a hash of the labels
    status="firing",
    labels={
        "service": "db",
        "instance": "db-1",
        "severity": "warning",
        "alertname": "DiskFillingUp",
        "source": "//monitoring.example.com/rules/disk",
        "subject": "db-1",
    },
    annotations={"summary": "Disk /var/lib/postgresql will be full within 4h"},
    starts_at=datetime(2024, 5, 1, 11, 55, tzinfo=UTC),
    delivery_id="//monitoring.example.com/rules/disk/8d5c7e3a-4b1f-4f0e-9a57-0c1d2e3f4a5b",
)


def _parse(document: Any, content_type: str | None = None) -> list[Signal]:
    return parse_cloudevents(dump(document), received_at=RECEIVED_AT, content_type=content_type)


def _error(document: Any, content_type: str | None = None) -> IngestError:
    with pytest.raises(IngestError) as caught:
        _parse(document, content_type)
    return caught.value


def test_golden_structured_event() -> None:
    [signal] = _parse(CLOUDEVENT, STRUCTURED)
    assert len(signal.fingerprint) == 16
    assert signal == FIRING.model_copy(update={"fingerprint": signal.fingerprint})


def test_golden_batch() -> None:
    signals = _parse(CLOUDEVENT_BATCH, BATCH)
    assert signals[0] == _parse(CLOUDEVENT)[0]
    assert signals[1] == SignalReceived(
        source="//monitoring.example.com/rules/disk",
        fingerprint="disk-db-2",
        status="resolved",
        labels={
            "service": "db",
            "instance": "db-2",
            "alertname": "com.example.alert.resolved",
            "source": "//monitoring.example.com/rules/disk",
        },
        ends_at=datetime(2024, 5, 1, 10, 58, tzinfo=UTC),
        delivery_id="//monitoring.example.com/rules/disk/evt-0002",
    )
    third = signals[2]
    assert third.status == "firing"
    assert third.labels == {
        "alertname": "com.example.deploy.finished",
        "source": "urn:example:deploys",
    }
    assert third.starts_at == RECEIVED_AT  # no time attribute: the time it was received
    assert third.delivery_id == "urn:example:deploys/evt-0003"


def test_fingerprint_is_a_stable_hash_of_the_labels() -> None:
    [one] = _parse(CLOUDEVENT)
    other = copy.deepcopy(CLOUDEVENT)
    other["id"] = "another-delivery"
    other["data"]["labels"] = dict(reversed(list(other["data"]["labels"].items())))
    [two] = _parse(other)
    assert one.fingerprint == two.fingerprint
    assert one.delivery_id != two.delivery_id


def test_empty_batch_is_valid() -> None:
    assert _parse([], BATCH) == []
    assert _parse([]) == []


def test_shape_decides_without_a_cloudevents_content_type() -> None:
    assert _parse(CLOUDEVENT, "application/json") == _parse(CLOUDEVENT, STRUCTURED)
    assert _parse(CLOUDEVENT_BATCH, None) == _parse(CLOUDEVENT_BATCH, BATCH)


def test_content_type_parameters_and_case_are_ignored() -> None:
    content_type = "Application/CloudEvents-Batch+JSON; charset=utf-8"
    assert len(_parse(CLOUDEVENT_BATCH, content_type)) == 3


@pytest.mark.parametrize(
    ("document", "content_type"),
    [(CLOUDEVENT, BATCH), (CLOUDEVENT_BATCH, STRUCTURED), ("event", None), (3, BATCH)],
)
def test_wrong_mode_is_a_bad_request(document: Any, content_type: str | None) -> None:
    error = _error(document, content_type)
    assert (error.status, error.field) == (400, None)


@pytest.mark.parametrize(
    ("status", "type_", "expected"),
    [
        ("acknowledged", "com.example.alert", "acknowledged"),
        ("resolved", "com.example.alert", "resolved"),
        ("firing", "com.example.alert.resolved", "firing"),
        ("pending", "com.example.alert.resolved", "resolved"),
        (None, "com.example.alert.resolved", "resolved"),
        (None, "com.example.alert", "firing"),
        (3, "com.example.alert", "firing"),
    ],
)
def test_status(status: Any, type_: str, expected: str) -> None:
    event = copy.deepcopy(CLOUDEVENT)
    event["type"] = type_
    if status is not None:
        event["data"]["status"] = status
    [signal] = _parse(event)
    assert signal.status == expected
    assert (signal.starts_at is None) == (expected != "firing")
    assert (signal.ends_at is None) == (expected != "resolved")


def test_label_precedence() -> None:
    event = copy.deepcopy(CLOUDEVENT)
    event["data"]["labels"].update(alertname="FromLabels", source="db-host", subject="vol")
    [signal] = _parse(event)
    assert signal.labels["alertname"] == "DiskFillingUp"  # data.alertname first
    assert signal.labels["source"] == "db-host"  # the data's own labels are kept
    assert signal.labels["subject"] == "vol"
    del event["data"]["alertname"]
    assert _parse(event)[0].labels["alertname"] == "FromLabels"


def test_data_fingerprint_is_used() -> None:
    event = copy.deepcopy(CLOUDEVENT)
    event["data"]["fingerprint"] = "disk:db-1"
    assert _parse(event)[0].fingerprint == "disk:db-1"


def test_binary_data_carries_no_alert_fields() -> None:
    event = {key: value for key, value in CLOUDEVENT.items() if key != "data"}
    event["data_base64"] = "eyJzdGF0dXMiOiAicmVzb2x2ZWQifQ=="
    [signal] = _parse(event)
    assert signal.status == "firing"
    assert signal.labels["alertname"] == "com.example.alert.firing"


def test_extensions_are_accepted() -> None:
    event = {**CLOUDEVENT, "partitionkey": "db", "sequence": 7, "sampled": True}
    assert _parse(event) == _parse(CLOUDEVENT)


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


E, B = CLOUDEVENT, CLOUDEVENT_BATCH


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        (_without(E, ["specversion"]), "specversion", "required field is missing"),
        (
            _with(E, ["specversion"], "0.3"),
            "specversion",
            'unsupported specversion, expected "1.0"',
        ),
        (_with(E, ["specversion"], 1.0), "specversion", "expected a string, got a number"),
        (_without(E, ["id"]), "id", "required field is missing"),
        (_with(E, ["id"], ""), "id", "must not be empty"),
        (_without(E, ["source"]), "source", "required field is missing"),
        (_with(E, ["source"], None), "source", "expected a string, got null"),
        (_without(E, ["type"]), "type", "required field is missing"),
        (_with(E, ["time"], "01/05/2024"), "time", "must be RFC 3339 time"),
        (_with(E, ["subject"], {}), "subject", "expected a string, got an object"),
        (_with(E, ["data_base64"], "eyJ9"), "data_base64", "data and data_base64 are mutually"),
        (_with(E, ["data", "labels"], ["a"]), "data.labels", "expected an object, got an array"),
        (
            _with(E, ["data", "labels", "severity"], 2),
            "data.labels.severity",
            "expected a string, got an integer",
        ),
        (
            _with(E, ["data", "annotations", "run book"], None),
            'data.annotations["run book"]',
            "expected a string, got null",
        ),
        (_with(E, ["data", "alertname"], 1), "data.alertname", "expected a string"),
        (_with(E, ["data", "fingerprint"], []), "data.fingerprint", "expected a string"),
        (_without(B, [1, "source"]), "[1].source", "required field is missing"),
        (_with(B, [2, "id"], 7), "[2].id", "expected a string, got an integer"),
        (_with(B, [1, "time"], "yesterday"), "[1].time", "must be RFC 3339 time"),
        (_with(B, [0, "data", "labels", "x"], 1), "[0].data.labels.x", "expected a string"),
        (_with(B, [1], "event"), "[1]", "expected an object, got a string"),
        (_with(B, [0, "specversion"], "0.3"), "[0].specversion", "unsupported specversion"),
    ],
)
def test_field_errors_name_the_field(document: Any, field: str, reason: str) -> None:
    error = _error(document)
    assert (error.status, error.field) == (422, field)
    assert error.reason.startswith(reason)


def test_invalid_base64_is_a_field_error() -> None:
    event = {key: value for key, value in CLOUDEVENT.items() if key != "data"}
    event["data_base64"] = "not base64!"
    error = _error(event)
    assert (error.status, error.field, error.reason) == (422, "data_base64", "must be base64")


@pytest.mark.parametrize("body", [b"", b"[{", b"\x00", b"[1e999]"])
def test_malformed_json_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(IngestError) as caught:
        parse_cloudevents(body, received_at=RECEIVED_AT, content_type=BATCH)
    assert (caught.value.status, caught.value.field) == (400, None)
