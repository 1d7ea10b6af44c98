"""The simulated fleet's actions as an actuator: restart an instance or a whole service, roll
back, scale out, clean up a disk.

The simulated world remembers every command id it applied, so this actuator is idempotent and
can tell after a crash whether an action took effect.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from onduty.act.base import Outcome
from onduty.act.runs import InFlight
from onduty.commands import StartAction, StartUndo

SIM_ACTIONS = (
    "process.restart",
    "deploy.rollback",
    "service.scale_out",
    "service.restart",
    "disk.cleanup",
)


class ActionResultLike(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def output(self) -> str: ...

    @property
    def error(self) -> str: ...


class SimulatedWorld(Protocol):
    def apply(
        self, action: str, target: str, params: dict[str, Any], command_id: str, now: datetime
    ) -> ActionResultLike: ...

    def check(self, command_id: str) -> ActionResultLike | None: ...


class SimActuator:
    idempotent = True
    can_check = True
    in_flight = InFlight.PROCESS
    """The simulated world lives in onduty's own process: a run cut off by a crash is over."""

    def __init__(self, world: SimulatedWorld, now: Callable[[], datetime]) -> None:
        self._world = world
        self._now = now

    def run(self, command: StartAction | StartUndo) -> Outcome:
        result = self._world.apply(
            command.action, command.target, dict(command.params), command.command_id, self._now()
        )
        return Outcome(result.ok, result.output, result.error)

    def check(self, command_id: str) -> Outcome | None:
        result = self._world.check(command_id)
        return None if result is None else Outcome(result.ok, result.output, result.error)
