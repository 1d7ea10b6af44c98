"""Small builders for core tests: a config, and inputs with a virtual clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from onduty.commands import StartAction, StartUndo
from onduty.config import Config, parse_config
from onduty.events import (
    ActionStarted,
    Event,
    Origin,
    Payload,
    PolicyActivated,
    SignalReceived,
    make_event,
)
from onduty.manager import Decision, Manager
from onduty.state import State

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def config(**overrides: Any) -> Config:
    document: dict[str, Any] = {
        "services": [
            {"name": "web", "autonomy": "act", "instances": ["web-1", "web-2", "web-3"]},
            {"name": "db", "tier": "critical", "autonomy": "approve", "instances": ["db-1"]},
            {"name": "batch", "autonomy": "suggest", "instances": ["batch-1"]},
        ],
        "correlation": {"group_by": ["service", "alertname", "instance"]},
        "runbooks": [
            {
                "name": "restart-crashed-instance",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
                "verify": {"signal_resolved_within": "2m"},
                "undo": [{"action": "traffic.drain", "target": "{{ signal.labels.instance }}"}],
            }
        ],
        "policy": {
            "guardrails": [
                {
                    "name": "restart-budget",
                    "rate": {"action": "process.restart", "max": 2, "per": "1h"},
                },
                {"name": "one-at-a-time", "concurrent": {"max": 1, "scope": "service"}},
            ],
            "approvals": {"timeout": "10m"},
        },
    }
    # One page per escalation unless a test is about tiers and repeats.
    document["escalation"] = {"default": [{"notify": ["on-call"]}], "repeat_last": 0}
    document.update(overrides)
    return parse_config(document)


class Driver:
    """Feeds inputs to a manager the way the runtime would, and keeps the resulting log."""

    def __init__(self, cfg: Config | None = None) -> None:
        self.manager = Manager()
        self.log: list[Event] = []
        self.undos: list[tuple[int, StartUndo]] = []
        """Every undo the core asked for, with the length of the log once it was decided."""
        self._ids = itertools.count(1)
        self.now = T0
        cfg = cfg or config()
        self.feed(PolicyActivated(version=cfg.version, config=cfg.policy_document()))

    def feed(self, body: Payload, *, after: float = 0.0, actor: str = "onduty") -> Decision:
        self.now += timedelta(seconds=after)
        event = make_event(
            body, id=f"in-{next(self._ids)}", ts=self.now, stream="test", actor=actor
        )
        decision = self.manager.handle(event)
        self.log.append(event)
        self.log.extend(decision.events)
        self.undos.extend((len(self.log), c) for c in decision.commands if isinstance(c, StartUndo))
        return decision

    def start(self, command: StartAction) -> Decision:
        """The actuator reports that it started `command`."""
        return self.feed(
            ActionStarted(
                command_id=command.command_id,
                incident_id=command.incident_id,
                action=command.action,
                target=command.target,
            )
        )

    def signal(
        self, instance: str, status: str = "firing", alertname: str = "InstanceDown", **kw: float
    ) -> Decision:
        service = instance.rsplit("-", 1)[0]
        labels = {"alertname": alertname, "instance": instance, "service": service}
        return self.feed(
            SignalReceived(
                source="test", fingerprint=f"{alertname}:{instance}", status=status, labels=labels
            ),
            **kw,
        )


def types(decision: Decision) -> list[str]:
    return [event.type for event in decision.events]


def assert_replays(driver: Driver) -> None:
    """The inputs alone, to a fresh manager, make the same decisions; and the state folded from
    the whole log (and through a snapshot) equals the one that decided."""
    fresh = Manager()
    replayed: list[Event] = []
    for event in driver.log:
        if event.origin == Origin.INPUT:
            replayed.extend(fresh.handle(event).events)
    decided = [e for e in driver.log if e.origin == Origin.DECISION]
    assert [(e.type, e.data) for e in replayed] == [(e.type, e.data) for e in decided]
    folded = Manager()
    for event in driver.log:
        folded.apply(event)
    assert folded.state.encode() == driver.manager.state.encode()
    again = State.from_snapshot(driver.manager.state.to_snapshot())
    assert again.encode() == driver.manager.state.encode()
