"""The learner's features, folded from events: what was known of an incident when an action was
proposed for it. Pure, so training and a later learning agent read incidents the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from onduty.events import Event
from onduty.think.learner import IncidentFeatures, restart_bucket

DEPLOY_WINDOW = timedelta(hours=1)
"""A deploy-ish signal for a service this long before a proposal counts as a recent deploy."""
DEPLOY_WORDS = ("deploy", "release", "rollout")


def deployish(labels: dict[str, Any], annotations: dict[str, Any]) -> bool:
    """A signal that speaks of a deploy: in its alert name, a label or annotation name, or a
    label value."""
    texts = [*labels, *annotations, *(str(value) for value in labels.values())]
    return any(word in text.lower() for text in texts for word in DEPLOY_WORDS)


@dataclass
class FeatureTracker:
    """Fold events in log order with `observe`; `features(incident, target, at)` then says what
    was known of the incident at that time."""

    deploy_window: timedelta = DEPLOY_WINDOW
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # fingerprint → labels
    incident_alert: dict[str, str] = field(default_factory=dict)
    incident_service: dict[str, str] = field(default_factory=dict)
    last_deploy: dict[str, datetime] = field(default_factory=dict)  # service → time
    last_restart: dict[str, datetime] = field(default_factory=dict)  # target → time
    restarting: dict[str, str] = field(default_factory=dict)  # command id → target

    def observe(self, event: Event) -> None:
        data = event.data
        if event.type == "SignalReceived":
            labels = {str(k): str(v) for k, v in dict(data.get("labels") or {}).items()}
            self.labels[str(data.get("fingerprint"))] = labels
            service = labels.get("service", "")
            if deployish(labels, dict(data.get("annotations") or {})):
                self.last_deploy[service] = event.ts
        elif event.type == "IncidentOpened":
            incident = str(data.get("incident_id"))
            labels = self.labels.get(str(data.get("fingerprint")), {})
            group = dict(data.get("group_key") or {})
            self.incident_alert[incident] = str(
                group.get("alertname") or labels.get("alertname") or "unknown"
            )
            self.incident_service[incident] = str(
                data.get("service") or group.get("service") or labels.get("service") or ""
            )
        elif event.type == "ActionStarted" and "restart" in str(data.get("action")):
            self.restarting[str(data.get("command_id"))] = str(data.get("target"))
        elif event.type == "ActionSucceeded":
            target = self.restarting.pop(str(data.get("command_id")), None)
            if target is not None:
                self.last_restart[target] = event.ts

    def features(self, incident: str, target: str, at: datetime) -> IncidentFeatures:
        service = self.incident_service.get(incident, "")
        deployed = self.last_deploy.get(service)
        restarted = self.last_restart.get(target)
        return IncidentFeatures(
            alertname=self.incident_alert.get(incident, "unknown"),
            service=service,
            recent_deploy=deployed is not None and at - deployed <= self.deploy_window,
            since_restart=restart_bucket(
                None if restarted is None else (at - restarted).total_seconds() / 3600
            ),
        )
