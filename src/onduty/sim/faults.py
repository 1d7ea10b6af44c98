"""Fault kinds: what really goes wrong in the simulated fleet, and the truth about it.

A fault is injected once (`inject`), then overlays its effect on every health step (`tick`,
called after `Fleet.advance`). Whether it still holds is read from the fleet itself
(`is_active`): a crash is over when the instance has been restarted and has finished booting, a
bad deploy when the service no longer runs the bad version, a latency spike or a flapping
instance when its `duration` has passed. `clears(action, target)` says which action can heal
it; some kinds have none. The truth ends up in a `FaultRecord`, with the command id of the
action that healed the fault (or "self") and the time health was actually restored.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from onduty.config import format_duration
from onduty.events import Signal
from onduty.sim.fleet import Fleet, bump_patch

SELF = "self"
ANY = "any"
# Command ids of the simulated people's own fixes start with this: actuator faults are faults
# of onduty's actuators, and a person fixing by hand does not go through them.
HUMAN_PREFIX = "human"
Delivered = Signal | dict[str, Any]


@dataclass(frozen=True)
class FaultRecord:
    """What happened, for scoring: when a fault began, when and by what it was healed."""

    id: str
    kind: str
    target: str
    service: str
    injected_at: datetime
    cleared_at: datetime | None
    cleared_by: str | None  # command id of the action that healed it, or "self"
    alertnames: tuple[str, ...]  # the alerts it is expected to raise
    cause: str = ""
    """The ground truth in one sentence: what really went wrong."""
    right_fix: str | None = None
    """The action that heals it, as "ACTION TARGET" ("process.restart search-2",
    "deploy.rollback payments"); None when no action does (it ends by itself, or only a human
    can help: escalation is the right response)."""
    scope: str = "instance"
    """What the target names: "instance", "service", "region" or "signals"."""
    signals_from: tuple[str, ...] = ()
    """The instances and services whose alerts this fault raises (empty: those of its target)."""


class Fault(ABC):
    """Base of every fault kind. Subclasses set the class attributes and the effect."""

    kind: ClassVar[str]
    scope: ClassVar[Literal["instance", "service", "region", "signals"]]
    alertnames: ClassVar[tuple[str, ...]]
    healed_by: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        fault_id: str,
        target: str,
        service: str,
        at: datetime,
        *,
        duration: timedelta | None = None,
        period: timedelta | None = None,
        params: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.id = fault_id
        self.target = target
        self.service = service
        self.at = at
        self.duration = duration
        self.period = period
        self.params: dict[str, Any] = dict(params or {})
        # A generator of the fault's own: what it draws never shifts the fleet's noise.
        self.rng = random.Random(f"{seed}:{fault_id}:{self.kind}")
        self.injected_at: datetime | None = None
        self.cleared_at: datetime | None = None
        self.cleared_by: str | None = None
        self._sources: tuple[str, ...] = ()

    # ------------------------------------------------------------------ lifecycle

    def inject(self, fleet: Fleet, now: datetime) -> None:
        self.injected_at = now
        self._sources = self.sources(fleet)
        self._start(fleet, now)

    def sources(self, fleet: Fleet) -> tuple[str, ...]:
        """The instances and services whose alerts this fault raises: by default its target
        (and, for an instance, its service)."""
        if self.scope == "instance":
            return (self.target, self.service)
        return (self.service,)

    def tick(self, fleet: Fleet, now: datetime) -> None:
        """Overlay the fault's effect on the health just computed for `now`."""
        if self.is_active(fleet, now):
            self._effect(fleet, now)

    def is_active(self, fleet: Fleet, now: datetime) -> bool:
        if self.injected_at is None or now < self.injected_at:
            return False
        self.refresh(fleet, now)
        return self.cleared_at is None or now < self.cleared_at

    def refresh(self, fleet: Fleet, now: datetime) -> None:
        """Record the healing if the fleet shows it happened by `now`."""
        if self.injected_at is not None and self.cleared_at is None:
            healed = self._healed(fleet, now)
            if healed is not None:
                self.cleared_at, self.cleared_by = healed

    def clears(self, action: str, target: str) -> bool:
        """Whether `action` on `target` heals this fault."""
        if action not in self.healed_by:
            return False
        return target == (self.target if self.scope == "instance" else self.service)

    def affects(self, fleet: Fleet, target: str) -> bool:
        """Whether the fault touches `target`: an instance fault touches its instance and its
        service; a service fault touches the service and every instance of it."""
        if self.scope == "instance":
            return target in {self.target, self.service}
        return fleet.service_of(target) == self.service

    def record(self) -> FaultRecord:
        return FaultRecord(
            id=self.id,
            kind=self.kind,
            target=self.target,
            service=self.service,
            injected_at=self.injected_at if self.injected_at is not None else self.at,
            cleared_at=self.cleared_at,
            cleared_by=self.cleared_by,
            alertnames=self.alertnames,
            cause=self.cause(),
            right_fix=self.right_fix(),
            scope=self.scope,
            signals_from=self.signals_from(),
        )

    def cause(self) -> str:
        """The ground truth, in one sentence."""
        return f"{self.kind} on {self.target}"

    def right_fix(self) -> str | None:
        """The action that heals the fault ("ACTION TARGET"), None when none does."""
        if not self.healed_by:
            return None
        action = sorted(self.healed_by)[0]
        return f"{action} {self.target if self.scope == 'instance' else self.service}"

    def signals_from(self) -> tuple[str, ...]:
        """Where its alerts come from (as of its injection)."""
        if self._sources or self.injected_at is not None:
            return self._sources
        return (self.target, self.service) if self.scope == "instance" else (self.service,)

    # ------------------------------------------------------------------ actuator, signal faults

    def intercept(self, action: str, target: str, command_id: str, now: datetime) -> str | None:
        """While active: a reason to refuse an action (an actuator fault), None to let it run."""
        return None

    def silences(self, action: str, target: str, command_id: str, now: datetime) -> bool:
        """While active: whether the actuator reports success for this action without doing
        it."""
        return False

    def deliver(self, signal: Signal, now: datetime) -> list[tuple[datetime, Delivered]]:
        """While active: how the alerting pipeline delivers `signal` emitted at `now`, as
        (when, what) pairs; what is the signal (perhaps altered) or a malformed webhook body.
        Default: as is, at once."""
        return [(now, signal)]

    def fixed_by(self, action: str, target: str) -> bool:
        """Whether `action` on `target` is this fault's fix (not necessarily effective: an
        actuator fault may keep it from working)."""
        return self.clears(action, target)

    # ------------------------------------------------------------------ per kind

    def _start(self, fleet: Fleet, now: datetime) -> None:  # noqa: B027 - an optional hook
        """Change the fleet at injection (default: nothing)."""

    @abstractmethod
    def _effect(self, fleet: Fleet, now: datetime) -> None: ...

    @abstractmethod
    def _healed(self, fleet: Fleet, now: datetime) -> tuple[datetime, str] | None:
        """(restored at, healed by) if the fault is over by `now`."""


class _FixedByRestart(Fault):
    """Instance faults that a restart heals once the new process has booted."""

    scope = "instance"
    healed_by = frozenset({"process.restart"})
    _restarts_before = 0

    def inject(self, fleet: Fleet, now: datetime) -> None:
        self._restarts_before = fleet.instances[self.target].restarts
        super().inject(fleet, now)

    def _restarted(self, fleet: Fleet) -> bool:
        return fleet.instances[self.target].restarts > self._restarts_before

    def _healed(self, fleet: Fleet, now: datetime) -> tuple[datetime, str] | None:
        instance = fleet.instances[self.target]
        if not self._restarted(fleet) or instance.crashed or instance.booted_at is None:
            return None
        if instance.booted_at > now or instance.last_restart is None:
            return None
        return instance.booted_at, instance.last_restart


class InstanceCrash(_FixedByRestart):
    """The instance goes down and stays down until restarted."""

    kind = "instance_crash"
    alertnames = ("InstanceDown",)

    def cause(self) -> str:
        return (
            f"the process of {self.target} ({self.service}) crashed and stays down until restarted"
        )

    def _start(self, fleet: Fleet, now: datetime) -> None:
        fleet.crash(self.target)

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        """Nothing to overlay: the process is dead (`Instance.crashed`) until a restart."""


class MemoryLeak(_FixedByRestart):
    """Resident memory grows from ~55% by ~1%/min until a restart resets it."""

    kind = "memory_leak"
    alertnames = ("HighMemoryUsage",)
    start_pct: ClassVar[float] = 55.0
    growth_pct_per_min: ClassVar[float] = 1.0

    def cause(self) -> str:
        return f"{self.target} ({self.service}) leaks memory, ~1% a minute, until restarted"

    def level(self, now: datetime) -> float:
        if self.injected_at is None:
            return 0.0
        minutes = (now - self.injected_at).total_seconds() / 60.0
        return min(99.5, self.start_pct + self.growth_pct_per_min * minutes)

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        if self._restarted(fleet):
            return  # the leaking process is gone; the new one starts from its baseline
        instance = fleet.instances[self.target]
        instance.memory_pct = max(instance.memory_pct, self.level(now))


class BadDeploy(Fault):
    """A new version goes out with a bug: ~25% errors on every instance until rolled back."""

    kind = "bad_deploy"
    scope = "service"
    alertnames = ("HighErrorRate",)
    healed_by = frozenset({"deploy.rollback"})
    error_rate: ClassVar[float] = 0.25
    bad_version = ""

    def cause(self) -> str:
        release = f"release {self.bad_version}" if self.bad_version else "a new release"
        return f"{release} of {self.service} has a bug: ~25% of its requests fail"

    def _start(self, fleet: Fleet, now: datetime) -> None:
        self.bad_version = bump_patch(fleet.services[self.service].version)
        fleet.deploy(self.service, self.bad_version, now, by=None)

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        for instance in fleet.instances_of(self.service):
            instance.error_rate = min(1.0, self.error_rate * fleet.noise(0.08))

    def _healed(self, fleet: Fleet, now: datetime) -> tuple[datetime, str] | None:
        state = fleet.services[self.service]
        if state.version == self.bad_version or state.deployed_at is None:
            return None
        return state.deployed_at, state.deployed_by or SELF


class _Timed(Fault):
    """Faults that end by themselves after `duration`; no action heals them."""

    default_duration: ClassVar[timedelta]

    @property
    def ends_at(self) -> datetime:
        start = self.injected_at if self.injected_at is not None else self.at
        return start + (self.duration if self.duration is not None else self.default_duration)

    def _healed(self, fleet: Fleet, now: datetime) -> tuple[datetime, str] | None:
        return (self.ends_at, SELF) if now >= self.ends_at else None


class DependencyLatency(_Timed):
    """A dependency slows down: the service's p99 goes to ~2500 ms for `duration`."""

    kind = "dependency_latency"
    scope = "service"
    alertnames = ("HighLatency",)
    default_duration = timedelta(minutes=20)
    latency_ms: ClassVar[float] = 2500.0

    def cause(self) -> str:
        minutes = format_duration(self.ends_at - (self.injected_at or self.at))
        return f"a dependency of {self.service} answers slowly for {minutes} (p99 ~2.5 s)"

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        for instance in fleet.instances_of(self.service):
            instance.latency_ms = self.latency_ms * fleet.noise(0.05)


class Flapping(_Timed):
    """The instance goes down and comes back by itself every `period`/2, for `duration`."""

    kind = "flapping"
    scope = "instance"
    alertnames = ("InstanceDown",)
    default_duration = timedelta(minutes=30)
    default_period = timedelta(minutes=4)

    def cause(self) -> str:
        period = format_duration(self.period or self.default_period)
        minutes = format_duration(self.ends_at - (self.injected_at or self.at))
        return (
            f"{self.target} ({self.service}) goes down and comes back by itself every "
            f"{period} for {minutes}; a restart does not help"
        )

    def down_at(self, now: datetime) -> bool:
        if self.injected_at is None or not self.injected_at <= now < self.ends_at:
            return False
        half = (self.period if self.period is not None else self.default_period) / 2
        return (now - self.injected_at) // half % 2 == 0

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        if self.down_at(now):
            fleet.instances[self.target].up = False


class DiskFull(Fault):
    """The data disk of an instance fills up (a runaway log): from ~85% by ~2%/min to 100%,
    until `disk.cleanup` frees it. A restart does not help: the files stay."""

    kind = "disk_full"
    scope = "instance"
    alertnames = ("DiskFull",)
    healed_by = frozenset({"disk.cleanup"})
    start_pct: ClassVar[float] = 85.0
    growth_pct_per_min: ClassVar[float] = 2.0
    _cleanups_before: str | None = None

    def cause(self) -> str:
        return (
            f"the data disk of {self.target} ({self.service}) fills up with a runaway log; "
            "a restart does not free it"
        )

    def inject(self, fleet: Fleet, now: datetime) -> None:
        self._cleanups_before = fleet.instances[self.target].last_cleanup
        super().inject(fleet, now)

    def level(self, now: datetime) -> float:
        if self.injected_at is None:
            return 0.0
        minutes = (now - self.injected_at).total_seconds() / 60.0
        return min(100.0, self.start_pct + self.growth_pct_per_min * minutes)

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        instance = fleet.instances[self.target]
        instance.disk_pct = max(instance.disk_pct, self.level(now))

    def _healed(self, fleet: Fleet, now: datetime) -> tuple[datetime, str] | None:
        instance = fleet.instances[self.target]
        if instance.last_cleanup in (None, self._cleanups_before) or instance.cleaned_at is None:
            return None
        return instance.cleaned_at, instance.last_cleanup or SELF


class DependencyOutage(Fault):
    """A service others call is wedged: it answers its health checks (no alert of its own) but
    not its callers' requests, so every caller fails ~30% of its requests and alerts. The fix
    is elsewhere than the alerts: restart the wedged service (every instance of it)."""

    kind = "dependency_outage"
    scope = "service"
    alertnames = ("HighErrorRate",)
    healed_by = frozenset({"service.restart"})
    error_rate: ClassVar[float] = 0.3
    _restarts_before: dict[str, int]

    def cause(self) -> str:
        callers = ", ".join(self._sources) or "its callers"
        return (
            f"{self.service} is wedged (it passes health checks, answers nothing): "
            f"{callers} fail ~30% of their requests"
        )

    def sources(self, fleet: Fleet) -> tuple[str, ...]:
        return tuple(fleet.callers_of(self.service))

    def _start(self, fleet: Fleet, now: datetime) -> None:
        self._restarts_before = {i.name: i.restarts for i in fleet.instances_of(self.service)}

    def affects(self, fleet: Fleet, target: str) -> bool:
        return fleet.service_of(target) in {self.service, *self._sources}

    def fixed_by(self, action: str, target: str) -> bool:
        """A restart of the whole service, or of one of its instances (a part of the fix)."""
        if action == "process.restart":
            return target in getattr(self, "_restarts_before", {})
        return super().fixed_by(action, target)

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        for caller in self._sources:
            for instance in fleet.instances_of(caller):
                level = self.error_rate * math.exp(self.rng.gauss(0, 0.08))
                instance.error_rate = max(instance.error_rate, min(1.0, level))

    def _healed(self, fleet: Fleet, now: datetime) -> tuple[datetime, str] | None:
        latest: tuple[datetime, str] | None = None
        for instance in fleet.instances_of(self.service):
            before = self._restarts_before.get(instance.name)
            if before is not None and instance.restarts <= before:
                return None
            if instance.crashed or instance.booted_at is None or instance.booted_at > now:
                return None
            if latest is None or instance.booted_at > latest[0]:
                latest = (instance.booted_at, instance.last_restart or SELF)
        return latest


class _Release(Fault):
    """Faults that come with a new version of a service, healed by rolling it back."""

    scope = "service"
    healed_by = frozenset({"deploy.rollback"})
    bad_version = ""

    def _start(self, fleet: Fleet, now: datetime) -> None:
        self.bad_version = bump_patch(fleet.services[self.service].version)
        fleet.deploy(self.service, self.bad_version, now, by=None)

    def _healed(self, fleet: Fleet, now: datetime) -> tuple[datetime, str] | None:
        state = fleet.services[self.service]
        if state.version == self.bad_version or state.deployed_at is None:
            return None
        return state.deployed_at, state.deployed_by or SELF


class AlertStorm(_Release):
    """A bad config push to a service breaks every one of its `size` endpoints (200 by
    default): one cause, hundreds of distinct alerts (EndpointErrors, one per endpoint, and the
    service's HighErrorRate). Only rolling the push back heals it."""

    kind = "alert_storm"
    alertnames = ("EndpointErrors", "HighErrorRate")
    default_size: ClassVar[int] = 200
    error_rate: ClassVar[float] = 0.2
    _levels: dict[str, float]

    @property
    def size(self) -> int:
        return int(self.params.get("size") or self.default_size)

    def cause(self) -> str:
        return (
            f"a bad config push to {self.service} breaks all {self.size} of its endpoints: "
            f"{self.size} alerts, one cause"
        )

    def _start(self, fleet: Fleet, now: datetime) -> None:
        super()._start(fleet, now)
        self._levels = {
            f"/api/{_RESOURCES[n % len(_RESOURCES)]}/{n // len(_RESOURCES) + 1}": round(
                self.rng.uniform(0.15, 0.6), 3
            )
            for n in range(self.size)
        }

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        fleet.endpoint_errors[self.service] = dict(self._levels)
        for instance in fleet.instances_of(self.service):
            level = self.error_rate * math.exp(self.rng.gauss(0, 0.08))
            instance.error_rate = max(instance.error_rate, min(1.0, level))


_RESOURCES = ("orders", "carts", "users", "items", "prices", "stock", "search", "reviews")


class DeployLeak(_Release):
    """A release that leaks memory on every instance (~1.5%/min each, from ~55%): the same
    HighMemoryUsage as a plain leak, but a restart relieves an instance only until it leaks
    back (~25 minutes); only rolling the release back heals it. The obvious runbook (restart on
    HighMemoryUsage) is the wrong one here."""

    kind = "deploy_leak"
    alertnames = ("HighMemoryUsage",)
    start_pct: ClassVar[float] = 55.0
    growth_pct_per_min: ClassVar[float] = 1.5
    _restarts_before: dict[str, int]
    _rates: dict[str, float]

    def cause(self) -> str:
        release = f"release {self.bad_version}" if self.bad_version else "a new release"
        return (
            f"{release} of {self.service} leaks memory on every instance: a restart relieves "
            "one for a while, only a rollback heals"
        )

    def sources(self, fleet: Fleet) -> tuple[str, ...]:
        return (*fleet.services[self.service].instances, self.service)

    def _start(self, fleet: Fleet, now: datetime) -> None:
        super()._start(fleet, now)
        self._restarts_before = {i.name: i.restarts for i in fleet.instances_of(self.service)}
        self._rates = {
            i.name: self.growth_pct_per_min * self.rng.uniform(0.8, 1.25)
            for i in fleet.instances_of(self.service)
        }

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        assert self.injected_at is not None
        for instance in fleet.instances_of(self.service):
            since = self.injected_at
            restarted = instance.restarts > self._restarts_before.get(instance.name, 0)
            if restarted or instance.name not in self._restarts_before:
                since = instance.booted_at or self.injected_at
            if now < since:
                continue
            minutes = (now - since).total_seconds() / 60.0
            rate = self._rates.get(instance.name, self.growth_pct_per_min)
            level = min(99.5, self.start_pct + rate * minutes)
            instance.memory_pct = max(instance.memory_pct, level)


class RegionOutage(_Timed):
    """Every instance in a region is unreachable for `duration` (30m by default). Nothing
    onduty can do brings a region back: restarts there are wrong; escalation is right."""

    kind = "region_outage"
    scope = "region"
    alertnames = ("InstanceDown",)
    default_duration = timedelta(minutes=30)

    def cause(self) -> str:
        minutes = format_duration(self.ends_at - (self.injected_at or self.at))
        return (
            f"region {self.target} is unreachable for {minutes}: every instance there is down; "
            "nothing onduty can do brings it back"
        )

    def sources(self, fleet: Fleet) -> tuple[str, ...]:
        instances = [i.name for i in fleet.instances_in(self.target)]
        services = list(dict.fromkeys(i.service for i in fleet.instances_in(self.target)))
        return (*instances, *services)

    def affects(self, fleet: Fleet, target: str) -> bool:
        instance = fleet.instances.get(target)
        if instance is not None:
            return instance.region == self.target
        return target in self._sources

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        for instance in fleet.instances_in(self.target):
            instance.up = False


class _SignalFault(_Timed):
    """Faults of the alerting pipeline itself, for `duration` (30m by default): the fleet is
    fine, what onduty is told about it is not. The target is `any` (every signal) or a
    service (the signals about it). Nothing needs fixing; the right response is no action."""

    scope = "signals"
    alertnames = ()
    default_duration = timedelta(minutes=30)

    def applies_to(self, signal: Signal) -> bool:
        return self.target == ANY or signal.labels.get("service") == self.target

    def sources(self, fleet: Fleet) -> tuple[str, ...]:
        return ()

    def affects(self, fleet: Fleet, target: str) -> bool:
        return False

    def _effect(self, fleet: Fleet, now: datetime) -> None:
        """Nothing in the fleet: see `deliver`."""

    def _what(self) -> str:
        return "every signal" if self.target == ANY else f"the signals about {self.target}"

    def _for(self) -> str:
        return format_duration(self.ends_at - (self.injected_at or self.at))


class StaleSignals(_SignalFault):
    """The pipeline delivers each signal `delay` late (3m by default)."""

    kind = "stale_signals"
    default_delay: ClassVar[timedelta] = timedelta(minutes=3)

    @property
    def delay(self) -> timedelta:
        value = self.params.get("delay")
        return value if isinstance(value, timedelta) else self.default_delay

    def cause(self) -> str:
        late = format_duration(self.delay)
        return f"the alerting pipeline delivers {self._what()} {late} late, for {self._for()}"

    def deliver(self, signal: Signal, now: datetime) -> list[tuple[datetime, Delivered]]:
        return [(now + self.delay, signal)] if self.applies_to(signal) else [(now, signal)]


class DuplicateSignals(_SignalFault):
    """The pipeline delivers each signal twice."""

    kind = "duplicate_signals"

    def cause(self) -> str:
        return f"the alerting pipeline delivers {self._what()} twice, for {self._for()}"

    def deliver(self, signal: Signal, now: datetime) -> list[tuple[datetime, Delivered]]:
        return [(now, signal), (now, signal)] if self.applies_to(signal) else [(now, signal)]


class MalformedSignals(_SignalFault):
    """The pipeline breaks a share (`fraction`, 0.5 by default) of the payloads it delivers:
    a misspelt status, labels that are not a mapping, a time that is not one. They arrive as
    Alertmanager webhook bodies that a receiver must refuse (`World.take_malformed`)."""

    kind = "malformed_signals"
    default_fraction: ClassVar[float] = 0.5

    @property
    def fraction(self) -> float:
        value = self.params.get("fraction")
        return float(value) if value is not None else self.default_fraction

    def cause(self) -> str:
        share = f"{self.fraction:.0%}"
        return f"the alerting pipeline garbles {share} of {self._what()}, for {self._for()}"

    def deliver(self, signal: Signal, now: datetime) -> list[tuple[datetime, Delivered]]:
        if not self.applies_to(signal) or self.rng.random() >= self.fraction:
            return [(now, signal)]
        return [(now, malformed_payload(signal, self.rng.randrange(3)))]


class ClockSkew(_SignalFault):
    """The sender's clock is off by `skew` (10m by default; negative: behind): every signal's
    timestamps are shifted by it."""

    kind = "clock_skew"
    default_skew: ClassVar[timedelta] = timedelta(minutes=10)

    @property
    def skew(self) -> timedelta:
        value = self.params.get("skew")
        return value if isinstance(value, timedelta) else self.default_skew

    def cause(self) -> str:
        ahead = "ahead" if self.skew >= timedelta(0) else "behind"
        return (
            f"the sender's clock is {format_duration(abs(self.skew))} {ahead}: the timestamps "
            f"of {self._what()} are off by that much, for {self._for()}"
        )

    def deliver(self, signal: Signal, now: datetime) -> list[tuple[datetime, Delivered]]:
        if not self.applies_to(signal):
            return [(now, signal)]
        shifted = signal.model_copy(
            update={
                "starts_at": signal.starts_at + self.skew if signal.starts_at else None,
                "ends_at": signal.ends_at + self.skew if signal.ends_at else None,
            }
        )
        return [(now, shifted)]


def malformed_payload(signal: Signal, how: int) -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) for `signal`, broken one of three ways."""
    alert: dict[str, Any] = {
        "status": signal.status,
        "labels": dict(signal.labels),
        "annotations": dict(signal.annotations),
        "startsAt": signal.starts_at.isoformat() if signal.starts_at else None,
        "endsAt": signal.ends_at.isoformat() if signal.ends_at else None,
        "generatorURL": signal.generator_url,
        "fingerprint": signal.fingerprint,
    }
    if how == 0:
        alert["status"] = signal.status[:-1]  # "firin", "resolve"
    elif how == 1:
        alert["labels"] = ",".join(f"{k}={v}" for k, v in sorted(signal.labels.items()))
    else:
        alert["startsAt"] = "yesterday at noon"
    return {
        "version": "4",
        "status": signal.status,
        "receiver": "onduty",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "sim://alertmanager",
        "alerts": [alert],
    }


class ActuatorHang(InstanceCrash):
    """An instance crashes, and the actuator that acts on it hangs: every action onduty asks
    for it times out having done nothing. A person restarting it by hand fixes it."""

    kind = "actuator_hang"
    timeout: ClassVar[timedelta] = timedelta(seconds=60)

    def cause(self) -> str:
        return (
            f"{self.target} ({self.service}) crashed, and the actuator that would restart it "
            "hangs: every action on it times out having done nothing"
        )

    def intercept(self, action: str, target: str, command_id: str, now: datetime) -> str | None:
        if target != self.target or command_id.startswith(HUMAN_PREFIX):
            return None
        return (
            f"{action} {target}: timed out after {format_duration(self.timeout)}: the actuator "
            "did not answer (nothing was done)"
        )


class ActuatorSilentFailure(InstanceCrash):
    """An instance crashes, and the actuator that acts on it reports success for every action
    without doing anything. A person restarting it by hand fixes it."""

    kind = "actuator_silent_failure"

    def cause(self) -> str:
        return (
            f"{self.target} ({self.service}) crashed, and the actuator that would restart it "
            "reports success without doing anything"
        )

    def silences(self, action: str, target: str, command_id: str, now: datetime) -> bool:
        return target == self.target and not command_id.startswith(HUMAN_PREFIX)


FAULT_KINDS: dict[str, type[Fault]] = {
    kind.kind: kind
    for kind in (
        InstanceCrash,
        BadDeploy,
        MemoryLeak,
        DependencyLatency,
        Flapping,
        DiskFull,
        DependencyOutage,
        RegionOutage,
        AlertStorm,
        StaleSignals,
        DuplicateSignals,
        MalformedSignals,
        ClockSkew,
        ActuatorHang,
        ActuatorSilentFailure,
        DeployLeak,
    )
}
INSTANCE_KINDS = frozenset(k for k, cls in FAULT_KINDS.items() if cls.scope == "instance")
SERVICE_KINDS = frozenset(k for k, cls in FAULT_KINDS.items() if cls.scope == "service")
REGION_KINDS = frozenset(k for k, cls in FAULT_KINDS.items() if cls.scope == "region")
SIGNAL_KINDS = frozenset(k for k, cls in FAULT_KINDS.items() if cls.scope == "signals")
DEFAULT_DURATIONS: dict[str, timedelta] = {
    kind: cls.default_duration for kind, cls in FAULT_KINDS.items() if issubclass(cls, _Timed)
}
