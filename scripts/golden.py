"""Regenerate the golden decision logs in tests/fixtures/golden/.

    python scripts/golden.py                 # all of them
    python scripts/golden.py demo recovery   # some of them

tests/test_golden.py replays each stored log with today's code and fails when any decision
differs. When a change is meant to alter decisions, run `make golden`, review the diff of the
fixtures, and say why in the commit.

- demo.jsonl: the full log of `onduty demo --quiet` (simulated time and ids: byte-identical
  when nothing changed).
- recovery.jsonl: built on a virtual clock with stand-in actuators: a two-person approval, a
  verification that fails and whose undo runs, and a crash mid-action whose outcome the restart
  cannot know (`ActionOutcomeUnknown`). Byte-identical when nothing changed.
- alertmanager.jsonl: the log of tests/integration/test_alertmanager.py, where a real
  Prometheus Alertmanager delivers to `onduty serve` (wall-clock times and random ids: it
  changes on every regeneration; it needs the Alertmanager binary, which
  scripts/ensure_alertmanager.sh installs).

Each file holds one event per line: the log's canonical JSON of the envelope with its `hash`,
so the hash chain can be checked from the file alone.
"""

from __future__ import annotations

import argparse
import os  # noqa: TID251 - a script, not the core
import subprocess  # noqa: TID251 - a script, not the core
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from onduty.act import ActuatorRegistry, Outcome
from onduty.commands import StartAction, StartUndo
from onduty.config import Config, parse_config
from onduty.events import ApprovalGranted, Event, SignalReceived, canonical_body
from onduty.log import open_log
from onduty.runtime import Runtime, VirtualClock, counter_ids

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def encode(event: Event) -> bytes:
    """One line: the canonical body the log hashed, plus the hash."""
    fields = orjson.loads(canonical_body(event))
    fields["hash"] = event.hash
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def write(name: str, events: Iterable[Event]) -> Path:
    path = GOLDEN / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(encode(event) + b"\n" for event in events))
    return path


def export(store: Path, name: str) -> Path:
    log = open_log(str(store))
    try:
        return write(name, list(log.read()))
    finally:
        log.close()


# ------------------------------------------------------------------------------- the demo


def demo() -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "demo.db"
        subprocess.run(
            [sys.executable, "-m", "onduty", "demo", "--quiet", "--store", str(store)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return export(store, "demo")


# -------------------------------------------------- approvals, undo and a crash, virtual time

RECOVERY_CONFIG = {
    "services": [
        {"name": "web", "autonomy": "act", "instances": ["web-1", "web-2"]},
        {"name": "db", "tier": "critical", "autonomy": "approve", "instances": ["db-1"]},
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
        "approvals": {"timeout": "10m", "required": 2, "roles": ["approver"]},
    },
    "escalation": {"default": [{"notify": ["sre-primary"]}, {"notify": ["sre-lead"]}]},
}


@dataclass
class StandIn:
    """A stand-in actuator: every run succeeds; it cannot tell afterwards whether a run took
    effect and is not idempotent, so an action cut off by a crash has an unknown outcome."""

    idempotent: bool = False
    can_check: bool = False
    runs: list[str] = field(default_factory=list)

    def run(self, command: StartAction | StartUndo) -> Outcome:
        self.runs.append(command.command_id)
        return Outcome(True, output=f"{command.action} {command.target}: done")

    def check(self, command_id: str) -> Outcome | None:
        return None


def _registry(actuator: StandIn) -> ActuatorRegistry:
    actuators = ActuatorRegistry()
    actuators.register("process.*", actuator)
    actuators.register("traffic.*", actuator)
    return actuators


def _down(instance: str, status: str = "firing") -> SignalReceived:
    service = instance.rsplit("-", 1)[0]
    return SignalReceived(
        source="golden",
        fingerprint=f"down:{instance}",
        status=status,  # type: ignore[arg-type]
        labels={"alertname": "InstanceDown", "instance": instance, "service": service},
    )


def _advance(runtime: Runtime, clock: VirtualClock, to: datetime) -> None:
    while (due := runtime.next_timer()) is not None and due <= to:
        clock.advance_to(due)
        runtime.fire_due_timers(due)
    clock.advance_to(to)


def _never_runs(actuator: object, work: Callable[[], None]) -> None:
    """The process dies after `ActionStarted` is durable and before the actuator runs."""


def recovery() -> Path:
    cfg: Config = parse_config(RECOVERY_CONFIG)
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "recovery.db"
        clock = VirtualClock(T0)
        actuator = StandIn()

        log = open_log(str(store))
        runtime, _ = Runtime.open(
            log, clock, _registry(actuator), config=cfg, new_id=counter_ids("run1", 1)
        )
        # db-1 is critical: the restart waits for two approvers; alice twice counts once.
        decision = runtime.submit(_down("db-1"))
        approval_id = str(decision.events[-1].data["approval_id"])
        for actor, after in (("alice", 30), ("alice", 10), ("bob", 20)):
            _advance(runtime, clock, clock.now() + timedelta(seconds=after))
            runtime.submit(ApprovalGranted(approval_id=approval_id, role="approver"), actor=actor)
        # The restart ran but db-1 stays down: verification fails after 2m, the undo runs.
        _advance(runtime, clock, clock.now() + timedelta(minutes=3))
        runtime.submit(_down("db-1", "resolved"))
        # web-1 goes down and then web-2: each restart is within policy (act autonomy).
        _advance(runtime, clock, clock.now() + timedelta(minutes=1))
        runtime.submit(_down("web-1"))
        _advance(runtime, clock, clock.now() + timedelta(seconds=40))
        runtime.submit(_down("web-1", "resolved"))
        _advance(runtime, clock, clock.now() + timedelta(minutes=3))
        log.close()

        # A second process: web-2's restart is durable as started, then the process dies.
        log = open_log(str(store))
        runtime, _ = Runtime.open(
            log,
            clock,
            _registry(actuator),
            config=cfg,
            new_id=counter_ids("run2", 1),
            spawn=_never_runs,
        )
        runtime.submit(_down("web-2"))
        log.close()

        # The restart: the actuator cannot say whether the restart took effect, and running
        # it again is not safe, so the outcome is recorded as unknown and escalated.
        clock.advance_to(clock.now() + timedelta(seconds=15))
        log = open_log(str(store))
        runtime, report = Runtime.open(
            log, clock, _registry(actuator), config=cfg, new_id=counter_ids("run3", 1)
        )
        assert len(report.in_doubt) == 1, report.in_doubt
        _advance(runtime, clock, clock.now() + timedelta(minutes=1))
        runtime.submit(_down("web-2", "resolved"))
        _advance(runtime, clock, clock.now() + timedelta(minutes=15))
        log.close()
        return export(store, "recovery")


# ----------------------------------------------------------------- a real Alertmanager


def alertmanager() -> Path:
    """Run the real-Alertmanager end-to-end test once and keep its store's log."""
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "alertmanager.db"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/integration/test_alertmanager.py",
            ],
            check=True,
            cwd=ROOT,
            env={**os.environ, "ONDUTY_SAVE_LOG": str(store)},
        )
        return export(store, "alertmanager")


GENERATORS: dict[str, Callable[[], Path]] = {
    "demo": demo,
    "recovery": recovery,
    "alertmanager": alertmanager,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(GENERATORS)} (default: all)")
    names = parser.parse_args(argv).names or list(GENERATORS)
    unknown = [name for name in names if name not in GENERATORS]
    if unknown:
        parser.error(f"unknown golden log {unknown[0]!r}; choose from {', '.join(GENERATORS)}")
    for name in names:
        path = GENERATORS[name]()
        count = len(path.read_bytes().splitlines())
        print(f"{path.relative_to(ROOT)}: {count} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
