"""A stand-in for `onduty serve` that the crash tests SIGKILL mid-action: it builds one actuator,
starts one action through the executor under run locks, and prints `started` once the action
is handed to its actuator.

    python -m tests.act.standin '{"runs": DIR, "spec": {...}, "command": {...}}'

`factory` ("module:name") builds the actuator from the spec instead of the built-in kinds;
`env` resolves the spec's `${ENV:...}` references; `kill_grace` sets a shell actuator's.

`Standins.crash` runs it and kills it; the `Crashed` it returns settles the command the way a
restarted onduty does.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from onduty.act.base import Actuator, ActuatorRegistry
from onduty.act.executor import Executor
from onduty.act.plugins import build_registry
from onduty.act.runs import RunLocks
from onduty.act.shell import ShellActuator
from onduty.act.specs import ShellSpec
from onduty.commands import CheckOutcome, StartAction
from onduty.events import Payload

ROOT = Path(__file__).resolve().parents[2]


def registry_of(options: dict[str, Any]) -> ActuatorRegistry:
    if options.get("factory"):
        module, name = options["factory"].split(":")
        actuator: Actuator = getattr(importlib.import_module(module), name)(options["spec"])
        registry = ActuatorRegistry()
        registry.register(options["spec"]["action"], actuator)
        return registry
    if options.get("kill_grace") is not None:
        spec = ShellSpec.model_validate(options["spec"])
        registry = ActuatorRegistry()
        registry.register(spec.action, ShellActuator(spec, kill_grace=options["kill_grace"]))
        return registry
    return build_registry([options["spec"]], env=options.get("env") or {})


@dataclass
class Crashed:
    """What a killed stand-in left behind."""

    locks: RunLocks
    options: dict[str, Any]
    killed_at: float

    @property
    def start(self) -> StartAction:
        return StartAction(**self.options["command"])

    def reconcile(self) -> list[Payload]:
        """A restarted executor settles the command (inline); returns what it recorded."""
        recorded: list[Payload] = []
        executor = Executor(
            registry_of(self.options), lambda body, stream: recorded.append(body), runs=self.locks
        )
        executor.reconcile(CheckOutcome(self.start))
        return recorded


@dataclass
class Standins:
    directory: Path
    groups: list[int] = field(default_factory=list)

    def crash(self, options: dict[str, Any], after: float) -> Crashed:
        """Run the stand-in, SIGKILL it `after` seconds into its action."""
        options = {"runs": str(self.directory / "runs"), **options}
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.act.standin", orjson.dumps(options).decode()],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if line.strip() == "started":
                    break
            else:
                raise AssertionError("the stand-in ended before its action started")
            time.sleep(after)
            os.kill(process.pid, signal.SIGKILL)
            killed_at = time.monotonic()
        finally:
            process.kill()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()
        locks = RunLocks(options["runs"])
        pgid = locks.record(options["command"]["command_id"]).get("pgid")
        if isinstance(pgid, int):
            self.groups.append(pgid)
        return Crashed(locks, options, killed_at)


def main() -> None:
    options = orjson.loads(sys.argv[1])
    outcomes: list[str] = []

    def record(body: Payload, stream: str) -> None:
        outcomes.append(type(body).__name__)
        print(type(body).__name__, flush=True)

    def record_many(items: list[tuple[Payload, str]]) -> None:
        for body, stream in items:
            record(body, stream)
        print("started", flush=True)

    executor = Executor(
        registry_of(options), record, record_many=record_many, runs=RunLocks(options["runs"])
    )
    executor.start_many([StartAction(**options["command"])])


if __name__ == "__main__":
    main()
