"""A scenario's simulated fleet feeding a running `onduty serve`, in accelerated real time: a
drill that real people take part in.

The service runs on a `ScaledClock` (60 times faster, say), so its timers, group waits and
verification windows keep their meaning; the fleet is advanced on the same clock and its alerts
take the same durable path as pushed ones. People act through the same doors as in production:
they approve and deny in the console or over the API, acknowledge pages, and — a drill's own
door — fix the simulated fleet themselves (`LiveSimulation.fix`: restart an instance, roll a
service back, ...), recorded with their name. A simulated on-call colleague keeps doing what it
does in `onduty sim` (approving, acknowledging, fixing what it was paged for), but whoever acts
first wins: it does not repeat a fix a person already made.

The drill ends when the scenario's duration has elapsed or someone ends it (`end`); it is then
scored with the same scorecard as `onduty sim` (`onduty.sim.scorecard.score`), with each
person's response times beside it (`response_times`): from a page or an approval request to
their acknowledgement, answer or fix.
"""

from __future__ import annotations

import logging
import statistics
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from onduty.act import ActuatorRegistry
from onduty.act.sim import SIM_ACTIONS, SimActuator
from onduty.config import Config
from onduty.events import Event, SignalReceived
from onduty.runtime import Input, ScaledClock
from onduty.sim.faults import SELF
from onduty.sim.fleet import Fleet, Instance
from onduty.sim.oncall import HUMAN, OnCall
from onduty.sim.scenario import Scenario
from onduty.sim.scorecard import Scorecard, score
from onduty.sim.world import ACTIONS, INSTANCE_ACTIONS, ActionResult, World

logger = logging.getLogger("onduty")

# What the console calls each action on its buttons; an action not named here shows its name.
ACTION_LABELS = {
    "process.restart": "Restart",
    "deploy.rollback": "Roll back",
    "service.scale_out": "Scale out",
    "service.restart": "Restart all",
    "disk.cleanup": "Clean disk",
}
SCENARIO_END = "the scenario's end"
"""Who ended a drill that ran its whole duration."""

Kind = Literal["approve", "deny", "acknowledge", "fix"]


def action_scope(action: str) -> Literal["instance", "service"]:
    """What an action of the simulated world is done to: one instance, or a whole service."""
    return "instance" if action in INSTANCE_ACTIONS else "service"


def live_scenario(scenario: Scenario) -> Scenario:
    """The scenario as served live: the person at the console is one of the approvers. Where a
    second one is needed (the two-person rule), a simulated colleague adds theirs later; an
    approval nobody at the console answers expires into the safe default."""
    colleague = scenario.on_call.approvers[-1:]
    on_call = scenario.on_call.model_copy(update={"approvers": colleague})
    return scenario.model_copy(update={"on_call": on_call})


# ---------------------------------------------------------------------------- what people did


@dataclass(frozen=True)
class Fix:
    """A fix made in the simulated fleet by a person (or by the simulated colleague)."""

    at: datetime
    person: str
    action: str
    target: str
    command_id: str
    ok: bool
    detail: str
    """What the fleet answered: the action's output, or why it could not be done."""
    simulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "person": self.person,
            "action": self.action,
            "target": self.target,
            "command_id": self.command_id,
            "ok": self.ok,
            "detail": self.detail,
            "simulated": self.simulated,
        }


@dataclass(frozen=True)
class Refused:
    """Why a drill did not take a fix (or an end): an HTTP status, the reason, the field."""

    status: int
    reason: str
    field: str | None = None


@dataclass(frozen=True)
class Response:
    """One thing a person did, and how long after they were asked: `asked_at` is the page, the
    approval request or (a fix) the page of the incident about its target; None when nothing
    asked for it."""

    person: str
    kind: Kind
    subject: str
    asked_at: datetime | None
    answered_at: datetime

    @property
    def seconds(self) -> float | None:
        if self.asked_at is None:
            return None
        return max(0.0, (self.answered_at - self.asked_at).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "asked_at": self.asked_at.isoformat() if self.asked_at else None,
            "answered_at": self.answered_at.isoformat(),
            "seconds": self.seconds,
        }


@dataclass
class PersonTimes:
    """A person's responses in a drill, with the summary the scorecard shows."""

    person: str
    simulated: bool
    responses: list[Response] = field(default_factory=list)

    def timed(self, kind: Kind | None = None) -> list[float]:
        return [
            seconds
            for response in self.responses
            if (kind is None or response.kind == kind) and (seconds := response.seconds) is not None
        ]

    def to_dict(self) -> dict[str, Any]:
        every = self.timed()
        kinds: tuple[Kind, ...] = ("acknowledge", "approve", "deny", "fix")
        return {
            "person": self.person,
            "simulated": self.simulated,
            "responses": [response.to_dict() for response in self.responses],
            "counts": {kind: sum(1 for r in self.responses if r.kind == kind) for kind in kinds},
            "median_s": statistics.median(every) if every else None,
            "max_s": max(every) if every else None,
            "by_kind_median_s": {
                kind: statistics.median(times) for kind in kinds if (times := self.timed(kind))
            },
        }


def response_times(
    events: Iterable[Event],
    fixes: Iterable[Fix],
    simulated: Iterable[str],
    service_of: Callable[[str], str | None],
) -> list[PersonTimes]:
    """Each person's responses, from the log and the fixes: an approval answered (from its
    request), a page acknowledged (from the incident's first page, or its opening when it was
    never paged), a fix made (from the first page of an incident open about its target or its
    service at the time, else that incident's opening; None when no incident was open about
    it). onduty's own events are not a person's. `simulated` names the simulated colleagues."""
    labels_of: dict[str, Mapping[str, str]] = {}
    opened: dict[str, tuple[datetime, Mapping[str, str]]] = {}
    paged: dict[str, datetime] = {}
    resolved: dict[str, datetime] = {}
    requested: dict[str, datetime] = {}
    responses: list[Response] = []
    for event in events:
        data = event.data
        if event.type == "SignalReceived":
            labels_of[data["fingerprint"]] = data.get("labels", {})
        elif event.type == "IncidentOpened":
            opened[data["incident_id"]] = (event.ts, labels_of.get(data["fingerprint"], {}))
        elif event.type == "Escalated":
            paged.setdefault(data["incident_id"], event.ts)
        elif event.type == "IncidentResolved":
            resolved.setdefault(data["incident_id"], event.ts)
        elif event.type == "ApprovalRequested":
            requested.setdefault(data["approval_id"], event.ts)
        elif event.type in ("ApprovalGranted", "ApprovalDenied") and event.actor != "onduty":
            approval = data["approval_id"]
            kind: Kind = "approve" if event.type == "ApprovalGranted" else "deny"
            responses.append(
                Response(event.actor, kind, approval, requested.get(approval), event.ts)
            )
        elif event.type == "Acknowledged" and event.actor != "onduty":
            incident = data["incident_id"]
            asked = paged.get(incident) or (opened[incident][0] if incident in opened else None)
            responses.append(Response(event.actor, "acknowledge", incident, asked, event.ts))
    for fix in fixes:
        if not fix.ok:
            continue
        service = service_of(fix.target)
        about = [
            incident
            for incident, (at, labels) in opened.items()
            if at <= fix.at
            and resolved.get(incident, fix.at) >= fix.at
            and (
                fix.target in (labels.get("instance"), labels.get("service"))
                or (service is not None and labels.get("service") == service)
            )
        ]
        pages = [paged[incident] for incident in about if paged.get(incident, fix.at) < fix.at]
        asked = min(pages) if pages else min((opened[i][0] for i in about), default=None)
        responses.append(Response(fix.person, "fix", f"{fix.action} {fix.target}", asked, fix.at))
    colleagues = set(simulated)
    people: dict[str, PersonTimes] = {}
    for response in sorted(responses, key=lambda r: r.answered_at):
        person = people.setdefault(
            response.person, PersonTimes(response.person, response.person in colleagues)
        )
        person.responses.append(response)
    return sorted(people.values(), key=lambda p: (p.simulated, p.person))


# ---------------------------------------------------------------------------- the scorecard


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# ---------------------------------------------------------------------------- the drill


class LiveSimulation:
    """A drill: the simulated fleet, its clock, the colleague, and what people did in it."""

    def __init__(self, config: Config, scenario: Scenario, speed: float) -> None:
        self.scenario = live_scenario(scenario)
        self.world = World(config, self.scenario)
        self.speed = speed
        self.clock = ScaledClock(self.world.start, speed)
        self.on_call = OnCall(self.scenario, self.world.start, self.scenario.eval_interval)
        self._lock = threading.Lock()  # the world is advanced here and acted on by workers
        self._stop = threading.Event()
        self._events: Callable[[], Iterable[Event]] = lambda: ()
        self.fixes: list[Fix] = []
        self.ended_at: datetime | None = None
        self.ended_by: str | None = None
        self.scorecard: Scorecard | None = None
        self.people: list[PersonTimes] = []
        self.actuators = ActuatorRegistry()
        actuator = SimActuator(_Locked(self), self.clock.now)
        for action in SIM_ACTIONS:
            self.actuators.register(action, actuator)

    # ------------------------------------------------------------------ wiring

    def attach(self, events: Callable[[], Iterable[Event]]) -> None:
        """Where the drill's events are read back from when it is scored (the service's log
        from the drill's start)."""
        self._events = events

    def observe(self, event: Event) -> None:
        with self._lock:  # the simulation's thread reads what the people know
            self.on_call.feed(event)

    @property
    def colleagues(self) -> list[str]:
        """The simulated people's names."""
        return list(self.scenario.on_call.approvers)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def run(
        self, submit: Callable[[list[Input]], object], stop: threading.Event | None = None
    ) -> None:
        """Advance the fleet step by step until the scenario ends, the drill is ended, or
        `stop` is set, handing its signals and the colleague's answers to `submit` (the core
        loop's `offer`). A run that reaches the scenario's end ends the drill."""
        moment = self.world.start
        while moment <= self.world.end:
            wait = self.clock.real_seconds_until(moment)
            if self._stop.wait(wait) or (stop is not None and stop.is_set()):
                return
            with self._lock:
                if self.ended:
                    return
                # a person's fix may have moved the world a little past this step
                signals = self.world.advance(max(moment, self.world.now))
                answers, fixes = self.on_call.due(moment)
                for fix in fixes:
                    self._colleague_fix(fix.action, fix.target, fix.command_id, moment)
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
        self.end(None)

    def _colleague_fix(self, action: str, target: str, command_id: str, at: datetime) -> None:
        """The simulated colleague's fix, unless a person made it since the page (under the
        lock)."""
        fix_after = self.scenario.on_call.fix_after or timedelta(0)
        since = at - fix_after - self.world.eval_interval
        for made in self.fixes:
            same = (made.action, made.target) == (action, target)
            if made.ok and not made.simulated and same and made.at >= since:
                logger.info("drill: %s already did %s %s", made.person, action, target)
                return
        result = self.world.apply(action, target, {}, command_id, max(at, self.world.now))
        person = self.colleagues[0] if self.colleagues else "the on-call"
        self.fixes.append(
            Fix(self.world.now, person, action, target, command_id, result.ok,
                result.output if result.ok else result.error, simulated=True)
        )  # fmt: skip

    # ------------------------------------------------------------------ people's doors

    def actions(self) -> list[dict[str, str]]:
        """The fixes the world supports, with what each is done to."""
        return [
            {
                "action": action,
                "scope": action_scope(action),
                "label": ACTION_LABELS.get(action, action),
            }
            for action in ACTIONS
        ]

    def fix(self, person: str, action: str, target: str) -> Fix | Refused:
        """`person` applies `action` to `target` in the simulated fleet, now. Refused (422,
        naming the field) for an action the world does not support or a target it does not
        have (or of the wrong kind), 409 once the drill has ended or when the fleet cannot do
        it (nothing to roll back to)."""
        if action not in ACTIONS:
            return Refused(
                422,
                f"unknown action {action!r}; the drill's fleet supports " + ", ".join(ACTIONS),
                "action",
            )
        with self._lock:
            if self.ended:
                return Refused(409, "the drill has ended: the fleet no longer changes")
            fleet = self.world.fleet
            scope = action_scope(action)
            known = fleet.instances if scope == "instance" else fleet.services
            if target not in known:
                other = fleet.services if scope == "instance" else fleet.instances
                if target in other:
                    kinds = ("a service", "an instance")
                    if scope == "service":
                        kinds = kinds[::-1]
                    reason = f"{target!r} is {kinds[0]}; {action} needs {kinds[1]}"
                else:
                    reason = (
                        f"no {scope} {target!r} in the drill's fleet (known: "
                        + ", ".join(known)
                        + ")"
                    )
                return Refused(422, reason, "target")
            command_id = f"{HUMAN}-drill-{len(self.fixes) + 1:03d}"
            now = max(self.clock.now(), self.world.now)
            result = self.world.apply(action, target, {}, command_id, now)
            made = Fix(now, person, action, target, command_id, result.ok,
                       result.output if result.ok else result.error)  # fmt: skip
            self.fixes.append(made)
        if not result.ok:
            logger.info("drill: %s could not %s %s: %s", person, action, target, result.error)
            return Refused(409, result.error, "target")
        logger.info("drill: %s did %s %s: %s", person, action, target, result.output)
        return made

    def end(self, person: str | None) -> bool:
        """End the drill (`person` None: the scenario ran its whole duration) and score it.
        False when it had already ended."""
        with self._lock:
            if self.ended:
                return False
            self.ended_at = min(max(self.clock.now(), self.world.now), self.world.end)
            self.ended_by = person or SCENARIO_END
            self._stop.set()
        # from here on the world no longer changes: neither the run, nor a fix, nor an
        # actuator moves it (so the log is read without holding up the core's subscribers)
        events = list(self._events())
        card = score(events, self.world.faults, self.world.actions, self.scenario)
        people = response_times(events, self.fixes, self.colleagues, self.world.fleet.service_of)
        with self._lock:
            self.scorecard, self.people = card, people
        logger.info("the drill %s was ended by %s", self.scenario.name, self.ended_by)
        return True

    # ------------------------------------------------------------------ what the page shows

    def status(self) -> dict[str, Any]:
        """The drill as plain JSON data: its clock, the fleet as people see it (health and the
        alerts firing, never the faults), the fixes so far and, once ended, the scorecard with
        each person's response times and the truth about the faults."""
        with self._lock:
            now = self.ended_at or min(max(self.clock.now(), self.world.now), self.world.end)
            fleet = self.world.fleet
            services = [_service_json(fleet, state.name, now) for state in fleet.services.values()]
            firing = [dict(labels) for labels in self.world.firing()]
            fixes = [fix.to_dict() for fix in self.fixes]
            card = self.scorecard
            people = [person.to_dict() for person in self.people]
            faults = self.world.faults if card is not None else []
            verdicts = {a.command_id: a for a in self.world.actions}
        span = self.world.end - self.world.start
        document: dict[str, Any] = {
            "scenario": self.scenario.name,
            "status": "ended" if self.ended_at is not None else "running",
            "speed": self.speed,
            "started_at": self.world.start.isoformat(),
            "ends_at": self.world.end.isoformat(),
            "now": now.isoformat(),
            "progress": round((now - self.world.start) / span, 4) if span else 1.0,
            "ended_at": _iso(self.ended_at),
            "ended_by": self.ended_by,
            "colleagues": self.colleagues,
            "actions": self.actions(),
            "fleet": services,
            "firing": firing,
            "fixes": fixes,
            "scorecard": None,
        }
        if card is not None:
            by_command = {fix.command_id: fix.person for fix in self.fixes}
            for fix in document["fixes"]:
                judged = verdicts.get(fix["command_id"])
                fix["verdict"] = getattr(judged, "verdict", None)
                fix["reason"] = getattr(judged, "reason", "")
            document["scorecard"] = {
                **card.to_dict(),
                "people": people,
                "truth": [
                    {
                        "id": record.id,
                        "kind": record.kind,
                        "target": record.target,
                        "cause": getattr(record, "cause", ""),
                        "right_fix": getattr(record, "right_fix", None),
                        "injected_at": record.injected_at.isoformat(),
                        "cleared_at": _iso(record.cleared_at),
                        "cleared_by": _healer(record.cleared_by, by_command),
                    }
                    for record in faults
                ],
            }
        return document


def _healer(cleared_by: str | None, people: Mapping[str, str]) -> str | None:
    """Who healed a fault: the person, "itself", or "onduty" (with its command id)."""
    if cleared_by is None:
        return None
    if cleared_by in people:
        return people[cleared_by]
    if cleared_by == SELF:
        return "itself"
    return f"onduty ({cleared_by})"


def _service_json(fleet: Fleet, name: str, now: datetime) -> dict[str, Any]:
    state = fleet.services[name]
    return {
        "name": state.name,
        "tier": state.tier,
        "region": state.region,
        "version": state.version,
        "previous_version": state.previous_version,
        "instances": [_instance_json(fleet.instances[each], now) for each in state.instances],
    }


def _instance_json(instance: Instance, now: datetime) -> dict[str, Any]:
    if instance.crashed:
        health = "down"
    elif instance.booting_until is not None and instance.booting_until > now:
        health = "booting"
    else:
        health = "up" if instance.up else "down"
    return {
        "name": instance.name,
        "state": health,
        "memory_pct": round(instance.memory_pct, 1),
        "latency_ms": round(instance.latency_ms),
        "error_rate": round(instance.error_rate, 4),
        "restarts": instance.restarts,
    }


class _Locked:
    """The world, acted on under the simulation's lock (actuators run on worker threads); once
    the drill has ended the fleet no longer changes."""

    def __init__(self, simulation: LiveSimulation) -> None:
        self._simulation = simulation

    def apply(
        self, action: str, target: str, params: dict[str, Any], command_id: str, now: datetime
    ) -> ActionResult:
        simulation = self._simulation
        with simulation._lock:
            if simulation.ended:
                return ActionResult(ok=False, error="the drill has ended: the fleet is gone")
            world = simulation.world
            return world.apply(action, target, params, command_id, max(now, world.now))

    def check(self, command_id: str) -> ActionResult | None:
        with self._simulation._lock:
            return self._simulation.world.check(command_id)
