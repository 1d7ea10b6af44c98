"""The CEL variables have one shape, described once: what the linter checks names against
(`FIELDS`, `KNOWN_VARIABLES`) is exactly what the manager, the linter and table tests build."""

from __future__ import annotations

from datetime import UTC, datetime

from onduty.config import Autonomy, Service
from onduty.govern.variables import (
    COUNTS,
    FIELDS,
    KNOWN_VARIABLES,
    condition_variables,
)

NOW = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)


def variables(service: Service | None) -> dict[str, object]:
    return condition_variables(
        service=service,
        service_name="web",
        autonomy=Autonomy.ACT,
        labels={"alertname": "InstanceDown", "instance": "web-1"},
        incident_id="inc-1",
        action="process.restart",
        runbook="restart",
        params={"grace": "10s"},
        target="web-1",
        target_service="web",
        now=NOW,
    )


def test_the_fields_the_linter_knows_are_the_fields_built() -> None:
    service = Service(name="web", tier="critical", instances=["web-1", "web-2"])
    for built in (variables(service), variables(None)):
        assert set(built) == set(KNOWN_VARIABLES)
        for name, fields in FIELDS.items():
            value = built[name]
            assert isinstance(value, dict)
            assert set(value) == set(fields), name
        assert built["counts"] == dict.fromkeys(COUNTS, 0)


def test_a_configured_service_is_described_and_an_unknown_one_is_blank() -> None:
    service = Service(name="web", tier="critical", region="eu", instances=["web-1", "web-2"])
    known = variables(service)["service"]
    assert known == {
        "name": "web",
        "tier": "critical",
        "region": "eu",
        "autonomy": "act",
        "instances": 2,
    }
    unknown = variables(None)["service"]
    assert unknown == {"name": "web", "tier": "", "region": "", "autonomy": "", "instances": 0}


def test_a_single_signal_incident_is_titled_as_the_manager_titles_it() -> None:
    incident = variables(None)["incident"]
    assert isinstance(incident, dict)
    assert incident["title"] == "InstanceDown on web-1"
