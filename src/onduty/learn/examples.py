"""Training examples from a log: for each action that started, the incident's features when it
was proposed, the action, the other actions proposed for the incident, and how it ended."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from onduty.events import Event
from onduty.think.features import FeatureTracker, recurs
from onduty.think.learner import IncidentFeatures, Outcome


@dataclass
class Example:
    command_id: str
    incident_id: str
    action: str
    target: str
    features: IncidentFeatures
    proposed_seq: int
    proposed_at: datetime
    candidates: list[str] = field(default_factory=list)
    """The actions proposed for the incident up to this one, in runbook order."""
    started: bool = False
    outcome: Outcome | None = None


@dataclass
class Window:
    """The events the examples were drawn from."""

    first_seq: int | None = None
    last_seq: int | None = None
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    events: int = 0

    def see(self, event: Event) -> None:
        if self.first_seq is None:
            self.first_seq, self.first_ts = event.seq, event.ts
        self.last_seq, self.last_ts = event.seq, event.ts
        self.events += 1


RECURRENCE_WINDOW = timedelta(hours=1)
"""As `learning.recurrence_window` by default: a verified action whose alert fires again on its
target within this long did not fix the cause."""


def examples(
    events: Iterable[Event],
    since: datetime | None = None,
    until: datetime | None = None,
    window: Window | None = None,
    recurrence_window: timedelta = RECURRENCE_WINDOW,
) -> list[Example]:
    """The examples with an outcome, in proposal order. Only proposals in [since, until) count;
    events before `since` still inform the features (a restart an hour earlier). Outcomes are
    judged as the learning agent judges them live: a fix whose alert comes back on its target
    within `recurrence_window` is a failure (`Outcome.RECURRED`)."""
    tracker = FeatureTracker()
    found: dict[str, Example] = {}
    proposed: dict[str, list[str]] = {}
    verified: dict[str, datetime] = {}  # command id → when it verified, while it may recur
    for event in events:
        if until is not None and event.ts >= until:
            break
        tracker.observe(event)
        inside = since is None or event.ts >= since
        if inside and window is not None:
            window.see(event)
        data = event.data
        command = str(data.get("command_id", ""))
        if event.type == "IncidentOpened":
            _recurrences(event, tracker, found, verified, recurrence_window)
        if event.type == "ActionProposed" and inside:
            incident, action = str(data["incident_id"]), str(data["action"])
            offered = proposed.setdefault(incident, [])
            if action not in offered:
                offered.append(action)
            found[command] = Example(
                command_id=command,
                incident_id=incident,
                action=action,
                target=str(data["target"]),
                features=tracker.features(incident, str(data["target"]), event.ts),
                proposed_seq=event.seq,
                proposed_at=event.ts,
                candidates=list(offered),
            )
        elif event.type == "ActionStarted" and command in found:
            found[command].started = True
        elif event.type == "UndoStarted":
            undone = found.get(str(data.get("of_command_id")))
            if undone is not None and undone.started:
                undone.outcome = Outcome.UNDONE
        elif command in found and found[command].started and found[command].outcome is None:
            outcome = {
                "VerificationPassed": Outcome.VERIFIED,
                "VerificationFailed": Outcome.VERIFY_FAILED,
                "ActionFailed": Outcome.ACTION_FAILED,
            }.get(event.type)
            if outcome is not None:
                found[command].outcome = outcome
                if outcome is Outcome.VERIFIED:
                    verified[command] = event.ts
    ended = [example for example in found.values() if example.outcome is not None]
    return sorted(ended, key=lambda example: example.proposed_seq)


def _recurrences(
    opened: Event,
    tracker: FeatureTracker,
    found: dict[str, Example],
    verified: dict[str, datetime],
    recurrence_window: timedelta,
) -> None:
    """A new incident of the same alert on a verified action's target, within the window, makes
    that action a failure; verified actions past the window are final."""
    incident = str(opened.data.get("incident_id"))
    labels = tracker.labels.get(str(opened.data.get("fingerprint")), {})
    alertname = tracker.incident_alert.get(incident, "unknown")
    places = {labels.get("instance"), labels.get("service"), opened.data.get("service")}
    for command, at in list(verified.items()):
        example = found[command]
        if opened.ts - at > recurrence_window:
            del verified[command]
        elif recurs(example.features.alertname, example.target, alertname, places):
            example.outcome = Outcome.RECURRED
            del verified[command]
