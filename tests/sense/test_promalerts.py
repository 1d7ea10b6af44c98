"""Alertmanager's API v2 postable alerts, as Prometheus's notifier sends them, and their expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onduty.events import Signal
from onduty.sense import FORMATS, IngestError
from onduty.sense.promalerts import DEFAULT_VALIDITY, Expiry, alertmanager_fingerprint

from .payloads import RECEIVED_AT

# What Prometheus 2.x posts: its rule's labels, the alert's annotations, `endsAt` a few
# evaluation intervals ahead while firing, and the resolution time once it stopped holding.
PROMETHEUS: list[dict[str, Any]] = [
    {
        "labels": {"alertname": "InstanceDown", "instance": "web-1:9100", "job": "node"},
        "annotations": {"summary": "web-1 is down"},
        "startsAt": "2024-05-01T11:58:00.000Z",
        "endsAt": "2024-05-01T12:00:04.000Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
    },
    {
        "labels": {"alertname": "InstanceDown", "instance": "web-2:9100", "job": "node"},
        "annotations": {"summary": "web-2 is down"},
        "startsAt": "2024-05-01T11:50:00.000Z",
        "endsAt": "2024-05-01T11:59:59.000Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
    },
]


def _parse(document: Any) -> list[Signal]:
    return FORMATS["prometheus"](json.dumps(document).encode(), received_at=RECEIVED_AT)


def _error(document: Any) -> IngestError:
    with pytest.raises(IngestError) as caught:
        _parse(document)
    return caught.value


def test_an_alert_is_firing_until_its_ends_at_and_resolved_after() -> None:
    firing, resolved = _parse(PROMETHEUS)
    assert (firing.source, firing.status) == ("prometheus", "firing")
    assert firing.labels == PROMETHEUS[0]["labels"]
    assert firing.annotations == {"summary": "web-1 is down"}
    assert firing.starts_at == datetime(2024, 5, 1, 11, 58, tzinfo=UTC)
    assert firing.ends_at == datetime(2024, 5, 1, 12, 0, 4, tzinfo=UTC)
    assert firing.generator_url == PROMETHEUS[0]["generatorURL"]
    assert resolved.status == "resolved"
    assert resolved.ends_at == datetime(2024, 5, 1, 11, 59, 59, tzinfo=UTC)
    # the same labels give the same fingerprint, whatever their order
    again = _parse([{"labels": dict(reversed(PROMETHEUS[0]["labels"].items()))}])
    assert again[0].fingerprint == firing.fingerprint != resolved.fingerprint


def test_the_fingerprint_is_the_one_alertmanager_gives() -> None:
    """Recorded from Alertmanager 0.25's `GET /api/v2/alerts` after posting these label sets."""
    (firing, _) = _parse(PROMETHEUS)
    assert firing.fingerprint == "86a1ffe6ff7c39bd"
    assert alertmanager_fingerprint({"alertname": "Down", "zone": "é", "a": "b"}) == (
        "ea15286b1d2cea55"
    )


def test_an_alert_without_times_is_firing_for_alertmanagers_resolve_timeout() -> None:
    (signal,) = _parse([{"labels": {"alertname": "Manual"}, "endsAt": "0001-01-01T00:00:00Z"}])
    assert signal.status == "firing"
    assert signal.starts_at == RECEIVED_AT
    assert signal.ends_at == RECEIVED_AT + DEFAULT_VALIDITY
    assert signal.annotations == {} and signal.generator_url is None
    assert _parse([]) == []


@pytest.mark.parametrize(
    ("document", "status", "field", "reason"),
    [
        ({"labels": {"a": "b"}}, 400, None, "not the expected shape: expected an array"),
        ([{"labels": {}}], 422, "[0].labels", "must not be empty"),
        ([{"labels": {"": "x"}}], 422, "[0].labels", "a label name must not be empty"),
        ([{"annotations": {}}], 422, "[0].labels", "required field is missing"),
        ([{"labels": {"a": 1}}], 422, "[0].labels.a", "expected a string, got an integer"),
        (
            [
                {
                    "labels": {"a": "b"},
                    "startsAt": "2024-05-01T12:00:00Z",
                    "endsAt": "2024-05-01T11:00:00Z",
                }
            ],
            422,
            "[0].endsAt",
            "must not be before startsAt",
        ),
        ([{"labels": {"a": "b"}, "endsAt": "soon"}], 422, "[0].endsAt", "must be RFC 3339 time"),
    ],
)
def test_bad_alerts_are_refused_naming_the_field(
    document: Any, status: int, field: str | None, reason: str
) -> None:
    error = _error(document)
    assert (error.status, error.field) == (status, field)
    assert error.reason.startswith(reason)


def _firing(instance: str, until: datetime) -> Signal:
    alert = {**PROMETHEUS[0], "labels": {"alertname": "Down", "instance": instance}}
    alert["endsAt"] = until.isoformat()
    (signal,) = FORMATS["prometheus"](json.dumps([alert]).encode(), received_at=RECEIVED_AT)
    return signal


def test_an_alert_that_stops_being_re_sent_resolves_at_its_ends_at_once() -> None:
    expiry = Expiry()
    t = RECEIVED_AT
    first = _firing("a", t + timedelta(seconds=4))
    expiry.note([first, _firing("b", t + timedelta(seconds=4))])
    expiry.note([_firing("b", t + timedelta(seconds=8))])  # b re-sent: it lives on
    assert expiry.due(t + timedelta(seconds=3)) == []
    (resolved,) = expiry.due(t + timedelta(seconds=4))
    assert resolved.fingerprint == first.fingerprint
    assert (resolved.status, resolved.ends_at) == ("resolved", t + timedelta(seconds=4))
    assert (resolved.labels, resolved.annotations) == (first.labels, first.annotations)
    assert expiry.due(t + timedelta(seconds=5)) == []  # given once
    assert expiry.next_due() == t + timedelta(seconds=8)
    expiry.note([_firing("b", t - timedelta(seconds=1))])  # Prometheus's own resolution
    assert expiry.next_due() is None and len(expiry) == 0


def test_after_a_restart_an_alert_gets_one_validity_window_to_be_re_sent() -> None:
    expiry = Expiry()
    t = RECEIVED_AT
    recorded = _firing("a", t + timedelta(seconds=4))
    later = t + timedelta(minutes=10)  # onduty was down meanwhile
    expiry.seed(recorded, recorded_at=t, now=later)
    assert expiry.next_due() == later + timedelta(seconds=4)
    assert len(expiry) == 1
    expiry.seed(_firing("a", t + timedelta(seconds=60)), recorded_at=t, now=later)
    assert expiry.next_due() == later + timedelta(seconds=4)  # a newer entry is kept


def test_a_resolution_that_could_not_be_recorded_comes_back() -> None:
    expiry = Expiry()
    t = RECEIVED_AT
    soon = t + timedelta(seconds=1)
    expiry.note([_firing("a", soon)])
    due = expiry.due(soon)
    expiry.restore(due, soon + timedelta(seconds=1))
    assert expiry.due(soon + timedelta(seconds=1))[0].fingerprint == due[0].fingerprint
    expiry.note([_firing("a", soon)])
    due = expiry.due(soon)
    expiry.note([_firing("a", t + timedelta(seconds=9))])  # re-sent meanwhile: that wins
    expiry.restore(due, soon + timedelta(seconds=1))
    assert expiry.next_due() == t + timedelta(seconds=9)


def test_many_re_sends_keep_the_queue_small() -> None:
    expiry = Expiry()
    for second in range(5000):
        expiry.note([_firing("a", RECEIVED_AT + timedelta(seconds=second))])
    assert len(expiry._queue) <= 1026
    assert expiry.next_due() == RECEIVED_AT + timedelta(seconds=4999)
