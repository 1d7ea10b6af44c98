"""Grafana Alerting's webhook contact point: Alertmanager's shape with `"version": "1"` and
Grafana's own fields, every one of which reaches the signal."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from onduty.events import SignalReceived
from onduty.sense import FORMATS, IngestError

from .payloads import RECEIVED_AT, dump
from .payloads_grafana import BODY, FIRING_EXTRAS, GRAFANA, MESSAGE

CEST = timezone(timedelta(hours=2))


def _parse(document: Any, route: str = "grafana") -> list[Any]:
    body = BODY.encode() if document is GRAFANA else dump(document)
    return FORMATS[route](body, received_at=RECEIVED_AT)


@pytest.mark.parametrize("route", ["grafana", "alertmanager"])
def test_grafanas_documented_notification_keeps_every_field(route: str) -> None:
    """Before: the Alertmanager route answered 422 `unsupported version, expected "4"`."""
    firing, resolved = _parse(GRAFANA, route)
    assert firing == SignalReceived(
        source="grafana",
        fingerprint="c6eadffa33fcdf37",
        status="firing",
        labels=GRAFANA["alerts"][0]["labels"],
        annotations={**FIRING_EXTRAS, **GRAFANA["alerts"][0]["annotations"]},
        starts_at=datetime(2024, 5, 1, 13, 51, 3, 157076, tzinfo=CEST).astimezone(UTC),
        ends_at=None,
        generator_url="https://grafana.example.com/alerting/grafana/f1cc1a63/view?orgId=1",
    )
    assert resolved.status == "resolved"
    assert resolved.source == "grafana"
    assert resolved.fingerprint == "bc97ff14869b13e3"
    assert resolved.ends_at == datetime(2024, 5, 1, 11, 56, 3, 157076, tzinfo=UTC)
    # the resolved alert's empty URLs, null values and empty valueString are left out
    assert resolved.annotations == {
        "summary": "checkout in eu-1 is busy",
        "grafana_silence_url": GRAFANA["alerts"][1]["silenceURL"],
        **{k: v for k, v in FIRING_EXTRAS.items() if k in GROUP_EXTRAS},
    }


GROUP_EXTRAS = {
    "grafana_receiver",
    "grafana_org_id",
    "grafana_external_url",
    "grafana_group_key",
    "grafana_title",
    "grafana_state",
    "grafana_message",
}


def test_values_are_compact_json_and_strings_stay_as_sent() -> None:
    (firing, _) = _parse(GRAFANA)  # the digits as Grafana printed them: no float round trip
    assert firing.annotations["grafana_values"] == '{"B":91.73943737541908,"C":1}'
    assert firing.annotations["grafana_message"] == MESSAGE
    assert firing.annotations["grafana_org_id"] == "1"


def test_a_field_grafana_adds_later_is_kept_and_the_alerts_own_annotation_wins() -> None:
    document = copy.deepcopy(GRAFANA)
    alert = document["alerts"][0]
    alert["orgId"] = 7  # per alert, in newer versions
    alert["ruleUID"] = "f1cc1a63"
    alert["annotations"]["grafana_state"] = "set by the rule"
    document["truncatedAlerts"] = 3
    (firing, _) = _parse(document)
    assert firing.annotations["grafana_org_id"] == "7"  # the alert's over the group's
    assert firing.annotations["grafana_rule_uid"] == "f1cc1a63"
    assert firing.annotations["grafana_state"] == "set by the rule"
    assert firing.annotations["grafana_truncated_alerts"] == "3"


def test_an_alertmanager_notification_gets_no_grafana_annotations() -> None:
    document = {**copy.deepcopy(GRAFANA), "version": "4"}
    (firing, _) = _parse(document, "alertmanager")
    assert firing.source == "alertmanager"
    assert firing.annotations == GRAFANA["alerts"][0]["annotations"]


def test_an_unknown_version_names_both_senders() -> None:
    with pytest.raises(IngestError) as caught:
        _parse({**GRAFANA, "version": "2"})
    assert (caught.value.status, caught.value.field) == (422, "version")
    assert caught.value.reason == (
        'unsupported version, expected "4" (Alertmanager) or "1" (Grafana Alerting)'
    )


def test_grafanas_fields_are_still_checked_as_alertmanagers() -> None:
    document = copy.deepcopy(GRAFANA)
    document["alerts"][0]["labels"]["zone"] = 1
    with pytest.raises(IngestError) as caught:
        _parse(document)
    assert (caught.value.status, caught.value.field) == (422, "alerts[0].labels.zone")
