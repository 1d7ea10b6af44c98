"""The simulated fleet: services with a deployed version, instances with health.

Health moves only when `advance(now)` is called (once per evaluation step of the world): each
instance draws a fixed number of noise samples from the world's generator, so the noise depends
on the seed and on the step count, never on how often the caller looks. Faults overlay their
effects after `advance` (see `onduty.sim.faults`); the actuators (`restart`, `rollback`,
`scale_out`) change the state at once and record which command did it.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from onduty.config import Service

BOOT_DELAY = timedelta(seconds=20)
_TWO_PI = 2.0 * math.pi


def _standard_normals(rng: random.Random, count: int) -> list[float]:
    """`count` standard normal draws, exactly what `count` calls of `rng.gauss(0, 1)` would
    return (z before `mu + z * sigma`), leaving `rng` in the same state: the same pairs from
    two `random()` calls each, the odd one kept for the next call as `gauss_next`."""
    draw = rng.random
    found: list[float] = []
    append = found.append
    spare = rng.gauss_next  # type: ignore[attr-defined]
    if spare is not None and count > 0:
        append(spare)
        spare = None
    cos, sin, log, sqrt = math.cos, math.sin, math.log, math.sqrt
    for _ in range((count - len(found) + 1) // 2):
        x2pi = draw() * _TWO_PI
        g2rad = sqrt(-2.0 * log(1.0 - draw()))
        append(cos(x2pi) * g2rad)
        append(sin(x2pi) * g2rad)
    if len(found) > count:
        spare = found.pop()
    rng.gauss_next = spare  # type: ignore[attr-defined]
    return found


def _same_as_gauss() -> bool:
    """Whether `_standard_normals` reproduces this Python's `random.gauss`, draw for draw."""
    for skip in (0, 1):
        fast, slow = random.Random(20240611), random.Random(20240611)
        for _ in range(skip):
            fast.gauss(0, 1)
            slow.gauss(0, 1)
        expected = [slow.gauss(0, 1) for _ in range(7)]
        if [0.0 + z for z in _standard_normals(fast, 7)] != expected:
            return False
        if fast.getstate() != slow.getstate() or fast.gauss(0, 1) != slow.gauss(0, 1):
            return False
    return True


# The health step draws its noise in one batch when that is exactly `gauss`, one by one if not.
_BATCH_GAUSS = _same_as_gauss()


class FleetError(ValueError):
    """An actuator cannot do what it was asked (unknown target, nothing to roll back to)."""


@dataclass(slots=True)
class Instance:
    """One process of a service. `up` and the metrics are as of the last `Fleet.advance`."""

    name: str
    service: str
    region: str
    up: bool = True
    booting_until: datetime | None = None
    memory_pct: float = 0.0
    latency_ms: float = 0.0
    error_rate: float = 0.0
    crashed: bool = False
    restarts: int = 0
    last_restart: str | None = None
    booted_at: datetime | None = None
    baseline_memory_pct: float = 45.0
    baseline_latency_ms: float = 100.0
    baseline_error_rate: float = 0.003
    resident_pct: float = field(default=45.0, repr=False)
    disk_pct: float = 0.0
    baseline_disk_pct: float = 40.0
    last_cleanup: str | None = None
    cleaned_at: datetime | None = None

    def is_up(self, now: datetime) -> bool:
        """Whether the process answers at `now` (running and done booting)."""
        if self.crashed:
            return False
        return self.booting_until is None or self.booting_until <= now

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "service": self.service,
            "up": self.up,
            "booting_until": _iso(self.booting_until),
            "memory_pct": self.memory_pct,
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "crashed": self.crashed,
            "restarts": self.restarts,
            "last_restart": self.last_restart,
            "booted_at": _iso(self.booted_at),
            "resident_pct": self.resident_pct,
            "region": self.region,
            "disk_pct": self.disk_pct,
            "last_cleanup": self.last_cleanup,
            "cleaned_at": _iso(self.cleaned_at),
        }


@dataclass
class ServiceState:
    """A service as deployed: its version, the one before (for rollback) and its instances."""

    name: str
    tier: str
    region: str
    version: str
    previous_version: str | None
    instances: list[str] = field(default_factory=list)
    deployed_at: datetime | None = None
    deployed_by: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "previous_version": self.previous_version,
            "instances": list(self.instances),
            "deployed_at": _iso(self.deployed_at),
            "deployed_by": self.deployed_by,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def bump_patch(version: str) -> str:
    """'1.4.2' -> '1.4.3' (a version string that does not end in a number gets '.1')."""
    head, _, last = version.rpartition(".")
    if last.isdigit():
        return f"{head}.{int(last) + 1}" if head else str(int(last) + 1)
    return f"{version}.1"


class Fleet:
    """All services and instances, in configuration order (the order noise is drawn in)."""

    def __init__(
        self,
        services: Sequence[Service],
        rng: random.Random,
        *,
        boot_delay: timedelta = BOOT_DELAY,
        regions: Mapping[str, str] | None = None,
        depends_on: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._rng = rng
        self.boot_delay = boot_delay
        self._regions = dict(regions or {})
        self.depends_on: dict[str, list[str]] = {
            name: list(calls) for name, calls in (depends_on or {}).items()
        }
        self.services: dict[str, ServiceState] = {}
        self.instances: dict[str, Instance] = {}
        self._members: dict[str, list[Instance]] = {}
        """Per service, its Instance objects in order (kept with `ServiceState.instances`)."""
        self._ordered: list[Instance] = []
        self._held: dict[str, tuple[int, int, float | None, float | None]] | None = None
        """Every instance in fleet order (services in order, each one's instances in order)."""
        self.endpoint_errors: dict[str, dict[str, float]] = {}
        """Per service, the error ratio of each of its endpoints that a fault made visible (a
        per-endpoint series exists only while a fault sets it)."""
        for index, service in enumerate(services):
            state = ServiceState(
                name=service.name,
                tier=service.tier,
                region=service.region,
                version=f"1.{index + 4}.2",
                previous_version=f"1.{index + 4}.1",
            )
            self.services[service.name] = state
            for name in service.instances:
                self._add_instance(state, name, booting_until=None)

    # ------------------------------------------------------------------ queries

    def instances_of(self, service: str) -> list[Instance]:
        return list(self._instances_of(service))

    def service_of(self, target: str) -> str | None:
        """The service a target belongs to: itself for a service, the owner for an instance."""
        if target in self.services:
            return target
        instance = self.instances.get(target)
        return instance.service if instance else None

    def callers_of(self, service: str) -> list[str]:
        """The services that call `service` (declare it in `depends_on`), in fleet order."""
        return [name for name in self.services if service in self.depends_on.get(name, [])]

    def instances_in(self, region: str) -> list[Instance]:
        """The instances running in `region`, in fleet order."""
        return [instance for instance in self._in_order() if instance.region == region]

    def service_error_rate(self, service: str) -> float | None:
        """Mean error ratio over the instances that are up; None when none is (no data)."""
        if self._held is not None:
            return self.service_health(service)[2]
        rates = [i.error_rate for i in self._instances_of(service) if i.up]
        return sum(rates) / len(rates) if rates else None

    def service_latency_p99(self, service: str) -> float | None:
        """p99 latency of the service: the worst instance p99 among those up; None if none is."""
        if self._held is not None:
            return self.service_health(service)[3]
        latencies = [i.latency_ms for i in self._instances_of(service) if i.up]
        return max(latencies) if latencies else None

    def service_health(self, service: str) -> tuple[int, int, float | None, float | None]:
        """(instances up, instances, `service_error_rate`, `service_latency_p99`)."""
        held = self._held
        if held is None:
            return self._health(service)
        found = held.get(service)
        if found is None:
            found = held[service] = self._health(service)
        return found

    def hold(self) -> None:
        """Promise that nothing changes the fleet until `release`: the per-service figures
        are then computed once and reused (the world does this while it reads a step)."""
        self._held = {}

    def release(self) -> None:
        """End of `hold`: figures are computed afresh again at each call."""
        self._held = None

    def _health(self, service: str) -> tuple[int, int, float | None, float | None]:
        members = self._instances_of(service)
        rates = [i.error_rate for i in members if i.up]
        latencies = [i.latency_ms for i in members if i.up]
        return (
            len(rates),
            len(members),
            sum(rates) / len(rates) if rates else None,
            max(latencies) if latencies else None,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "services": [s.snapshot() for s in self.services.values()],
            "instances": [instance.snapshot() for instance in self._in_order()],
        }

    # ------------------------------------------------------------------ health model

    def advance(self, now: datetime) -> None:
        """One health step: finish boots, then draw each instance's noise (three samples each,
        up or not, so the draw sequence depends only on the step count and the fleet size)."""
        ordered = self._in_order()
        if not _BATCH_GAUSS:
            gauss = self._rng.gauss
            for instance in ordered:
                self._boot(instance, now)
                memory, latency, error = gauss(0, 0.8), gauss(0, 0.1), gauss(0, 0.0015)
                self._noise(instance, memory, latency, error)
            self.endpoint_errors.clear()
            return
        # The same draws as three `gauss` calls per instance, in order; `0 + z * sigma` is
        # what `gauss(0, sigma)` returns.
        normals = _standard_normals(self._rng, 3 * len(ordered))
        exp = math.exp
        for instance, memory, latency, error in zip(
            ordered, normals[0::3], normals[1::3], normals[2::3], strict=True
        ):
            booting = instance.booting_until
            if booting is not None and booting <= now:
                instance.booting_until = booting = None
            instance.up = not instance.crashed and (booting is None or booting <= now)
            # min(95, max(5, x)) and max(0, x), spelt out: the same value, NaN included.
            resident = instance.resident_pct
            pull = 0.3 * (instance.baseline_memory_pct - resident)
            resident = resident + pull + (0 + memory * 0.8)
            resident = resident if resident > 5.0 else 5.0
            instance.resident_pct = instance.memory_pct = resident if resident < 95.0 else 95.0
            instance.latency_ms = instance.baseline_latency_ms * exp(0 + latency * 0.1)
            rate = instance.baseline_error_rate + (0 + error * 0.0015)
            instance.error_rate = rate if rate > 0.0 else 0.0
            instance.disk_pct = instance.baseline_disk_pct
        self.endpoint_errors.clear()

    @staticmethod
    def _boot(instance: Instance, now: datetime) -> None:
        if instance.booting_until is not None and instance.booting_until <= now:
            instance.booting_until = None
        instance.up = instance.is_up(now)

    @staticmethod
    def _noise(instance: Instance, memory: float, latency: float, error: float) -> None:
        pull = 0.3 * (instance.baseline_memory_pct - instance.resident_pct)
        instance.resident_pct = min(95.0, max(5.0, instance.resident_pct + pull + memory))
        instance.memory_pct = instance.resident_pct
        instance.latency_ms = instance.baseline_latency_ms * math.exp(latency)
        instance.error_rate = max(0.0, instance.baseline_error_rate + error)
        instance.disk_pct = instance.baseline_disk_pct

    def noise(self, sigma: float) -> float:
        """A multiplicative noise factor around 1, for faults that set a level."""
        return math.exp(self._rng.gauss(0, sigma))

    # ------------------------------------------------------------------ what faults do

    def crash(self, instance: str) -> None:
        target = self.instances[instance]
        target.crashed = True
        target.booting_until = None
        target.up = False

    def deploy(self, service: str, version: str, now: datetime, by: str | None) -> None:
        state = self.services[service]
        state.previous_version = state.version
        state.version = version
        state.deployed_at = now
        state.deployed_by = by

    # ------------------------------------------------------------------ actuators

    def restart(self, instance: str, command_id: str, now: datetime) -> str:
        target = self.instances.get(instance)
        if target is None:
            raise FleetError(self._unknown_instance(instance))
        target.crashed = False
        target.up = False
        target.booting_until = now + self.boot_delay
        target.booted_at = target.booting_until
        target.restarts += 1
        target.last_restart = command_id
        target.resident_pct = target.baseline_memory_pct
        target.memory_pct = target.resident_pct
        seconds = f"{self.boot_delay.total_seconds():g}s"
        return f"restarted {instance} ({target.service}); it answers again in {seconds}"

    def restart_service(self, service: str, command_id: str, now: datetime) -> str:
        state = self.services.get(service)
        if state is None:
            raise FleetError(self._unknown_service(service))
        for name in state.instances:
            self.restart(name, command_id, now)
        seconds = f"{self.boot_delay.total_seconds():g}s"
        return (
            f"restarted the {len(state.instances)} instances of {service}; "
            f"they answer again in {seconds}"
        )

    def cleanup_disk(self, instance: str, command_id: str, now: datetime) -> str:
        target = self.instances.get(instance)
        if target is None:
            raise FleetError(self._unknown_instance(instance))
        freed = max(0.0, target.disk_pct - target.baseline_disk_pct)
        target.last_cleanup = command_id
        target.cleaned_at = now
        target.disk_pct = target.baseline_disk_pct
        return f"cleaned up the disk of {instance} ({target.service}): {freed:.0f}% freed"

    def rollback(self, service: str, command_id: str, now: datetime) -> str:
        state = self.services.get(service)
        if state is None:
            raise FleetError(self._unknown_service(service))
        if state.previous_version is None:
            raise FleetError(
                f"{service} runs {state.version} and has no previous version to roll back to"
            )
        bad = state.version
        state.version, state.previous_version = state.previous_version, None
        state.deployed_at = now
        state.deployed_by = command_id
        return f"rolled back {service} from {bad} to {state.version}"

    def scale_out(self, service: str, now: datetime) -> Instance:
        state = self.services.get(service)
        if state is None:
            raise FleetError(self._unknown_service(service))
        number = len(state.instances) + 1
        while f"{service}-{number}" in self.instances:
            number += 1
        return self._add_instance(state, f"{service}-{number}", booting_until=now + self.boot_delay)

    # ------------------------------------------------------------------ internals

    def _add_instance(
        self, state: ServiceState, name: str, booting_until: datetime | None
    ) -> Instance:
        memory = self._rng.uniform(35.0, 55.0)
        instance = Instance(
            name=name,
            service=state.name,
            region=self._regions.get(name, state.region),
            up=booting_until is None,
            booting_until=booting_until,
            booted_at=booting_until,
            baseline_memory_pct=memory,
            baseline_latency_ms=self._rng.uniform(60.0, 220.0),
            baseline_error_rate=self._rng.uniform(0.001, 0.008),
            resident_pct=memory,
            memory_pct=memory,
        )
        instance.latency_ms = instance.baseline_latency_ms
        instance.error_rate = instance.baseline_error_rate
        # Not drawn from the generator: the noise of every existing fleet stays as it was.
        instance.baseline_disk_pct = 30.0 + zlib.crc32(name.encode()) % 25
        instance.disk_pct = instance.baseline_disk_pct
        state.instances.append(name)
        self.instances[name] = instance
        self._ordered = []  # rebuilt on next use
        return instance

    def _instances_of(self, service: str) -> list[Instance]:
        """The cached Instance objects of `service`, in order; do not change the list."""
        members = self._members.get(service)
        names = self.services[service].instances
        if members is None or len(members) != len(names):
            members = self._members[service] = [self.instances[name] for name in names]
        return members

    def _in_order(self) -> list[Instance]:
        """The cached Instance objects of the fleet, in fleet order; do not change the list."""
        if len(self._ordered) != len(self.instances):
            self._ordered = [self.instances[n] for n in self._ordered_names()]
        return self._ordered

    def _ordered_names(self) -> list[str]:
        return [name for state in self.services.values() for name in state.instances]

    def _unknown_instance(self, name: str) -> str:
        if name in self.services:
            return f"{name!r} is a service; this action needs one of its instances"
        return f"unknown instance {name!r} (known: {', '.join(self._ordered_names())})"

    def _unknown_service(self, name: str) -> str:
        if name in self.instances:
            owner = self.instances[name].service
            return f"{name!r} is an instance of {owner!r}; this action needs a service"
        return f"unknown service {name!r} (known: {', '.join(self.services)})"
