"""The simulated world: a fleet, its faults and its alerting, in virtual time.

Nothing here reads a clock or sleeps. Time moves only when the caller says so (`advance`,
`apply`), and in fixed evaluation steps of `eval_interval` from `start`: each step advances the
health model, overlays the active faults and evaluates the alert rules. Faults are injected at
their exact times and actions take effect at the time they are applied, in between steps. All
randomness comes from one `random.Random(seed)`, drawn a fixed number of times per step, so the
same seed and the same actions at the same times give the same signals, byte for byte, however
finely the caller slices time.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from onduty.config import Config, ConfigError
from onduty.events import Signal
from onduty.sim.alerts import AlertEvaluator, fingerprint
from onduty.sim.faults import (
    ANY,
    FAULT_KINDS,
    INSTANCE_KINDS,
    REGION_KINDS,
    SIGNAL_KINDS,
    Delivered,
    Fault,
    FaultRecord,
)
from onduty.sim.fleet import Fleet, FleetError, bump_patch
from onduty.sim.scenario import Scenario, scenario_problems

ACTIONS = (
    "deploy.rollback",
    "process.restart",
    "service.scale_out",
    "service.restart",
    "disk.cleanup",
)
INSTANCE_ACTIONS = frozenset({"process.restart", "disk.cleanup"})
AppliedRecord = tuple[datetime, str, str, Mapping[str, Any], str]
DEPLOY_ALERT = "DeploymentFinished"
"""The alert name of a release's announcement (`Scenario.announce_deploys`)."""
ROUTINE = "routine-deploy"
"""Who made a routine deploy (`Scenario.routine_deploys`), as the fleet records it."""


@dataclass(frozen=True)
class ActionResult:
    """What an actuator reports: success with its output, or failure with the reason."""

    ok: bool
    output: str = ""
    error: str = ""


Verdict = Literal["right", "wrong", "harmful"]

# A service is degraded (its minutes count as SLO minutes lost) above these.
SLO_ERROR_RATIO = 0.05
SLO_P99_MS = 1000.0
_NONE = timedelta(0)


@dataclass(frozen=True)
class AppliedAction:
    """An action that reached the fleet, judged against the truth when it ran.

    `verdict`: "right" when it is the fix of a fault active on its target; "harmful" when its
    target was healthy (up, no active fault touching it) or it left its service with fewer
    than half of its instances up; "wrong" otherwise (no fault it fixes, e.g. a restart for a
    bad deploy). `reason` says why in one sentence. `target_was_healthy`: the target was up and
    no active fault touched it when the action ran."""

    command_id: str
    action: str
    target: str
    at: datetime
    target_was_healthy: bool
    verdict: Verdict = "wrong"
    reason: str = ""


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("world time must carry a time zone (UTC)")
    return value.astimezone(UTC)


class World:
    def __init__(self, config: Config, scenario: Scenario) -> None:
        problems = scenario_problems(scenario)
        if problems:
            raise ConfigError(f"scenario {scenario.name}", problems)
        self.config = config
        self.scenario = scenario
        self.start: datetime = scenario.start_at
        self.end: datetime = self.start + scenario.duration
        self.eval_interval: timedelta = scenario.eval_interval
        self.resend_interval: timedelta = scenario.resend_interval
        self.rng = random.Random(scenario.seed)
        self.fleet = Fleet(
            scenario.apply_fleet(config).services,
            self.rng,
            regions=scenario.instance_regions(),
            depends_on=scenario.dependencies(),
        )
        self.evaluator = AlertEvaluator(resend_interval=self.resend_interval)
        self.actions: list[AppliedAction] = []
        self._slo_lost: dict[str, timedelta] = {name: timedelta(0) for name in self.fleet.services}
        self._malformed: list[dict[str, Any]] = []
        # Signals a signal fault holds back: (due, sequence, what), a heap.
        self._delayed: list[tuple[datetime, int, Delivered]] = []
        self._sequence = 0
        self._steady_before: dict[str, float | None] | None = None
        self._plan = self._plan_faults()
        self._planned = 0
        self._deploys = self._plan_deploys()
        self._deployed = 0
        self._injected: list[Fault] = []
        # The injected faults that may still act at the next step, in injection order: one
        # healed at or before a step has nothing left to do at any later one.
        self._live: list[Fault] = []
        self._results: dict[str, ActionResult] = {}
        self._outbox: list[Signal] = []
        self._now = self.start
        self._next_eval = self.start

    # ------------------------------------------------------------------ time

    @property
    def now(self) -> datetime:
        return self._now

    def advance(self, now: datetime) -> list[Signal]:
        """Move the world to `now` and return the signals emitted on the way, oldest first.
        `now` must not go backwards."""
        self._move_to(now)
        emitted, self._outbox = self._outbox, []
        return emitted

    # ------------------------------------------------------------------ actuators

    def apply(
        self,
        action: str,
        target: str,
        params: Mapping[str, Any],
        command_id: str,
        now: datetime,
    ) -> ActionResult:
        """Run an action at `now`. A command id already applied returns its first result and
        changes nothing. Signals that moving to `now` emits wait for the next `advance`."""
        done = self._results.get(command_id)
        if done is not None:
            return done
        self._move_to(now)
        result = self._execute(action, target, command_id, self._now)
        self._results[command_id] = result
        return result

    def check(self, command_id: str) -> ActionResult | None:
        """The outcome of an earlier `apply` of this command id, None if it never ran."""
        return self._results.get(command_id)

    # ------------------------------------------------------------------ truth

    @property
    def faults(self) -> list[FaultRecord]:
        """The faults injected so far, in injection order, with how each was healed."""
        for fault in self._injected:
            fault.refresh(self.fleet, self._now)
        return [fault.record() for fault in self._injected]

    @property
    def wrong_actions(self) -> list[AppliedAction]:
        return [applied for applied in self.actions if applied.target_was_healthy]

    def healthy(self, target: str, now: datetime) -> bool:
        """Whether an instance is up with no active fault touching it, or a service has no
        active fault, at `now`. Raises KeyError for a target the fleet does not have."""
        now = _utc(now)
        instance = self.fleet.instances.get(target)
        if instance is not None:
            if not instance.is_up(now):
                return False
        elif target not in self.fleet.services:
            raise KeyError(f"unknown target {target!r}")
        return not any(
            fault.affects(self.fleet, target) and fault.is_active(self.fleet, now)
            for fault in self._injected
        )

    def slo_minutes_lost(self) -> dict[str, float]:
        """Per service, the minutes of virtual time it was degraded so far: error ratio above
        5%, p99 above 1000 ms, or fewer than half of its instances up, counted per evaluation
        step (each degraded step counts `eval_interval`)."""
        return {name: lost.total_seconds() / 60.0 for name, lost in sorted(self._slo_lost.items())}

    def steady_metrics(self) -> dict[str, float | None]:
        """The fleet's state as of the last evaluation, for steady-state hypotheses: alerts
        firing, instances down, services degraded (see `slo_minutes_lost`)."""
        return {
            "firing_alerts": float(len(self.evaluator.firing())),
            "instances_down": float(sum(1 for i in self.fleet.instances.values() if not i.up)),
            "degraded_services": float(sum(1 for s in self.fleet.services if self._degraded(s))),
        }

    def steady_before(self) -> dict[str, float | None]:
        """`steady_metrics` just before the first fault was injected (now, if none was)."""
        return (
            dict(self._steady_before) if self._steady_before is not None else self.steady_metrics()
        )

    def take_malformed(self) -> list[dict[str, Any]]:
        """Alertmanager-webhook-shaped payloads a signal fault broke since the last call; the
        alerting pipeline would have delivered them, and a receiver must refuse them."""
        taken, self._malformed = self._malformed, []
        return taken

    def firing(self) -> list[dict[str, str]]:
        """Labels of the alerts firing as of the last evaluation."""
        return self.evaluator.firing()

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data, to compare two worlds."""
        return {
            "now": self._now.isoformat(),
            "next_eval": self._next_eval.isoformat(),
            "planned": self._planned,
            "fleet": self.fleet.snapshot(),
            "faults": [
                {
                    **vars(record),
                    "injected_at": record.injected_at.isoformat(),
                    "cleared_at": record.cleared_at.isoformat() if record.cleared_at else None,
                }
                for record in self.faults
            ],
            "actions": [
                {**vars(applied), "at": applied.at.isoformat()} for applied in self.actions
            ],
            "results": {key: vars(result) for key, result in self._results.items()},
            "alerts": self.evaluator.snapshot(),
            "delayed": [
                [due.isoformat(), number, what.fingerprint if isinstance(what, Signal) else what]
                for due, number, what in sorted(self._delayed, key=lambda item: item[:2])
            ],
            "slo_minutes_lost": self.slo_minutes_lost(),
            "rng": hashlib.sha256(repr(self.rng.getstate()).encode()).hexdigest()[:16],
            # only with routine deploys, so every other world's snapshot stays as it was
            **({"deployed": self._deployed} if self._deploys else {}),
        }

    # ------------------------------------------------------------------ recovery

    @classmethod
    def rebuild(
        cls,
        config: Config,
        scenario: Scenario,
        applied: Iterable[AppliedRecord],
        until: datetime,
    ) -> World:
        """Re-simulate from the start to `until`, applying the recorded actions
        (at, action, target, params, command_id) at their times; the signals emitted on the
        way are discarded. Firing alerts are re-sent within `resend_interval` afterwards."""
        world = cls(config, scenario)
        until = _utc(until)
        for at, action, target, params, command_id in applied:
            if _utc(at) > until:
                raise ValueError(f"action {command_id} at {at.isoformat()} is after `until`")
            world.apply(action, target, params, command_id, at)
        world._move_to(until)
        world._outbox.clear()
        return world

    # ------------------------------------------------------------------ internals

    def _plan_faults(self) -> list[Fault]:
        problems: list[str] = []
        plan: list[tuple[timedelta, int, Fault]] = []
        for index, spec in enumerate(self.scenario.planned_faults(self.config)):
            where = f"faults[{index}].target"
            target = spec.target if isinstance(spec.target, str) else ""
            at = spec.at if spec.at is not None else timedelta(0)
            service = self._service_of_target(spec.kind, target)
            if service is None:
                problems.append(f"{where}: {self._wrong_target(spec.kind, target)}")
                continue
            if spec.kind == "dependency_outage" and not self.fleet.callers_of(service):
                problems.append(
                    f"{where}: no service depends on {service!r}, so its outage would raise no "
                    "alert (declare `depends_on` in the scenario's fleet)"
                )
                continue
            fault = FAULT_KINDS[spec.kind](
                f"F{index + 1:02d}",
                target,
                service,
                self.start + at,
                duration=spec.duration,
                period=spec.period,
                params=spec.params(),
                seed=self.scenario.seed,
            )
            plan.append((at, index, fault))
        if problems:
            raise ConfigError(f"scenario {self.scenario.name}", problems)
        return [fault for _, _, fault in sorted(plan, key=lambda item: (item[0], item[1]))]

    def _service_of_target(self, kind: str, target: str) -> str | None:
        """The service a fault's target belongs to ("" for a region or every signal); None
        when the target is not what the kind needs."""
        if kind in INSTANCE_KINDS:
            instance = self.fleet.instances.get(target)
            return None if instance is None else instance.service
        if kind in REGION_KINDS:
            return "" if self.fleet.instances_in(target) else None
        if kind in SIGNAL_KINDS and target == ANY:
            return ""
        return target if target in self.fleet.services else None

    def _wrong_target(self, kind: str, target: str) -> str:
        """Why a fault's target is not what its kind needs: a name of the other kind, or none."""
        if kind in REGION_KINDS:
            regions = sorted({i.region for i in self.fleet.instances.values()})
            return f"no instance runs in region {target!r} (regions: {', '.join(regions)})"
        if kind in SIGNAL_KINDS:
            return f"{target!r} is neither `any` nor a service of the config"
        if kind in INSTANCE_KINDS:
            if target in self.fleet.services:
                return f"{target!r} is a service; {kind} needs one of its instances"
            return f"no instance {target!r} in the config"
        if target in self.fleet.instances:
            return f"{target!r} is an instance; {kind} needs a service"
        return f"no service {target!r} in the config"

    def _move_to(self, now: datetime) -> None:
        now = _utc(now)
        if now < self._now:
            raise ValueError(
                f"time cannot go backwards: the world is at {self._now.isoformat()}, "
                f"asked for {now.isoformat()}"
            )
        while True:
            due = self._plan[self._planned] if self._planned < len(self._plan) else None
            routine = self._deploys[self._deployed] if self._deployed < len(self._deploys) else None
            if due is not None and due.at <= now and due.at <= self._next_eval:
                self._inject(due)
            elif routine is not None and routine[0] <= now and routine[0] <= self._next_eval:
                self._routine_deploy(*routine)
            elif self._next_eval <= now:
                self._step(self._next_eval)
                self._next_eval += self.eval_interval
            else:
                break
        self._now = now

    def _inject(self, fault: Fault) -> None:
        if self._steady_before is None:
            self._steady_before = self.steady_metrics()
        for earlier in self._injected:
            earlier.refresh(self.fleet, fault.at)
        versions = {name: state.version for name, state in self.fleet.services.items()}
        fault.inject(self.fleet, fault.at)
        self._injected.append(fault)
        self._live.append(fault)
        self._planned += 1
        for name, state in self.fleet.services.items():
            if state.version != versions[name]:  # the fault came with a release
                self._announce(name, state.version, fault.at)

    def _plan_deploys(self) -> list[tuple[datetime, str]]:
        services = self.fleet.services
        unknown = [
            f"routine_deploys[{index}].service: no service {routine.service!r} in the config "
            f"(services: {', '.join(services)})"
            for index, routine in enumerate(self.scenario.routine_deploys)
            if routine.service not in services
        ]
        if unknown:
            raise ConfigError(f"scenario {self.scenario.name}", unknown)
        return [(self.start + at, name) for at, name in self.scenario.planned_deploys()]

    def _routine_deploy(self, at: datetime, service: str) -> None:
        """A harmless release, unless a fault is active on the service (a deploy freeze)."""
        self._deployed += 1
        frozen = any(
            fault.affects(self.fleet, service) and fault.is_active(self.fleet, at)
            for fault in self._live
        )
        if frozen:
            return
        version = bump_patch(self.fleet.services[service].version)
        self.fleet.deploy(service, version, at, by=ROUTINE)
        self._announce(service, version, at)

    def _announce(self, service: str, version: str, at: datetime) -> None:
        """A release as a CD system announces it (with `announce_deploys`): a change record
        sent resolved, which a manager reads as a deploy marker and never as an incident."""
        if not self.scenario.announce_deploys:
            return
        labels = {
            "alertname": DEPLOY_ALERT,
            "service": service,
            "version": version,
            "severity": "info",
        }
        self._outbox.append(
            Signal(
                source="sim-cd",
                fingerprint=fingerprint(labels),
                status="resolved",
                labels=labels,
                annotations={"summary": f"{service} {version} deployed"},
                starts_at=at,
                ends_at=at,
                generator_url="sim://cd/deployments",
            )
        )

    def _step(self, at: datetime) -> None:
        self.fleet.advance(at)
        over = False
        for fault in self._live:
            fault.tick(self.fleet, at)
            over = over or (fault.cleared_at is not None and fault.cleared_at <= at)
        if over:
            self._live = [
                fault for fault in self._live if fault.cleared_at is None or fault.cleared_at > at
            ]
        # Nothing changes the fleet while the step is read: per-service figures once.
        self.fleet.hold()
        try:
            lost = self._slo_lost
            for name in self.fleet.services:
                if self._degraded(name):
                    lost[name] = lost.get(name, _NONE) + self.eval_interval
            emitted = self.evaluator.evaluate(self.fleet, at)
        finally:
            self.fleet.release()
        while self._delayed and self._delayed[0][0] <= at:
            self._deliver(heapq.heappop(self._delayed)[2])
        pipeline = [
            fault
            for fault in self._live
            if fault.scope == "signals" and fault.is_active(self.fleet, at)
        ]
        if not pipeline:
            self._outbox.extend(emitted)
            return
        for signal in emitted:
            deliveries: list[tuple[datetime, Delivered]] = [(at, signal)]
            for fault in pipeline:
                deliveries = [
                    altered
                    for when, what in deliveries
                    for altered in (
                        fault.deliver(what, when) if isinstance(what, Signal) else [(when, what)]
                    )
                ]
            for when, what in deliveries:
                if when <= at:
                    self._deliver(what)
                else:
                    self._sequence += 1
                    heapq.heappush(self._delayed, (when, self._sequence, what))

    def _deliver(self, what: Delivered) -> None:
        if isinstance(what, Signal):
            self._outbox.append(what)
        else:
            self._malformed.append(what)

    def _degraded(self, service: str) -> bool:
        up, count, errors, latency = self.fleet.service_health(service)
        if 2 * up < count:
            return True
        return (errors is not None and errors > SLO_ERROR_RATIO) or (
            latency is not None and latency > SLO_P99_MS
        )

    def _judge(
        self,
        action: str,
        target: str,
        now: datetime,
        active: list[Fault],
        was_healthy: bool,
        up_before: int,
    ) -> tuple[Verdict, str]:
        """The verdict on an action that just ran (see AppliedAction), from the faults active
        just before it."""
        fixes = [fault for fault in active if fault.fixed_by(action, target)]
        if fixes:
            return "right", f"{action} {target} is the fix of {fixes[0].id} ({fixes[0].kind})"
        if was_healthy:
            return "harmful", f"{target} was healthy: no active fault touched it"
        service = self.fleet.service_of(target)
        if service is not None:
            instances = self.fleet.instances_of(service)
            up_after = sum(1 for i in instances if i.up)
            if up_after < up_before and 2 * up_after < len(instances):
                return "harmful", (
                    f"it took capacity down: {service} was left with {up_after} of "
                    f"{len(instances)} instances up"
                )
        touching = [fault for fault in active if fault.affects(self.fleet, target)]
        if touching:
            truth = touching[0]
            fix = truth.right_fix()
            return "wrong", (
                f"{action} does not fix {truth.id} ({truth.kind}); "
                + (f"its fix is {fix}" if fix else "no action fixes it: a human must be paged")
            )
        return "wrong", f"no active fault on {target} is fixed by {action}"

    def _execute(self, action: str, target: str, command_id: str, now: datetime) -> ActionResult:
        if action not in ACTIONS:
            return ActionResult(
                ok=False,
                error=f"unknown action {action!r}; the simulated fleet supports "
                + ", ".join(ACTIONS),
            )
        active = [fault for fault in self._injected if fault.is_active(self.fleet, now)]
        for fault in active:
            refusal = fault.intercept(action, target, command_id, now)
            if refusal is not None:
                return ActionResult(ok=False, error=refusal)
        silenced = next(
            (fault for fault in active if fault.silences(action, target, command_id, now)), None
        )
        known = self.fleet.instances if action in INSTANCE_ACTIONS else self.fleet.services
        was_healthy = self.healthy(target, now) if target in known else False
        service = self.fleet.service_of(target)
        up_before = sum(1 for i in self.fleet.instances_of(service) if i.up) if service else 0
        # A silently failing actuator says what the action would have said, and does nothing.
        fleet = copy.deepcopy(self.fleet) if silenced is not None else self.fleet
        try:
            output = _run_on(fleet, action, target, command_id, now)
        except FleetError as error:
            return ActionResult(ok=False, error=f"{action} {target}: {error}")
        verdict, reason = self._judge(action, target, now, active, was_healthy, up_before)
        if silenced is not None:
            reason += "; the actuator reported success but changed nothing"
        self.actions.append(
            AppliedAction(command_id, action, target, now, was_healthy, verdict, reason)
        )
        for fault in self._injected:
            fault.refresh(self.fleet, now)
        return ActionResult(ok=True, output=output)


def _run_on(fleet: Fleet, action: str, target: str, command_id: str, now: datetime) -> str:
    """Run one of ACTIONS on `fleet`; its output. Raises FleetError."""
    if action == "process.restart":
        return fleet.restart(target, command_id, now)
    if action == "deploy.rollback":
        return fleet.rollback(target, command_id, now)
    if action == "service.restart":
        return fleet.restart_service(target, command_id, now)
    if action == "disk.cleanup":
        return fleet.cleanup_disk(target, command_id, now)
    added = fleet.scale_out(target, now)
    count = len(fleet.services[target].instances)
    return f"added {added.name} to {target} ({count} instances)"
