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

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from onduty.config import format_duration
from onduty.sim.fleet import Fleet, bump_patch

SELF = "self"


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
    ) -> None:
        self.id = fault_id
        self.target = target
        self.service = service
        self.at = at
        self.duration = duration
        self.period = period
        self.injected_at: datetime | None = None
        self.cleared_at: datetime | None = None
        self.cleared_by: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def inject(self, fleet: Fleet, now: datetime) -> None:
        self.injected_at = now
        self._start(fleet, now)

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
        """Where its alerts come from: by default its target (and, for an instance, its service)."""
        if self.scope == "instance":
            return (self.target, self.service)
        return (self.service,)

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


FAULT_KINDS: dict[str, type[Fault]] = {
    kind.kind: kind for kind in (InstanceCrash, BadDeploy, MemoryLeak, DependencyLatency, Flapping)
}
INSTANCE_KINDS = frozenset(k for k, cls in FAULT_KINDS.items() if cls.scope == "instance")
SERVICE_KINDS = frozenset(k for k, cls in FAULT_KINDS.items() if cls.scope == "service")
DEFAULT_DURATIONS: dict[str, timedelta] = {
    kind.kind: kind.default_duration for kind in (DependencyLatency, Flapping)
}
