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
