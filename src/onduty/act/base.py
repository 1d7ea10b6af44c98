"""The seam between the executor and the things that change the world."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from onduty.commands import StartAction, StartUndo


@dataclass(frozen=True)
class Outcome:
    ok: bool
    output: str = ""
    error: str = ""


class Actuator(Protocol):
    """Runs one kind of action (or a family, by prefix).

    `idempotent`: running the same command twice has the effect of running it once.
    `can_check`: `check(command_id)` can tell whether an earlier call took effect.

    Optionally, `in_flight` (`onduty.act.runs.InFlight`, default `"request"`) says what of a
    run outlives onduty's process when it dies mid-run, so that a restart waits for that run to
    be over before it checks or re-runs the action:

    - `"request"`: the run is a request to another system; it dies with onduty, but the other
      side may still be applying it until the action's timeout has passed since it began, and
      the restart waits that long.
    - `"process"`: the run starts processes that outlive onduty. They must inherit the run's
      lock (`onduty.act.runs.current_run()`: pass its `fd` to them and `note` their `pid` and
      `pgid`), which then stays held while they live; the restart waits for it (at most the
      timeout the run noted) and stops their process group when it is exceeded.
    """

    @property
    def idempotent(self) -> bool: ...

    @property
    def can_check(self) -> bool: ...

    def run(self, command: StartAction | StartUndo) -> Outcome: ...

    def check(self, command_id: str) -> Outcome | None:
        """The outcome of an earlier run of `command_id`, or None when it never ran."""
        ...


class ActuatorRegistry:
    """Actuators by action name; `process.*` style entries match a whole family."""

    def __init__(self) -> None:
        self._exact: dict[str, Actuator] = {}
        self._families: dict[str, Actuator] = {}

    def register(self, action: str, actuator: Actuator) -> None:
        if action.endswith(".*"):
            self._families[action.removesuffix("*")] = actuator
        else:
            self._exact[action] = actuator

    def find(self, action: str) -> Actuator | None:
        if action in self._exact:
            return self._exact[action]
        for prefix, actuator in self._families.items():
            if action.startswith(prefix) or prefix == ".":
                return actuator
        return None
