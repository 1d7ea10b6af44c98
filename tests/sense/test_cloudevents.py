from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    annotations={
        "summary": "Disk /var/lib/postgresql will be full within 4h",
        "ce.type": "com.example.alert.firing",  # the alertname is DiskFillingUp: kept aside
        "ce.traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    },
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
    assert third.annotations == {
        "data": "checkout v1.42 rolled out",
        "ce.datacontenttype": "text/plain",
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


def test_base64_data_carries_no_alert_fields_but_is_kept() -> None:
    event = {key: value for key, value in CLOUDEVENT.items() if key != "data"}
    event["data_base64"] = "eyJzdGF0dXMiOiAicmVzb2x2ZWQifQ=="
    [signal] = _parse(event)
    assert signal.status == "firing"
    assert signal.labels["alertname"] == "com.example.alert.firing"
    assert signal.annotations["data"] == '{"status": "resolved"}'  # UTF-8 text: kept as text
    assert signal.annotations["ce.datacontenttype"] == "application/json"


def test_extensions_are_kept_as_annotations() -> None:
    event = {**CLOUDEVENT, "partitionkey": "db", "sequence": 7, "sampled": True}
    [signal] = _parse(event)
    [plain] = _parse(CLOUDEVENT)
    assert signal.labels == plain.labels and signal.fingerprint == plain.fingerprint
    assert signal.annotations == {
        **plain.annotations,
        "ce.partitionkey": "db",
        "ce.sequence": "7",
        "ce.sampled": "true",
    }


def test_data_without_labels_keeps_every_field() -> None:
    """Well-known names become labels, everything else an annotation (nested as compact JSON):
    an event whose data has no `labels` object still names its service and instance."""
    event = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/monitoring/disk",
        "type": "com.example.alert",
        "subject": "/var/lib/pg",
        "dataschema": "https://schemas.example.com/alert.json",
        "data": {
            "service": "paiement-✓",
            "instance": "db-1",
            "severity": "critical",
            "alertname": "DiskFull",
            "region": "eu-west-1",
            "summary": "Disque plein à 98 % — 東京",
            "used_ratio": 0.98,
            "paging": True,
            "owner": {"team": "payments", "oncall": ["ana", "bo"]},
            "tags": ["db", "disk"],
            "nothing": None,
        },
    }
    [signal] = _parse(event)
    assert signal.labels == {
        "service": "paiement-✓",
        "instance": "db-1",
        "severity": "critical",
        "alertname": "DiskFull",
        "source": "/monitoring/disk",
        "subject": "/var/lib/pg",
    }
    assert signal.annotations == {
        "region": "eu-west-1",
        "summary": "Disque plein à 98 % — 東京",
        "used_ratio": "0.98",
        "paging": "true",
        "owner": '{"oncall":["ana","bo"],"team":"payments"}',
        "tags": '["db","disk"]',
        "nothing": "null",
        "ce.type": "com.example.alert",
        "ce.dataschema": "https://schemas.example.com/alert.json",
    }


def test_clashing_fields_keep_both_values() -> None:
    event = copy.deepcopy(CLOUDEVENT)
    event["data"].update(
        service="db-primary",  # data.labels says "db": the field wins, the label is kept aside
        summary="a summary outside annotations",
        severity=3,  # not a string: no label, an annotation
        status="pending",  # not a status: kept
    )
    event["data"]["labels"]["subject"] = "volume-7"
    [signal] = _parse(event)
    assert signal.labels["service"] == "db-primary"
    assert signal.labels["severity"] == "warning"
    assert signal.labels["subject"] == "volume-7"
    assert signal.annotations["labels.service"] == "db"
    assert signal.annotations["summary"] == CLOUDEVENT["data"]["annotations"]["summary"]
    assert signal.annotations["data.summary"] == "a summary outside annotations"
    assert signal.annotations["severity"] == "3"
    assert signal.annotations["status"] == "pending"
    assert signal.annotations["ce.subject"] == "db-1"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"data": "plain words ✓"}, {"data": "plain words ✓"}),
        ({"data": 42}, {"data": "42"}),
        ({"data": [1, {"b": 2, "a": 1}]}, {"data": '[1,{"a":1,"b":2}]'}),
        ({"data_base64": "AP8="}, {"data_base64": "AP8="}),  # not text: kept as base64
        ({"data_base64": "w6l0w6k="}, {"data": "été"}),
    ],
)
def test_data_that_is_not_an_object_is_kept(data: dict[str, Any], expected: dict[str, str]) -> None:
    event = {"specversion": "1.0", "id": "x", "source": "/s", "type": "t", **data}
    [signal] = _parse(event)
    assert signal.annotations == expected
    assert signal.labels == {"alertname": "t", "source": "/s"}


def test_acknowledged_keeps_its_time() -> None:
    event = _with(CLOUDEVENT, ["data", "status"], "acknowledged")
    [signal] = _parse(event)
    assert signal.starts_at is None and signal.ends_at is None
    assert signal.annotations["ce.time"] == "2024-05-01T11:55:00+00:00"


# --------------------------------------------------------------------------- binary mode

BINARY_HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "b-1",
    "ce-source": "//monitoring.example.com/rules/disk",
    "ce-type": "com.example.alert.firing",
    "ce-subject": "db-1",
    "ce-time": "2024-05-01T11:55:00Z",
    "ce-traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}


def _binary(
    data: bytes, content_type: str | None, headers: dict[str, str] | None = None
) -> list[Signal]:
    return parse_cloudevents(
        data,
        received_at=RECEIVED_AT,
        content_type=content_type,
        headers=BINARY_HEADERS if headers is None else headers,
    )


@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; x=1"])
def test_binary_mode_json_data_is_mapped_like_structured(content_type: str | None) -> None:
    [signal] = _binary(dump(CLOUDEVENT["data"]), content_type)
    assert signal.labels == FIRING.labels
    assert signal.annotations == FIRING.annotations
    assert signal.starts_at == FIRING.starts_at
    assert signal.delivery_id == "//monitoring.example.com/rules/disk/b-1"


def test_binary_mode_header_values_are_percent_decoded() -> None:
    headers = {**BINARY_HEADERS, "ce-subject": "h%C3%A9llo%20w%C3%B6rld", "ce-id": "%25x"}
    [signal] = _binary(b'{"service": "db"}', "application/json", headers)
    assert signal.labels["subject"] == "héllo wörld"
    assert signal.delivery_id is not None and signal.delivery_id.endswith("/%x")


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"disk full \xe2\x9c\x93", "text/plain", {"data": "disk full ✓"}),
        (b"caf\xe9", "text/plain; charset=latin-1", {"data": "café"}),
        (b"\x00\xff\x10", "application/octet-stream", {"data_base64": "AP8Q"}),
        (b"<alert>disk</alert>", "application/xml", {"data": "<alert>disk</alert>"}),
        (b"not json", None, {"data": "not json"}),
    ],
)
def test_binary_mode_data_that_is_not_json_is_kept(
    body: bytes, content_type: str | None, expected: dict[str, str]
) -> None:
    [signal] = _binary(body, content_type)
    kept = {k: v for k, v in signal.annotations.items() if k in ("data", "data_base64")}
    assert kept == expected
    if content_type is not None:
        assert signal.annotations["ce.datacontenttype"] == content_type
    assert signal.labels["alertname"] == "com.example.alert.firing"


def test_binary_mode_names_the_header_at_fault() -> None:
    without_id = {k: v for k, v in BINARY_HEADERS.items() if k != "ce-id"}
    with pytest.raises(IngestError) as caught:
        _binary(b"{}", "application/json", without_id)
    assert (caught.value.status, caught.value.field) == (422, "ce-id")
    with pytest.raises(IngestError) as caught:
        _binary(b"{}", None, {**BINARY_HEADERS, "ce-time": "yesterday"})
    assert (caught.value.status, caught.value.field) == (422, "ce-time")
    with pytest.raises(IngestError) as caught:
        _binary(b'{"labels": []}', None)
    assert (caught.value.status, caught.value.field) == (422, "data.labels")
    with pytest.raises(IngestError) as caught:
        _binary(b"{not json", "application/json")
    assert (caught.value.status, caught.value.field) == (400, None)


HEADER_NAMES = st.sampled_from(
    ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject", "ce-x", "ce-"]
)
CONTENT_TYPES = st.sampled_from(
    [None, "application/json", "text/plain; charset=base64", "text/plain; charset=utf-8\x00",
     "text/x; charset=latin-1", "application/octet-stream", STRUCTURED, BATCH, "a/b+json", ";"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(HEADER_NAMES, st.text(max_size=12) | st.sampled_from(["1.0"])),
    body=st.binary(max_size=40) | st.sampled_from([b"{}", b'{"labels": {"a": 1}}', b'"x"']),
    content_type=CONTENT_TYPES,
)
def test_binary_mode_answers_anything_with_signals_or_a_field_error(
    headers: dict[str, str], body: bytes, content_type: str | None
) -> None:
    try:
        signals = _binary(body, content_type, {**BINARY_HEADERS, **headers})
    except IngestError as error:
        assert error.status in (400, 422) and error.reason
        return
    for signal in signals:
        assert type(signal).model_validate(signal.model_dump()) == signal


def test_a_cloudevents_content_type_is_structured_whatever_the_headers() -> None:
    [signal] = _binary(dump(CLOUDEVENT), STRUCTURED)
    assert signal.delivery_id == FIRING.delivery_id


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
