from __future__ import annotations

import copy
import re
import timeit
from datetime import UTC, datetime
from typing import Any

import pytest

from onduty.events import Signal, SignalReceived
from onduty.sense import IngestError, parse_alertmanager
from onduty.sense.alertmanager import parse

from .payloads import ALERTMANAGER, RECEIVED_AT, dump, many_alerts


def _parse(document: Any) -> list[Signal]:
    return parse_alertmanager(dump(document), received_at=RECEIVED_AT)


def _error(document: Any) -> IngestError:
    with pytest.raises(IngestError) as caught:
        _parse(document)
    return caught.value


def test_golden_notification_gives_one_signal_per_alert_with_its_own_status() -> None:
    labels = {
        "alertname": "HighErrorRate",
        "job": "checkout",
        "service": "checkout",
        "severity": "critical",
    }
    assert _parse(ALERTMANAGER) == [
        SignalReceived(
            source="alertmanager",
            fingerprint="1a30ba71cca2921f",
            status="firing",
            labels={**labels, "instance": "checkout-7f9c:8080"},
            annotations={
                "summary": "5xx ratio above 5% on checkout-7f9c",
                "runbook_url": "https://runbooks.example.com/checkout/high-error-rate",
            },
            starts_at=datetime(2024, 5, 1, 11, 52, 26, 739267, tzinfo=UTC),
            ends_at=None,
            generator_url="http://prometheus:9090/graph?g0.expr=job%3Acheckout_5xx%3Aratio"
            "+%3E+0.05&g0.tab=1",
        ),
        SignalReceived(
            source="alertmanager",
            fingerprint="c6eadffa33fcdf37",
            status="resolved",
            labels={**labels, "instance": "checkout-2b1d:8080"},
            annotations={"summary": "5xx ratio above 5% on checkout-2b1d"},
            starts_at=datetime(2024, 5, 1, 9, 40, 11, 500000, tzinfo=UTC),
            ends_at=datetime(2024, 5, 1, 11, 58, 41, 100000, tzinfo=UTC),
            generator_url="http://prometheus:9090/graph?g0.expr=job%3Acheckout_5xx%3Aratio",
        ),
        SignalReceived(
            source="alertmanager",
            fingerprint="bc97ff14869b13e3",
            status="firing",
            labels={**labels, "instance": "checkout-0a3e:8080"},
            starts_at=datetime(2024, 5, 1, 11, 59, 56, tzinfo=UTC),
        ),
    ]


def test_times_are_utc_and_delivery_id_is_empty() -> None:
    for signal in _parse(ALERTMANAGER):
        assert signal.delivery_id is None
        for moment in (signal.starts_at, signal.ends_at):
            assert moment is None or moment.utcoffset() is not None
            assert moment is None or moment.tzinfo is UTC


def test_group_status_does_not_override_the_alerts_own() -> None:
    resolved_group = {**ALERTMANAGER, "status": "resolved"}
    assert [s.status for s in _parse(resolved_group)] == ["firing", "resolved", "firing"]


def test_truncated_notification_keeps_what_it_got() -> None:
    document = {**ALERTMANAGER, "truncatedAlerts": 12}
    assert len(_parse(document)) == 3


def test_minimal_imitation_is_accepted() -> None:
    signals = _parse({"alerts": [{"status": "firing", "labels": {"alertname": "Up"}}]})
    [signal] = signals
    assert signal.labels == {"alertname": "Up"}
    assert signal.annotations == {}
    assert signal.starts_at == RECEIVED_AT  # no startsAt: the time it was received
    assert signal.ends_at is None and signal.generator_url is None
    assert len(signal.fingerprint) == 16
    int(signal.fingerprint, 16)


def test_null_optional_fields_count_as_absent() -> None:
    document = {
        "version": "4",
        "receiver": None,
        "groupLabels": None,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "Up"},
                "annotations": None,
                "startsAt": None,
                "endsAt": None,
                "generatorURL": None,
                "fingerprint": None,
            }
        ],
    }
    assert _parse(document)[0].annotations == {}


def test_alert_without_status_takes_the_groups() -> None:
    document = {"status": "resolved", "alerts": [{"labels": {"alertname": "Up"}}]}
    [signal] = _parse(document)
    assert signal.status == "resolved"
    assert signal.ends_at == RECEIVED_AT  # resolved without endsAt: when we heard of it
    assert signal.starts_at is None


def test_missing_fingerprint_is_a_stable_hash_of_the_labels() -> None:
    one = {"alerts": [{"status": "firing", "labels": {"a": "1", "b": "2"}}]}
    other = {"alerts": [{"status": "resolved", "labels": {"b": "2", "a": "1"}}]}
    different = {"alerts": [{"status": "firing", "labels": {"a": "1", "b": "3"}}]}
    assert _parse(one)[0].fingerprint == _parse(other)[0].fingerprint
    assert _parse(one)[0].fingerprint != _parse(different)[0].fingerprint
    assert re.fullmatch(r"[0-9a-f]{16}", _parse(one)[0].fingerprint)


def test_empty_alert_list_is_an_empty_delivery() -> None:
    assert _parse({**ALERTMANAGER, "alerts": []}) == []


def _with(path: list[str | int], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(ALERTMANAGER)
    node: Any = document
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return document


def _without(path: list[str | int]) -> dict[str, Any]:
    document = copy.deepcopy(ALERTMANAGER)
    node: Any = document
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return document


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        (_with(["version"], "3"), "version", 'unsupported version, expected "4"'),
        (_with(["version"], 4), "version", "expected a string, got an integer"),
        (_without(["alerts"]), "alerts", "required field is missing"),
        (_with(["alerts"], {}), "alerts", "expected an array, got an object"),
        (_with(["alerts", 1], "x"), "alerts[1]", "expected an object, got a string"),
        (_without(["alerts", 2, "labels"]), "alerts[2].labels", "required field is missing"),
        (
            _with(["alerts", 2, "labels"], "x"),
            "alerts[2].labels",
            "expected an object, got a string",
        ),
        (
            _with(["alerts", 0, "labels", "severity"], 2),
            "alerts[0].labels.severity",
            "expected a string, got an integer",
        ),
        (
            _with(["alerts", 0, "annotations", "a b"], None),
            'alerts[0].annotations["a b"]',
            "expected a string, got null",
        ),
        (_with(["alerts", 1, "status"], "pending"), "alerts[1].status", "must be one of "),
        (_with(["status"], "unknown"), "status", "must be one of firing, resolved"),
        (
            _with(["alerts", 1, "startsAt"], "yesterday"),
            "alerts[1].startsAt",
            "must be RFC 3339 time",
        ),
        (_with(["alerts", 1, "endsAt"], 1714564800), "alerts[1].endsAt", "expected an RFC"),
        (_with(["alerts", 0, "fingerprint"], 7), "alerts[0].fingerprint", "expected a string"),
        (_with(["truncatedAlerts"], -1), "truncatedAlerts", "must not be negative"),
        (_with(["truncatedAlerts"], "0"), "truncatedAlerts", "expected an integer"),
        (_with(["groupLabels"], []), "groupLabels", "expected an object, got an array"),
        (_with(["externalURL"], False), "externalURL", "expected a string, got a boolean"),
    ],
)
def test_field_errors_name_the_field(document: Any, field: str, reason: str) -> None:
    error = _error(document)
    assert error.status == 422
    assert error.field == field
    assert error.reason.startswith(reason)
    assert error.as_json() == {"error": error.reason, "field": field}


def test_alert_without_any_status_is_a_missing_field() -> None:
    error = _error({"alerts": [{"labels": {}}, {"labels": {"a": "b"}}]})
    assert (error.status, error.field) == (422, "alerts[0].status")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json",
        b'{"alerts": []} trailing',
        b"\xff\xfe",
        b'{"alerts": [{"labels": {"a": "\xff"}}]}',
    ],
)
def test_malformed_json_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(IngestError) as caught:
        parse(body, received_at=RECEIVED_AT)
    assert caught.value.status == 400
    assert caught.value.field is None
    assert caught.value.reason.startswith("malformed JSON")


@pytest.mark.parametrize("body", [b"[]", b'"alerts"', b"null", b"4"])
def test_wrong_shape_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(IngestError) as caught:
        parse(body, received_at=RECEIVED_AT)
    assert (caught.value.status, caught.value.field) == (400, None)
    assert caught.value.reason.startswith("not the expected shape")


def test_deep_nesting_is_rejected_not_crashed() -> None:
    body = b'{"alerts": [], "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(IngestError) as caught:
        parse(body, received_at=RECEIVED_AT)
    assert caught.value.status == 400


def test_fifty_alerts_parse_well_under_a_millisecond() -> None:
    body = many_alerts(50)
    assert len(parse(body, received_at=RECEIVED_AT)) == 50
    best = min(timeit.repeat(lambda: parse(body, received_at=RECEIVED_AT), number=20, repeat=5))
    assert best / 20 < 0.005
