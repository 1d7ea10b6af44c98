"""Representative contexts: the CEL variables the manager would build for every service and
runbook step of a configuration, which the linter evaluates conditions against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from onduty.config import Config, Runbook, Service, Step
from onduty.expressions import ExpressionError, Template
from onduty.govern.lint.tokens import analyse
from onduty.govern.variables import condition_variables

SAMPLE_NOW = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
"""The `now` of representative contexts when the check is given no current time."""


@dataclass(frozen=True)
class Sample:
    """One representative context: a service, one runbook step, the variables it would see."""

    service: str
    runbook: str
    action: str
    variables: dict[str, Any]


def label_literals(runbook: Runbook) -> dict[str, str]:
    """Labels a runbook's `when` asks for by equality: a sample signal that triggers it."""
    found: dict[str, str] = {}
    for comparison in analyse(runbook.when).comparisons:
        path = comparison.chain.path
        if (
            comparison.operator == "=="
            and len(path) == 3
            and path[:2] == ("signal", "labels")
            and comparison.literal.kind == "string"
        ):
            found.setdefault(path[2], comparison.literal.value)
    return found


def representative_contexts(config: Config, now: datetime | None = None) -> list[Sample]:
    """Every service with every runbook step (a sample signal that would trigger the runbook
    on its first instance), as the manager would build them."""
    moment = now or SAMPLE_NOW
    owner = {s.name: s.name for s in config.services}
    owner.update({i: s.name for s in config.services for i in s.instances})
    services: list[Service | None] = list(config.services) or [None]
    steps: list[tuple[Runbook | None, Step | None]] = [
        (runbook, step) for runbook in config.runbooks for step in runbook.do
    ]
    samples: list[Sample] = []
    for service in services:
        name = service.name if service else ""
        instance = service.instances[0] if service and service.instances else name
        for runbook, step in steps or [(None, None)]:
            labels = {"alertname": "Alert"}
            if runbook is not None:
                labels.update(label_literals(runbook))
            labels.update({"instance": instance, "service": name})
            target = instance
            if step is not None:
                try:
                    target = Template.compile(step.target).render(
                        {"signal": {"labels": labels, "annotations": {}}}
                    )
                except ExpressionError:
                    target = instance
            variables = condition_variables(
                service=service,
                service_name=name,
                autonomy=service.autonomy if service else None,
                labels=labels,
                incident_id=f"inc-sample-{name}",
                action=step.action if step else "",
                runbook=runbook.name if runbook else "",
                params=step.params if step else {},
                target=target,
                target_service=owner.get(target, ""),
                now=moment,
                source="sample",
                fingerprint=f"{labels['alertname']}:{instance}",
            )
            samples.append(
                Sample(
                    name, runbook.name if runbook else "", step.action if step else "", variables
                )
            )
    return samples
