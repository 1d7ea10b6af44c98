"""The CEL variables a condition sees, built in one place.

The manager builds them for a real incident and proposal (`lifecycle/setup.py`,
`lifecycle/verdicts.py`); the policy linter (`govern/lint/`) and the table tests
(`policytest.py`) build them for representative and given situations with
`condition_variables`. All three go through the functions here, so a condition checked by the
linter or a table test sees exactly what it will see in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from onduty.config import Autonomy, Service
from onduty.correlate.titles import signal_title

COUNTS = ("target_actions_1h", "service_actions_1h", "target_actions_24h", "open_incidents")
"""The `counts` CEL variable: how busy automation has been, from the action history."""

KNOWN_VARIABLES = ("signal", "incident", "action", "target", "service", "now", "counts")
"""What a condition may use."""

OPEN = "map"
"""The type of a field whose keys are free (labels, params)."""

FIELDS: dict[str, dict[str, str]] = {
    "signal": {
        "labels": OPEN,
        "annotations": OPEN,
        "status": "string",
        "source": "string",
        "fingerprint": "string",
    },
    "incident": {
        "id": "string",
        "title": "string",
        "service": "string",
        "signals": "int",
        "flapping": "bool",
    },
    "service": {
        "name": "string",
        "tier": "string",
        "region": "string",
        "autonomy": "string",
        "instances": "int",
    },
    "action": {"name": "string", "runbook": "string", "params": OPEN},
    "target": {"name": "string", "service": "string"},
}
"""The fields of each variable, as `situation_variables` and `proposal_variables` build them
(`now` is a timestamp, `counts` a map of `COUNTS`)."""


def situation_variables(
    *,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    status: str,
    source: str,
    fingerprint: str,
    incident_id: str,
    title: str,
    service_name: str,
    signals: int,
    flapping: bool,
    service: Service | None,
    autonomy: Autonomy | None,
    now: datetime,
) -> dict[str, Any]:
    """What conditions and templates see of an incident: `signal` (the one it is acted on for),
    `incident`, `service` (the configured one named `service_name`, when there is one) and
    `now`. `autonomy` is the service's level as it stands (overrides included)."""
    return {
        "signal": {
            "labels": dict(labels),
            "annotations": dict(annotations),
            "status": status,
            "source": source,
            "fingerprint": fingerprint,
        },
        "incident": {
            "id": incident_id,
            "title": title,
            "service": service_name,
            "signals": signals,
            "flapping": flapping,
        },
        "service": {
            "name": service.name if service else service_name,
            "tier": service.tier if service else "",
            "region": service.region if service else "",
            "autonomy": autonomy.name.lower() if service and autonomy is not None else "",
            "instances": len(service.instances) if service else 0,
        },
        "now": now,
    }


def proposal_variables(
    *,
    action: str,
    runbook: str,
    params: Mapping[str, Any],
    target: str,
    target_service: str,
    counts: Mapping[str, int] | None,
) -> dict[str, Any]:
    """What a guardrail's condition sees of the proposal beside the situation: `action`,
    `target` and `counts` (all zero when not given)."""
    return {
        "action": {"name": action, "runbook": runbook, "params": dict(params)},
        "target": {"name": target, "service": target_service},
        "counts": dict(counts) if counts is not None else dict.fromkeys(COUNTS, 0),
    }


def condition_variables(
    *,
    service: Service | None,
    service_name: str,
    autonomy: Autonomy | None,
    labels: Mapping[str, str],
    incident_id: str,
    action: str,
    runbook: str,
    params: Mapping[str, Any],
    target: str,
    target_service: str,
    now: datetime,
    annotations: Mapping[str, str] | None = None,
    status: str = "firing",
    source: str = "",
    fingerprint: str = "",
    signals: int = 1,
    flapping: bool = False,
    counts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The CEL variables of a proposal for an incident of one signal with these labels (titled
    as the manager titles such an incident): what the linter and the table tests evaluate."""
    notes = dict(annotations or {})
    return {
        **situation_variables(
            labels=labels,
            annotations=notes,
            status=status,
            source=source,
            fingerprint=fingerprint,
            incident_id=incident_id,
            title=signal_title(labels, notes),
            service_name=service_name,
            signals=signals,
            flapping=flapping,
            service=service,
            autonomy=autonomy,
            now=now,
        ),
        **proposal_variables(
            action=action,
            runbook=runbook,
            params=params,
            target=target,
            target_service=target_service,
            counts=counts,
        ),
    }
