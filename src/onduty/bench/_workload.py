"""Shared helpers of the benchmark workloads: a realistic history, timing and formatting.

The history is what the runtime would have logged for a fleet of a few hundred instances: a
steady set of chronic alerts re-sent by the alert source, acute faults that fire, get an
incident, a runbook action, an outcome and a verification, flapping alerts, approvals, pages,
acknowledgements and timer ticks. It is produced by the real core (`Manager.handle`), fed the
way the runtime feeds it, in virtual time, from a seeded random source, so it is the same on
every run.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from onduty.commands import Command, Notify, ScheduleTimer, StartAction, StartUndo
from onduty.config import Config, parse_config
from onduty.events import (
    Acknowledged,
    ActionFailed,
    ActionStarted,
    ActionSucceeded,
    ApprovalGranted,
    Event,
    Payload,
    PolicyActivated,
    SignalReceived,
    Tick,
    UndoFinished,
    UndoStarted,
    make_event,
)
from onduty.log.base import Snapshot
from onduty.log.sqlite import SQLiteEventLog
from onduty.manager import Manager

Row = dict[str, str | float]

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
STEP = timedelta(seconds=15)

# service -> (tier, autonomy, instances)
FLEET: dict[str, tuple[str, str, int]] = {
    "web": ("high", "act", 120),
    "api": ("high", "act", 80),
    "cache": ("standard", "act", 40),
    "db": ("critical", "approve", 20),
    "batch": ("low", "suggest", 30),
    "queue": ("standard", "approve", 10),
}
# Alerts a runbook can fix (and by what), and alerts only a human can.
ACUTE = ("InstanceDown", "HighMemoryUsage", "HighErrorRate")
CHRONIC = ("DiskSpaceLow", "HighLatency")


def fleet_services() -> list[dict[str, Any]]:
    """The `services` section of a config for FLEET: 300 instances, regions alternating."""
    return [
        {
            "name": name,
            "tier": tier,
            "region": "eu-west" if index % 2 == 0 else "us-east",
            "autonomy": autonomy,
            "instances": [f"{name}-{i}" for i in range(1, count + 1)],
        }
        for index, (name, (tier, autonomy, count)) in enumerate(FLEET.items())
    ]


def bench_config() -> Config:
    """Six services, 300 instances, four runbooks, four guardrails."""
    return parse_config(bench_config_document())


def bench_config_document() -> dict[str, Any]:
    """The document of `bench_config`, as a config file would hold it."""
    return {
        "services": fleet_services(),
        "correlation": {
            "group_by": ["service", "alertname", "instance"],
            "group_wait": "30s",
            "flap_threshold": 6,
            "flap_window": "20m",
        },
        "runbooks": [
            {
                "name": "restart-crashed-instance",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [
                    {
                        "action": "process.restart",
                        "target": "{{ signal.labels.instance }}",
                        "timeout": "60s",
                    }
                ],
                "verify": {"signal_resolved_within": "3m"},
                "undo": [{"action": "traffic.drain", "target": "{{ signal.labels.instance }}"}],
            },
            {
                "name": "restart-leaking-instance",
                "when": 'signal.labels.alertname == "HighMemoryUsage"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
                "verify": {"signal_resolved_within": "4m"},
            },
            {
                "name": "rollback-bad-deploy",
                "when": 'signal.labels.alertname == "HighErrorRate"',
                "do": [
                    {
                        "action": "deploy.rollback",
                        "target": "{{ signal.labels.service }}",
                        "timeout": "2m",
                    }
                ],
                "verify": {"signal_resolved_within": "5m"},
            },
            {
                "name": "drain-and-restart",
                "when": 'signal.labels.alertname == "InstanceDown" && '
                'signal.labels.service == "cache"',
                "priority": 10,
                "do": [
                    {"action": "traffic.drain", "target": "{{ signal.labels.instance }}"},
                    {"action": "process.restart", "target": "{{ signal.labels.instance }}"},
                ],
                "verify": {"signal_resolved_within": "3m"},
            },
        ],
        "policy": {
            "guardrails": [
                {
                    "name": "restart-budget",
                    "rate": {"action": "process.restart", "max": 3, "per": "1h"},
                },
                {
                    "name": "rollback-budget",
                    "rate": {
                        "action": "deploy.rollback",
                        "max": 2,
                        "per": "6h",
                        "key": "service",
                    },
                },
                {"name": "a-few-at-a-time", "concurrent": {"max": 2, "scope": "service"}},
                {
                    "name": "critical-needs-a-human",
                    "when": 'service.tier == "critical"',
                    "effect": "require_approval",
                },
            ],
            "approvals": {"timeout": "10m", "notify": ["sre-primary"]},
        },
        "escalation": {"default": [{"notify": ["sre-primary"]}]},
    }


@dataclass
class _Alert:
    alertname: str
    instance: str
    service: str
    ends: datetime | None  # resolves by itself then (None: chronic, never resolves)
    flap_until: datetime | None = None
    firing: bool = True
    next_resend: datetime = T0
    starts_at: datetime = T0

    @property
    def fingerprint(self) -> str:
        return f"{self.alertname}:{self.instance}"


@dataclass(order=True)
class _Due:
    at: datetime
    order: int
    kind: str = field(compare=False)
    body: Payload | None = field(compare=False, default=None)
    stream: str = field(compare=False, default="")
    actor: str = field(compare=False, default="onduty")
    key: str = field(compare=False, default="")


class HistoryDriver:
    """Feeds the core the way the runtime and a fleet would; yields each input's events.

    `groups()` yields, per input, [input, *decisions] exactly as the runtime appends them.
    After a group is yielded, `manager` holds the state right after that group.
    """

    def __init__(self, seed: int = 7, *, chronic: int = 40, fault_every: float = 90.0) -> None:
        self.config = bench_config()
        self.manager = Manager()
        self.rng = random.Random(seed)
        self.now = T0
        self._ids = itertools.count(1)
        self._order = itertools.count()
        self._due: list[_Due] = []
        self._timers: dict[str, datetime] = {}
        self._alerts: dict[str, _Alert] = {}
        self._paged: set[str] = set()
        self._instances = [
            (service, f"{service}-{i}")
            for service, (_tier, _autonomy, count) in FLEET.items()
            for i in range(1, count + 1)
        ]
        self._chronic = chronic
        self._fault_every = fault_every

    # ------------------------------------------------------------------ the feed

    def groups(self) -> Iterator[list[Event]]:
        yield self._feed(
            PolicyActivated(version=self.config.version, config=self.config.policy_document()),
            "policy",
        )
        for _ in range(self._chronic):
            self._new_alert(chronic=True)
        while True:
            step_end = self.now + STEP
            while self._due and self._due[0].at <= step_end:
                due = heapq.heappop(self._due)
                group = self._deliver(due)
                if group is not None:
                    yield group
            self.now = step_end
            if self.rng.random() < STEP.total_seconds() / self._fault_every:
                self._new_alert(chronic=False)
            for alert in list(self._alerts.values()):
                group = self._alert_step(alert)
                if group is not None:
                    yield group

    # ------------------------------------------------------------------ inputs

    def _feed(self, body: Payload, stream: str, actor: str = "onduty") -> list[Event]:
        event = make_event(
            body, id=f"ev-{next(self._ids)}", ts=self.now, stream=stream, actor=actor
        )
        decision = self.manager.handle(event)
        for command in decision.commands:
            self._command(command)
        return [event, *decision.events]

    def _schedule(self, after: float, kind: str, body: Payload | None = None, **kw: str) -> None:
        at = self.now + timedelta(seconds=after)
        heapq.heappush(self._due, _Due(at, next(self._order), kind, body, **kw))

    def _deliver(self, due: _Due) -> list[Event] | None:
        self.now = max(self.now, due.at)
        if due.kind == "timer":
            if self._timers.get(due.key) != due.at:
                return None  # re-armed for another time, or already fired
            del self._timers[due.key]
            return self._feed(Tick(timer_id=due.key), "timers")
        if due.kind == "fix":
            alert = self._alerts.get(due.key)
            if alert is not None and alert.firing and alert.flap_until is None:
                alert.ends = self.now
            return None
        assert due.body is not None
        return self._feed(due.body, due.stream, due.actor)

    def _command(self, command: Command) -> None:
        if isinstance(command, ScheduleTimer):
            if self._timers.get(command.timer_id) != command.due:
                self._timers[command.timer_id] = command.due
                heapq.heappush(
                    self._due, _Due(command.due, next(self._order), "timer", key=command.timer_id)
                )
        elif isinstance(command, StartAction):
            self._start(command)
        elif isinstance(command, StartUndo):
            started = UndoStarted(
                command_id=command.command_id,
                of_command_id=command.of_command_id,
                action=command.action,
                target=command.target,
            )
            self._schedule(1, "input", started, stream=command.incident_id)
            finished = UndoFinished(
                command_id=command.command_id, of_command_id=command.of_command_id, ok=True
            )
            self._schedule(8, "input", finished, stream=command.incident_id)
        elif isinstance(command, Notify):
            if command.kind == "approval" and command.approval_id:
                if self.rng.random() < 0.75:  # the rest expire
                    granted = ApprovalGranted(approval_id=command.approval_id)
                    self._schedule(
                        self.rng.uniform(60, 400),
                        "input",
                        granted,
                        stream="approvals",
                        actor="sre-primary",
                    )
            elif command.kind == "escalation" and command.incident_id not in self._paged:
                self._paged.add(command.incident_id)
                ack = Acknowledged(incident_id=command.incident_id)
                self._schedule(
                    self.rng.uniform(120, 600),
                    "input",
                    ack,
                    stream=command.incident_id,
                    actor="sre-primary",
                )

    def _start(self, command: StartAction) -> None:
        started = ActionStarted(
            command_id=command.command_id,
            incident_id=command.incident_id,
            action=command.action,
            target=command.target,
        )
        self._schedule(1, "input", started, stream=command.incident_id)
        took = self.rng.uniform(5, 40)
        if self.rng.random() < 0.08:
            failed = ActionFailed(command_id=command.command_id, error="exit status 1")
            self._schedule(took, "input", failed, stream=command.incident_id)
            return
        ok = ActionSucceeded(command_id=command.command_id, output=f"{command.action} ok")
        self._schedule(took, "input", ok, stream=command.incident_id)
        incident = self.manager.state.incidents.get(command.incident_id)
        if incident is not None and self.rng.random() < 0.85:
            for fingerprint in incident.fingerprints:
                self._schedule(took + self.rng.uniform(20, 120), "fix", key=fingerprint)

    # ------------------------------------------------------------------ the fleet

    def _new_alert(self, *, chronic: bool) -> None:
        service, instance = self.rng.choice(self._instances)
        alertname = self.rng.choice(CHRONIC if chronic else ACUTE)
        fingerprint = f"{alertname}:{instance}"
        if fingerprint in self._alerts:
            return
        lasts = None if chronic else self.now + timedelta(minutes=self.rng.uniform(4, 45))
        alert = _Alert(
            alertname,
            instance,
            service,
            ends=lasts,
            next_resend=self.now,
            starts_at=self.now,
        )
        if not chronic and self.rng.random() < 0.06:
            alert.flap_until = self.now + timedelta(minutes=self.rng.uniform(15, 30))
        self._alerts[fingerprint] = alert

    def _signal(self, alert: _Alert) -> SignalReceived:
        return SignalReceived(
            source="alertmanager",
            fingerprint=alert.fingerprint,
            status="firing" if alert.firing else "resolved",
            labels={
                "alertname": alert.alertname,
                "instance": alert.instance,
                "service": alert.service,
                "severity": "critical" if alert.alertname == "InstanceDown" else "warning",
                "job": alert.service,
            },
            annotations={
                "summary": f"{alert.alertname} on {alert.instance}",
                "runbook_url": f"https://runbooks.example/{alert.alertname}",
            },
            starts_at=alert.starts_at,
            ends_at=None if alert.firing else self.now,
            generator_url=f"https://prometheus.example/graph?g0.expr={alert.alertname}",
        )

    def _alert_step(self, alert: _Alert) -> list[Event] | None:
        changed = False
        if alert.flap_until is not None:
            if self.now >= alert.flap_until:
                alert.flap_until = None
                alert.ends = self.now + timedelta(minutes=2)
                changed = not alert.firing
                alert.firing = True
            elif self.rng.random() < 0.25:
                alert.firing = not alert.firing
                changed = True
        elif alert.ends is not None and self.now >= alert.ends:
            alert.firing = False
            changed = True
        if not changed and self.now < alert.next_resend:
            return None
        alert.next_resend = self.now + timedelta(seconds=self.rng.uniform(45, 75))
        group = self._feed(self._signal(alert), f"signal:{alert.fingerprint}")
        if not alert.firing and alert.flap_until is None:
            del self._alerts[alert.fingerprint]
        return group


def append_all(
    log: SQLiteEventLog,
    groups: Iterator[list[Event]],
    total: int,
    *,
    batch: int = 1000,
    snapshot: Callable[[], dict[str, Any]] | None = None,
    snapshot_every: int = 1000,
    ready: Callable[[], bool] = lambda: True,
    appended: Callable[[int], None] = lambda seq: None,
) -> int:
    """Append whole groups in batches of about `batch` events until `total` are in the log.

    With `snapshot`, a snapshot is saved whenever `snapshot_every` events were appended since
    the last one, as the runtime does (the state must be the one right after the batch). Once
    `total` is reached, appending goes on group by group until `ready()` holds.
    """
    pending: list[Event] = []
    seq, last_snapshot = log.head()[0], log.head()[0]
    for group in groups:
        pending.extend(group)
        last = seq + len(pending) >= total and ready()
        if len(pending) >= batch or last:
            placed = log.append(pending)[-1]
            seq, pending = placed.seq, []
            appended(seq)
            if snapshot is not None and seq - last_snapshot >= snapshot_every:
                log.save_snapshot(Snapshot.bound(seq, placed.hash, snapshot()))
                last_snapshot = seq
            if last:
                break
    return seq


# --------------------------------------------------------------------------- measuring


def fold(events: Iterable[Event]) -> Manager:
    """A fresh manager with `events` applied in order, as a restart without a snapshot does."""
    manager = Manager()
    apply = manager.apply
    for event in events:
        apply(event)
    return manager


def best_of(repeats: int, run: Callable[[], object]) -> float:
    """The best wall time of `repeats` runs of `run`, in seconds (garbage collected first)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def file_size(path: Path) -> int:
    """The log's size on disk: the database file plus any write-ahead log left beside it."""
    return sum(
        candidate.stat().st_size
        for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
        if candidate.exists()
    )


def progress(message: str) -> None:
    """Say what a long workload is doing now, on stderr (the figures go to stdout)."""
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def per_second(value: float, what: str = "events") -> str:
    return f"{value:,.0f} {what}/s"


def seconds(value: float) -> str:
    return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:,.2f} s"


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:,.1f} MB"


def ratio(value: float) -> str:
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"


def row(name: str, figure: str, value: float, unit: str, peer: str, ratio_: float) -> Row:
    """A figure beside its peer measured in the same run, and their ratio."""
    return {
        "name": name,
        "figure": figure,
        "value": value,
        "unit": unit,
        "peer": peer,
        "ratio": ratio(ratio_),
    }
