"""A scenario's simulated fleet feeding a running `onduty serve`, in accelerated real time.

The service runs on a `ScaledClock` (60 times faster, say), so its timers, group waits and
verification windows keep their meaning; the fleet is advanced on the same clock and its alerts
take the same durable path as pushed ones. The simulated on-call acknowledges pages and fixes
what it is handed; approvals wait for the person watching the console — that is what the live
demo is for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from onduty.act import ActuatorRegistry
from onduty.act.sim import SIM_ACTIONS, SimActuator
from onduty.config import Config
from onduty.events import Event, SignalReceived
from onduty.runtime import Input, ScaledClock
from onduty.sim.oncall import OnCall
from onduty.sim.scenario import Scenario
from onduty.sim.world import ActionResult, World

logger = logging.getLogger("onduty")


def live_scenario(scenario: Scenario) -> Scenario:
    """The scenario as served live: the person at the console is one of the approvers. Where a
    second one is needed (the two-person rule), a simulated colleague adds theirs later; an
    approval nobody at the console answers expires into the safe default."""
    colleague = scenario.on_call.approvers[-1:]
    on_call = scenario.on_call.model_copy(update={"approvers": colleague})
    return scenario.model_copy(update={"on_call": on_call})


class LiveSimulation:
    def __init__(self, config: Config, scenario: Scenario, speed: float) -> None:
        self.scenario = live_scenario(scenario)
        self.world = World(config, self.scenario)
        self.clock = ScaledClock(self.world.start, speed)
        self.on_call = OnCall(self.scenario, self.world.start, self.scenario.eval_interval)
        self._lock = threading.Lock()  # the world is advanced here and acted on by workers
        self.actuators = ActuatorRegistry()
        actuator = SimActuator(_Locked(self.world, self._lock), self.clock.now)
        for action in SIM_ACTIONS:
            self.actuators.register(action, actuator)

    def observe(self, event: Event) -> None:
        with self._lock:  # the simulation's thread reads what the people know
            self.on_call.feed(event)

    def run(self, submit: Callable[[list[Input]], object], stop: threading.Event) -> None:
        """Advance the fleet step by step until the scenario ends or `stop` is set, handing its
        signals and the humans' answers to `submit` (the core loop's `offer`)."""
        moment = self.world.start
        while moment <= self.world.end and not stop.wait(self.clock.real_seconds_until(moment)):
            with self._lock:
                signals = self.world.advance(moment)
                answers, fixes = self.on_call.due(moment)
                for fix in fixes:
                    self.world.apply(fix.action, fix.target, {}, fix.command_id, moment)
                # the simulated colleague answers at the same desk as the API's callers
                given = [answer for item in answers if (answer := self.on_call.give(item))]
            inputs = [
                Input(SignalReceived(**s.model_dump()), stream=f"signal:{s.fingerprint}")
                for s in signals
            ]
            inputs += given
            if inputs and submit(inputs) is None:
                logger.warning("the simulated fleet's signals were refused (queue full)")
            moment += self.world.eval_interval
        logger.info("the simulated scenario %s has ended", self.scenario.name)


class _Locked:
    """The world, acted on under the simulation's lock (actuators run on worker threads)."""

    def __init__(self, world: World, lock: threading.Lock) -> None:
        self._world, self._lock = world, lock

    def apply(
        self, action: str, target: str, params: dict[str, Any], command_id: str, now: datetime
    ) -> ActionResult:
        with self._lock:
            return self._world.apply(action, target, params, command_id, max(now, self._world.now))

    def check(self, command_id: str) -> ActionResult | None:
        with self._lock:
            return self._world.check(command_id)
