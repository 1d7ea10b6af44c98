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


UNTRAINED = "untrained"
"""The model id of the prior alone: no model activated (or rolled back past the first)."""


def restarts(action: str) -> bool:
    """Whether an action restarts its target (what `since_restart` counts)."""
    return "restart" in action


def features_at(
    alertname: str,
    service: str,
    deployed: datetime | None,
    restarted: datetime | None,
    at: datetime,
    deploy_window: timedelta = DEPLOY_WINDOW,
) -> IncidentFeatures:
    """An incident's features at `at`, from the last deploy marker of its service and the last
    restart of the target: the one rule the learning agent and training share."""
    return IncidentFeatures(
        alertname=alertname,
        service=service,
        recent_deploy=deployed is not None and at - deployed <= deploy_window,
        since_restart=restart_bucket(
            None if restarted is None else (at - restarted).total_seconds() / 3600
        ),
    )


def recurs(alertname: str, target: str, opened_alert: str, places: set[str | None]) -> bool:
    """Whether an incident of `opened_alert` about `places` (its instance, its service) is the
    alert a verified action on `target` answered, come back."""
    return alertname == opened_alert and target in places


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
        elif event.type == "ActionStarted" and restarts(str(data.get("action"))):
            self.restarting[str(data.get("command_id"))] = str(data.get("target"))
        elif event.type == "ActionSucceeded":
            target = self.restarting.pop(str(data.get("command_id")), None)
            if target is not None:
                self.last_restart[target] = event.ts

    def features(self, incident: str, target: str, at: datetime) -> IncidentFeatures:
        service = self.incident_service.get(incident, "")
        return features_at(
            self.incident_alert.get(incident, "unknown"),
            service,
            self.last_deploy.get(service),
            self.last_restart.get(target),
            at,
            self.deploy_window,
        )
