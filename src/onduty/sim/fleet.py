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


class FleetError(ValueError):
    """An actuator cannot do what it was asked (unknown target, nothing to roll back to)."""


@dataclass
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
        return [self.instances[name] for name in self.services[service].instances]

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
        return [
            self.instances[n] for n in self._ordered_names() if self.instances[n].region == region
        ]

    def service_error_rate(self, service: str) -> float | None:
        """Mean error ratio over the instances that are up; None when none is (no data)."""
        rates = [i.error_rate for i in self.instances_of(service) if i.up]
        return sum(rates) / len(rates) if rates else None

    def service_latency_p99(self, service: str) -> float | None:
        """p99 latency of the service: the worst instance p99 among those up; None if none is."""
        latencies = [i.latency_ms for i in self.instances_of(service) if i.up]
        return max(latencies) if latencies else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "services": [s.snapshot() for s in self.services.values()],
            "instances": [self.instances[n].snapshot() for n in self._ordered_names()],
        }

    # ------------------------------------------------------------------ health model

    def advance(self, now: datetime) -> None:
        """One health step: finish boots, then draw each instance's noise (three samples each,
        up or not, so the draw sequence depends only on the step count and the fleet size)."""
        gauss = self._rng.gauss
        for name in self._ordered_names():
            instance = self.instances[name]
            if instance.booting_until is not None and instance.booting_until <= now:
                instance.booting_until = None
            instance.up = instance.is_up(now)
            pull = 0.3 * (instance.baseline_memory_pct - instance.resident_pct)
            instance.resident_pct = min(
                95.0, max(5.0, instance.resident_pct + pull + gauss(0, 0.8))
            )
            instance.memory_pct = instance.resident_pct
            instance.latency_ms = instance.baseline_latency_ms * math.exp(gauss(0, 0.1))
            instance.error_rate = max(0.0, instance.baseline_error_rate + gauss(0, 0.0015))
            instance.disk_pct = instance.baseline_disk_pct
        self.endpoint_errors.clear()

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
        return instance

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
