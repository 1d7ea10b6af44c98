from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onduty.events import Signal, SignalReceived
from onduty.sense import IngestError, parse_pagerduty, parse_pagerduty_with_keys

from .payloads import (
    PAGERDUTY_ACKNOWLEDGE,
    PAGERDUTY_RESOLVE,
    PAGERDUTY_TRIGGER,
    RECEIVED_AT,
    ROUTING_KEY,
    dump,
)


def _parse(document: Any) -> tuple[list[Signal], list[str]]:
    return parse_pagerduty_with_keys(dump(document), received_at=RECEIVED_AT)


def _error(document: Any) -> IngestError:
    with pytest.raises(IngestError) as caught:
        _parse(document)
    return caught.value


def test_golden_trigger() -> None:
    signals, keys = _parse(PAGERDUTY_TRIGGER)
    assert keys == ["checkout/high-error-rate"]
    assert signals == [
        SignalReceived(
            source="pagerduty",
            fingerprint="pd:checkout/high-error-rate",
            status="firing",
            labels={
                "alertname": "HighErrorRate",
                "source": "checkout-7f9c.prod.example.com",
                "severity": "critical",
                "component": "checkout",
                "group": "payments",
                "service": "checkout",
                "instance": "checkout-7f9c.prod.example.com",
            },
            annotations={
                "summary": "Checkout 5xx ratio above 5% in eu-west-1",
                "error_ratio": "0.073",
                "threshold": "5",
                "paging": "true",
                "region": "eu-west-1",
                "top_paths": '["/cart","/pay"]',
                "owner": '{"slack":"#payments-oncall","team":"payments"}',
                "client": "Prometheus",
                "links": '[{"href":"https://runbooks.example.com/checkout/high-error-rate",'
                '"text":"Runbook"}]',
                "images": '[{"alt":"5xx ratio","href":"https://grafana.example.com/d/checkout",'
                '"src":"https://grafana.example.com/render/checkout-5xx.png"}]',
            },
            starts_at=datetime(2024, 5, 1, 11, 52, 26, 739000, tzinfo=UTC),
            generator_url="http://prometheus:9090/alerts",
        )
    ]


def test_golden_acknowledge_and_resolve_reach_the_triggers_fingerprint() -> None:
    [trigger], _ = _parse(PAGERDUTY_TRIGGER)
    [ack], ack_keys = _parse(PAGERDUTY_ACKNOWLEDGE)
    [resolve], resolve_keys = _parse(PAGERDUTY_RESOLVE)
    assert ack_keys == resolve_keys == ["checkout/high-error-rate"]
    assert ack == SignalReceived(
        source="pagerduty",
        fingerprint=trigger.fingerprint,
        status="acknowledged",
        labels={"alertname": "PagerDutyEvent"},
    )
    assert resolve == SignalReceived(
        source="pagerduty",
        fingerprint=trigger.fingerprint,
        status="resolved",
        labels={"alertname": "PagerDutyEvent"},
        ends_at=RECEIVED_AT,
    )


def test_parse_returns_the_signals_alone() -> None:
    signals = parse_pagerduty(dump(PAGERDUTY_TRIGGER), received_at=RECEIVED_AT)
    assert signals == _parse(PAGERDUTY_TRIGGER)[0]


def test_minimal_trigger_gets_a_stable_derived_dedup_key() -> None:
    trigger = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "payload": {"summary": "Disk full", "source": "db-1", "severity": "error"},
    }
    [signal], [key] = _parse(trigger)
    [again], [same_key] = _parse(trigger)
    assert key == same_key and len(key) == 16
    assert signal.fingerprint == again.fingerprint == f"pd:{key}"
    assert signal.labels == {
        "alertname": "PagerDutyEvent",
        "source": "db-1",
        "severity": "error",
        "instance": "db-1",
    }
    assert signal.annotations == {"summary": "Disk full"}
    assert signal.starts_at == RECEIVED_AT  # no timestamp: the time it was received
    other = copy.deepcopy(trigger)
    other["payload"]["severity"] = "critical"
    assert _parse(other)[1] != [key]


def test_empty_dedup_key_on_a_trigger_is_derived() -> None:
    assert _parse({**PAGERDUTY_TRIGGER, "dedup_key": ""})[1][0] != ""


def test_group_is_the_service_when_there_is_no_component() -> None:
    trigger = copy.deepcopy(PAGERDUTY_TRIGGER)
    del trigger["payload"]["component"]
    [signal], _ = _parse(trigger)
    assert signal.labels["service"] == "payments"
    assert "component" not in signal.labels


def test_a_custom_detail_named_like_a_field_is_kept_beside_it() -> None:
    trigger = copy.deepcopy(PAGERDUTY_TRIGGER)
    del trigger["links"], trigger["images"], trigger["client"]
    trigger["payload"]["custom_details"] = {"summary": "detail", "n": None, "links": "mine"}
    [signal], _ = _parse(trigger)
    assert signal.annotations == {
        "summary": PAGERDUTY_TRIGGER["payload"]["summary"],
        "custom_details.summary": "detail",
        "n": "null",
        "links": "mine",
    }


def test_custom_details_with_well_known_names_fill_labels() -> None:
    trigger = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "payload": {
            "summary": "Disk full",
            "source": "db-1",
            "severity": "error",
            "custom_details": {
                "service": "billing",  # no component or group: this names the service
                "alertname": "DiskFull",  # no class: this names the alert
                "instance": "db-1:9100",  # the source already named it: kept as a detail
                "severity": "error",  # the same as the payload's: nothing to keep twice
                "ticket": {"id": 42, "queue": "ops ✓"},
            },
        },
    }
    [signal], _ = _parse(trigger)
    assert signal.labels == {
        "alertname": "DiskFull",
        "source": "db-1",
        "severity": "error",
        "service": "billing",
        "instance": "db-1",
    }
    assert signal.annotations == {
        "summary": "Disk full",
        "instance": "db-1:9100",
        "ticket": '{"id":42,"queue":"ops ✓"}',
    }


def test_acknowledge_and_resolve_keep_what_they_carry() -> None:
    resolve = {
        **PAGERDUTY_RESOLVE,
        "payload": {"summary": "fixed", "timestamp": "2024-05-01T12:01:00Z"},
        "links": [{"href": "https://status.example.com/1"}],
        "client": "Grafana",
    }
    [signal], _ = _parse(resolve)
    assert signal.status == "resolved"
    assert signal.annotations == {
        "summary": "fixed",
        "timestamp": "2024-05-01T12:01:00Z",
        "links": '[{"href":"https://status.example.com/1"}]',
        "client": "Grafana",
    }


def _contains_key(signal: Signal) -> bool:
    return ROUTING_KEY in signal.model_dump_json() or ROUTING_KEY in repr(signal)


def test_routing_key_never_reaches_a_signal() -> None:
    for document in (PAGERDUTY_TRIGGER, PAGERDUTY_ACKNOWLEDGE, PAGERDUTY_RESOLVE):
        signals, _ = _parse(document)
        assert not any(_contains_key(signal) for signal in signals)


def test_routing_key_pasted_into_the_event_is_masked() -> None:
    trigger = copy.deepcopy(PAGERDUTY_TRIGGER)
    trigger["payload"]["custom_details"] = {"config": {"routing_key": ROUTING_KEY}}
    trigger["payload"]["summary"] = f"key {ROUTING_KEY} rejected"
    trigger["payload"]["component"] = ROUTING_KEY
    trigger["client_url"] = f"https://example.com/?key={ROUTING_KEY}"
    [signal], _ = _parse(trigger)
    assert not _contains_key(signal)
    assert signal.annotations["summary"] == "key [redacted] rejected"


@settings(max_examples=150, deadline=None)
@given(
    summary=st.text(min_size=1),
    details=st.dictionaries(st.text(), st.text() | st.integers() | st.none()),
    action=st.sampled_from(["trigger", "acknowledge", "resolve"]),
)
def test_routing_key_never_reaches_a_signal_whatever_the_event_says(
    summary: str, details: dict[str, Any], action: str
) -> None:
    event = {
        "routing_key": ROUTING_KEY,
        "event_action": action,
        "dedup_key": "k-1",
        "payload": {
            "summary": summary + ROUTING_KEY,
            "source": "s",
            "severity": "info",
            "custom_details": {**details, ROUTING_KEY: ROUTING_KEY},
        },
    }
    try:
        signals, _ = _parse(event)
    except IngestError as error:
        assert ROUTING_KEY not in str(error.as_json())
        return
    assert not any(_contains_key(signal) for signal in signals)


def _with(document: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    node = changed
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return changed


def _without(document: dict[str, Any], path: list[str]) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    node = changed
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return changed


T, R = PAGERDUTY_TRIGGER, PAGERDUTY_RESOLVE


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        (_without(T, ["routing_key"]), "routing_key", "required field is missing"),
        (_with(T, ["routing_key"], ""), "routing_key", "must not be empty"),
        (_with(T, ["routing_key"], 12), "routing_key", "expected a string, got an integer"),
        (_without(T, ["event_action"]), "event_action", "required field is missing"),
        (_with(T, ["event_action"], "escalate"), "event_action", "must be one of trigger, "),
        (_without(R, ["dedup_key"]), "dedup_key", "required field is missing"),
        (_with(R, ["dedup_key"], ""), "dedup_key", "required field is missing"),
        (_with(T, ["dedup_key"], "k" * 256), "dedup_key", "must be at most 255 characters"),
        (_without(T, ["payload"]), "payload", "required field is missing"),
        (_with(T, ["payload"], "x"), "payload", "expected an object, got a string"),
        (_without(T, ["payload", "summary"]), "payload.summary", "required field is missing"),
        (_with(T, ["payload", "summary"], ""), "payload.summary", "must not be empty"),
        (_without(T, ["payload", "source"]), "payload.source", "required field is missing"),
        (_without(T, ["payload", "severity"]), "payload.severity", "required field is missing"),
        (_with(T, ["payload", "severity"], "high"), "payload.severity", "must be one of "),
        (_with(T, ["payload", "timestamp"], "now"), "payload.timestamp", "must be RFC 3339"),
        (_with(T, ["payload", "class"], 3), "payload.class", "expected a string"),
        (
            _with(T, ["payload", "custom_details"], "text"),
            "payload.custom_details",
            "expected an object, got a string",
        ),
        (_with(T, ["images"], {}), "images", "expected an array, got an object"),
        (_with(T, ["images"], [{"href": "x"}]), "images[0].src", "required field is missing"),
        (_with(T, ["links"], [{"text": "x"}]), "links[0].href", "required field is missing"),
        (_with(T, ["client_url"], ["x"]), "client_url", "expected a string, got an array"),
        (_with(R, ["payload"], {"severity": "x"}), "payload.severity", "must be one of "),
    ],
)
def test_field_errors_name_the_field(document: Any, field: str, reason: str) -> None:
    error = _error(document)
    assert (error.status, error.field) == (422, field)
    assert error.reason.startswith(reason)
    assert ROUTING_KEY not in str(error.as_json())


@pytest.mark.parametrize("body", [b"[]", b"{", b'"trigger"'])
def test_bad_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(IngestError) as caught:
        parse_pagerduty(body, received_at=RECEIVED_AT)
    assert (caught.value.status, caught.value.field) == (400, None)
