"""Scenarios: a seed, a length of virtual time, the faults to inject and what to expect.

    name: demo
    seed: 7
    duration: 6h
    faults:
      - {at: 10m, kind: instance_crash, target: search-2}
      - {at: 2h, kind: dependency_latency, target: payments, duration: 20m}
    control:
      - {from: 5h, to: 6h}        # no fault may be scheduled here

Errors name the field (`faults[1].duration: ...`) and raise `onduty.config.ConfigError`.
Built-in scenarios live in `onduty/sim/scenarios/<name>.yaml`, each next to the onduty config
it is meant to run against, `<name>-config.yaml`.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)

from onduty.config import (
    Autonomy,
    AutonomyLevel,
    Config,
    ConfigError,
    Model,
    Service,
    format_duration,
    parse_config,
    parse_duration,
    read_yaml,
    validate_document,
)
from onduty.sim.expectations import (
    DURING_METRICS,
    METRICS,
    STEADY_METRICS,
    Expectation,
    ExpectationError,
    from_mapping,
    parse_expectation,
)
from onduty.sim.faults import (
    ANY,
    DEFAULT_DURATIONS,
    INSTANCE_KINDS,
    REGION_KINDS,
    SERVICE_KINDS,
    SIGNAL_KINDS,
)
from onduty.values import line_of, loc_of

DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_COMPOUND = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")


def parse_offset(value: Any) -> timedelta:
    """A duration as `onduty.config.parse_duration` reads it, or a compound one: '1h15m'."""
    if isinstance(value, str) and _COMPOUND.match(value.strip()):
        return sum(
            (parse_duration(f"{number}{unit}") for number, unit in _PART.findall(value)),
            timedelta(0),
        )
    return parse_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_offset),
    PlainSerializer(format_duration, return_type=str),
]

_SIGNED = re.compile(r"^\s*-\s*(.+)$")


def parse_signed_offset(value: Any) -> timedelta:
    """A duration that may be negative: '-10m', '90s'."""
    if isinstance(value, str):
        negative = _SIGNED.match(value)
        if negative:
            return -parse_offset(negative.group(1))
    return parse_offset(value)


SignedDuration = Annotated[
    timedelta,
    BeforeValidator(parse_signed_offset),
    PlainSerializer(
        lambda value: (
            ("-" + format_duration(-value)) if value < timedelta(0) else format_duration(value)
        ),
        return_type=str,
    ),
]

FaultKind = Literal[
    "instance_crash",
    "bad_deploy",
    "memory_leak",
    "dependency_latency",
    "flapping",
    "disk_full",
    "dependency_outage",
    "region_outage",
    "alert_storm",
    "stale_signals",
    "duplicate_signals",
    "malformed_signals",
    "clock_skew",
    "actuator_hang",
    "actuator_silent_failure",
    "deploy_leak",
]
# The settings only some kinds take, and which.
_ONLY: dict[str, tuple[str, ...]] = {
    "period": ("flapping",),
    "delay": ("stale_signals",),
    "skew": ("clock_skew",),
    "size": ("alert_storm",),
    "fraction": ("malformed_signals",),
}

_TIMED_KINDS = frozenset(DEFAULT_DURATIONS)


class TargetSelector(Model):
    """Targets chosen at random among those that match every key given."""

    service: str | None = None
    tier: Literal["critical", "high", "standard", "low"] | None = None
    region: str | None = None


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|m|h|d))?\s*$")
_PER_HOUR = {"s": 3600.0, "m": 60.0, "h": 1.0, "d": 1 / 24}


def parse_rate(value: Any) -> float:
    """Faults per hour: a number, or `N/h`, `N/d`, `N/m`."""
    if isinstance(value, bool):
        raise ValueError("a rate is a number per hour, or N/h, N/d")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("a rate must be above zero")
        return float(value)
    match = _RATE.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a rate: write a number per hour, or N/h, N/d")
    rate = float(match.group(1)) * _PER_HOUR[match.group(2) or "h"]
    if rate <= 0:
        raise ValueError("a rate must be above zero")
    return rate


Rate = Annotated[float, BeforeValidator(parse_rate)]


class FaultSpec(Model):
    """One fault to inject: fixed (`at` an offset from the scenario start) or drawn (`count`
    of them, or `rate` per hour, at random times `between` two offsets). The target is a name,
    a selector (`{service: search}`, `{tier: critical}`, `{region: eu-west}`) or `any`: a
    selector or `any` draws the target among those the kind can take."""

    at: Duration | None = None
    kind: FaultKind
    target: str | TargetSelector
    count: int | None = Field(default=None, ge=0, le=10_000)
    rate: Rate | None = None
    between: list[Duration] | None = Field(default=None, min_length=2, max_length=2)
    duration: Duration | None = None
    period: Duration | None = None
    delay: Duration | None = None
    """stale_signals: how late each signal arrives (3m)."""
    skew: SignedDuration | None = None
    """clock_skew: how far the sender's clock is off (10m; negative: behind)."""
    size: int | None = Field(default=None, ge=1, le=5000)
    """alert_storm: how many endpoints break (200), each raising its own alert."""
    fraction: float | None = Field(default=None, gt=0, le=1)
    """malformed_signals: the share of payloads broken (0.5)."""

    def params(self) -> dict[str, Any]:
        """The kind-specific settings given."""
        return {
            name: getattr(self, name)
            for name in ("delay", "skew", "size", "fraction")
            if getattr(self, name) is not None
        }

    @property
    def drawn(self) -> bool:
        """Whether the times are drawn (`count` or `rate`), not fixed (`at`)."""
        return self.count is not None or self.rate is not None

    @property
    def fixed_target(self) -> str | None:
        """The target's name when it names one (not a selector, not `any`)."""
        return self.target if isinstance(self.target, str) and self.target != ANY else None

    def window(self) -> tuple[timedelta, timedelta | None]:
        """(start, end) offsets of a fixed fault; end is None when only an action ends it."""
        at = self.at if self.at is not None else timedelta(0)
        default = DEFAULT_DURATIONS.get(self.kind)
        if default is None:
            return at, None
        return at, at + (self.duration if self.duration is not None else default)


class ControlPeriod(Model):
    """A stretch of virtual time with no fault: any incident opened in it is a false alarm."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: Duration = Field(alias="from")
    end: Duration = Field(alias="to")


class ResponseTime(Model):
    """A response time drawn at random: log-normal with this median and 90th percentile."""

    median: Duration
    p90: Duration

    # Used where one duration is needed (a time before or after another), it is its median.
    def __radd__(self, other: datetime) -> datetime:
        return other + self.median

    def __rsub__(self, other: datetime) -> datetime:
        return other - self.median

    def sample(self, rng: random.Random) -> timedelta:
        median = max(self.median.total_seconds(), 1.0)
        p90 = max(self.p90.total_seconds(), median)
        sigma = math.log(p90 / median) / 1.2815515655446004  # z of the 90th percentile
        return timedelta(seconds=round(median * math.exp(rng.gauss(0, sigma))))


Delay = Duration | ResponseTime


def sample_delay(delay: Delay | None, rng: random.Random) -> timedelta | None:
    """A fixed delay as is (nothing drawn); a distribution sampled from `rng`."""
    if delay is None or isinstance(delay, timedelta):
        return delay
    return delay.sample(rng)


class Person(Model):
    """One simulated person: the roles they hold, and their own response times (else those
    of `on_call`)."""

    name: str = Field(min_length=1)
    roles: list[str] = Field(default_factory=lambda: ["approver"])
    approve_after: Delay | None = None
    acknowledge_after: Delay | None = None
    fix_after: Delay | None = None
    away: float | None = Field(default=None, ge=0, le=1)


class OnCall(Model):
    """How the simulated on-call people behave: they approve requests and acknowledge pages
    after a delay (None: never), fixed or drawn (`{median: 2m, p90: 6m}`), and are away (do
    not answer one request or page) with probability `away`."""

    approve_after: Delay | None = timedelta(minutes=2)
    acknowledge_after: Delay | None = timedelta(minutes=5)
    # A paged human fixes what onduty handed over (restart, roll back) this long after the page.
    fix_after: Delay | None = timedelta(minutes=20)
    # Who answers approvals, in order (two of them for a two-person rule), and in which role.
    approvers: list[str] = Field(default_factory=lambda: ["alice", "bob"], min_length=1)
    role: str = "approver"
    away: float = Field(default=0.0, ge=0, le=1)


class Expect(Model):
    """What a run of the scenario should achieve: a list of expressions (`mttr_p90 < 10m`,
    see `onduty.sim.expectations`), or the older mapping (`detected_min: 3`), any subset."""

    expressions: list[str] = Field(default_factory=list)

    detected_min: int | None = Field(default=None, ge=0)
    auto_remediated_min: int | None = Field(default=None, ge=0)
    escalated_min: int | None = Field(default=None, ge=0)
    wrong_actions_max: int | None = Field(default=None, ge=0)
    approved_min: int | None = Field(default=None, ge=0)
    guardrail_denials_min: int | None = Field(default=None, ge=0)
    control_incidents_max: int | None = Field(default=None, ge=0)
    denied_by: list[str] = Field(default_factory=list)
    """Guardrails that must have denied at least one action."""
    human_fixed_min: int | None = Field(default=None, ge=0)

    def lines(self) -> list[str]:
        """Every expectation as an expression: those written, then the mapping's."""
        legacy = self.model_dump(exclude={"expressions"}, exclude_none=True)
        return [*self.expressions, *from_mapping(legacy)]


def _expect_document(value: Any) -> Any:
    """`expect:` as a list of expressions, or the older mapping."""
    if isinstance(value, list):
        return {"expressions": value}
    return value


class SteadyState(Model):
    """Hypotheses about the fleet that must hold before the first fault (`before`, the state
    just before it is injected), at every evaluation step of the run (`during`) and at the end
    (`after`), as expressions over the fleet's state (`firing_alerts`, `instances_down`,
    `degraded_services`; `open_incidents` before and after) and, after, over the scorecard's
    metrics too."""

    before: list[str] = Field(default_factory=list)
    during: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)


class FleetService(Model):
    """One service of the simulated fleet. `instances` is a count (named `NAME-1`, `NAME-2`,
    ...) or the names; with `regions`, the instances are spread over them in turn."""

    name: str = Field(min_length=1)
    tier: Literal["critical", "high", "standard", "low"] = "standard"
    region: str = ""
    regions: list[str] = Field(default_factory=list)
    instances: int | list[str] = 1
    depends_on: list[str] = Field(default_factory=list)
    autonomy: AutonomyLevel | None = None

    @field_validator("instances")
    @classmethod
    def _some(cls, value: int | list[str]) -> int | list[str]:
        if isinstance(value, int) and value < 1:
            raise ValueError("a service needs at least one instance")
        if isinstance(value, list) and not value:
            raise ValueError("a service needs at least one instance")
        return value

    def instance_names(self) -> list[str]:
        if isinstance(self.instances, int):
            return [f"{self.name}-{number}" for number in range(1, self.instances + 1)]
        return list(self.instances)

    def home_region(self) -> str:
        return self.regions[0] if self.regions else self.region

    def instance_regions(self) -> dict[str, str]:
        names = self.instance_names()
        if not self.regions:
            return dict.fromkeys(names, self.region)
        return {name: self.regions[index % len(self.regions)] for index, name in enumerate(names)}


class FleetSpec(Model):
    """The simulated fleet: it replaces the services of the onduty config under test (a service
    of the same name there lends its `autonomy` when the fleet gives none)."""

    services: list[FleetService] = Field(min_length=1)


class RoutineDeploys(Model):
    """Harmless releases of one service at random times: a new version that breaks nothing.
    With `announce_deploys` they are announced like any release, so "a deploy came just
    before" is a clue, not proof, of a bad release."""

    service: str = Field(min_length=1)
    rate: Rate
    """Releases per hour, or N/d."""


class Scenario(Model):
    name: str = Field(min_length=1)
    seed: int
    config: str | None = None
    """The onduty config under test: a path (relative to the scenario file) or a built-in
    name (`demo`); `-c FILE` overrides it."""
    fleet: FleetSpec | None = None
    start: datetime | None = None
    duration: Duration = timedelta(hours=6)
    eval_interval: Duration = timedelta(seconds=15)
    resend_interval: Duration = timedelta(minutes=5)
    on_call: OnCall = Field(default_factory=OnCall)
    people: list[Person] = Field(default_factory=list)
    """The simulated people, when they differ: the first present one answers a page; those
    holding `on_call.role` answer approvals, in this order."""
    faults: list[FaultSpec] = Field(default_factory=list)
    control: list[ControlPeriod] = Field(default_factory=list)
    expect: Annotated[Expect, BeforeValidator(_expect_document)] = Field(default_factory=Expect)
    steady_state: SteadyState = Field(default_factory=SteadyState)
    announce_deploys: bool = False
    """Announce every release the world makes (a fault's bad release, a routine deploy) as a CD
    system does: a `DeploymentFinished` signal (labels service, version, severity info) sent
    resolved: a change record, never an incident. Off: releases happen unannounced."""
    routine_deploys: list[RoutineDeploys] = Field(default_factory=list)
    """Harmless releases, at random times drawn from the seed (skipped while a fault is active
    on the service: a deploy freeze during an incident)."""
    learning_period: Duration | None = None
    """How long a learning agent is given to learn: the lab's learning figures count the faults
    injected after it apart (`onduty sim --compare`)."""
    fault_spacing: Duration | None = None
    """Drawn faults (`count`/`rate`) at least this far from every other fault: a time closer is
    drawn again (up to 100 times), so faults rarely overlap."""

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def start_at(self) -> datetime:
        return self.start if self.start is not None else DEFAULT_START

    # ------------------------------------------------------------------ the fleet

    def apply_fleet(self, config: Config) -> Config:
        """The config with its services replaced by the scenario's fleet (the config itself
        when the scenario has none). A config service of the same name lends its autonomy."""
        if self.fleet is None:
            return config
        known = {service.name: service for service in config.services}
        services: list[Service] = []
        for spec in self.fleet.services:
            existing = known.get(spec.name)
            autonomy = spec.autonomy
            if autonomy is None:
                autonomy = existing.autonomy if existing is not None else Autonomy.ACT
            services.append(
                Service(
                    name=spec.name,
                    tier=spec.tier,
                    region=spec.home_region(),
                    autonomy=autonomy,
                    instances=spec.instance_names(),
                )
            )
        return config.model_copy(update={"services": services})

    def instance_regions(self) -> dict[str, str]:
        """Instance -> region, for the instances whose region differs from their service's."""
        found: dict[str, str] = {}
        for spec in self.fleet.services if self.fleet is not None else []:
            if spec.regions:
                found.update(spec.instance_regions())
        return found

    def dependencies(self) -> dict[str, list[str]]:
        """Service -> the services it calls (`depends_on`)."""
        if self.fleet is None:
            return {}
        return {spec.name: list(spec.depends_on) for spec in self.fleet.services}

    # ------------------------------------------------------------------ people

    def roster(self) -> list[Person]:
        """Everyone who takes part, with their own settings completed from `on_call`."""
        base = self.on_call
        people = self.people or [Person(name=name, roles=[base.role]) for name in base.approvers]
        return [
            person.model_copy(
                update={
                    "approve_after": person.approve_after
                    if person.approve_after is not None
                    else base.approve_after,
                    "acknowledge_after": person.acknowledge_after
                    if person.acknowledge_after is not None
                    else base.acknowledge_after,
                    "fix_after": person.fix_after
                    if person.fix_after is not None
                    else base.fix_after,
                    "away": person.away if person.away is not None else base.away,
                }
            )
            for person in people
        ]

    # ------------------------------------------------------------------ expectations

    def expectations(self) -> list[Expectation]:
        """`expect`, parsed (the older mapping converted)."""
        return [
            parse_expectation(text, f"expect[{index}]")
            for index, text in enumerate(self.expect.lines())
        ]

    def steady_before(self) -> list[Expectation]:
        return [
            parse_expectation(text, f"steady_state.before[{index}]", STEADY_METRICS)
            for index, text in enumerate(self.steady_state.before)
        ]

    def steady_during(self) -> list[Expectation]:
        return [
            parse_expectation(text, f"steady_state.during[{index}]", DURING_METRICS)
            for index, text in enumerate(self.steady_state.during)
        ]

    def steady_after(self) -> list[Expectation]:
        return [
            parse_expectation(text, f"steady_state.after[{index}]", _AFTER_METRICS)
            for index, text in enumerate(self.steady_state.after)
        ]

    # ------------------------------------------------------------------ faults

    def planned_faults(self, config: Config | None = None) -> list[FaultSpec]:
        """The concrete faults of a run with this scenario's seed: each fixed one as written,
        each drawn one expanded into its faults in time order. Everything random (how many,
        when, which target for a selector or `any`) comes from a generator seeded with the
        scenario's seed alone, so the same seed gives the same faults. Targets are chosen
        among the fleet's (the scenario's, else `config`'s services). Raises ConfigError when
        a selector matches nothing."""
        rng = random.Random(f"faults:{self.seed}")
        targets: _Targets | None = None
        planned: list[FaultSpec] = []
        problems: list[str] = []
        # With `fault_spacing`, drawn times keep clear of the fixed faults and of each other.
        taken = [spec.at for spec in self.faults if not spec.drawn and spec.at is not None]
        for index, spec in enumerate(self.faults):
            needs_draw = spec.fixed_target is None and not (
                spec.kind in SIGNAL_KINDS and spec.target == ANY
            )
            if needs_draw and targets is None:
                targets = _Targets.of(self, config)
            concrete = {"count": None, "rate": None, "between": None}
            times = self._draw_times(spec, rng, taken) if spec.drawn else [spec.at or timedelta(0)]
            for at in times:
                target = spec.target
                if needs_draw:
                    assert targets is not None
                    candidates = targets.candidates(spec)
                    if not candidates:
                        problems.append(
                            f"faults[{index}].target: no target of {spec.kind} matches "
                            f"{_describe_target(spec.target)}"
                        )
                        break
                    target = rng.choice(candidates)
                planned.append(spec.model_copy(update={**concrete, "at": at, "target": target}))
        if problems:
            raise ConfigError(f"scenario {self.name}", problems)
        return planned

    def _draw_times(
        self, spec: FaultSpec, rng: random.Random, taken: list[timedelta]
    ) -> list[timedelta]:
        begin, end = (
            (spec.between[0], spec.between[1])
            if spec.between is not None
            else (timedelta(0), self.duration)
        )
        span = (end - begin).total_seconds()
        if spec.count is not None:
            count = spec.count
        else:
            assert spec.rate is not None
            count = _poisson(rng, spec.rate * span / 3600.0)
        times: list[timedelta] = []
        gap = self.fault_spacing
        for _ in range(count):
            # a time in a no-fault control period (or, with `fault_spacing`, too close to
            # another fault) is drawn again
            for _attempt in range(100):
                at = begin + timedelta(seconds=int(rng.uniform(0, span)))
                if any(p.start <= at < p.end for p in self.control):
                    continue
                if gap is not None and any(abs(at - other) < gap for other in taken):
                    continue
                times.append(at)
                taken.append(at)
                break
        return sorted(times)

    def planned_deploys(self) -> list[tuple[timedelta, str]]:
        """The routine deploys of a run with this scenario's seed: (offset, service) in time
        order, drawn from a generator of their own so they never shift the faults' draws."""
        rng = random.Random(f"deploys:{self.seed}")
        hours = self.duration.total_seconds() / 3600.0
        found: list[tuple[timedelta, str]] = []
        for routine in self.routine_deploys:
            for _ in range(_poisson(rng, routine.rate * hours)):
                seconds = int(rng.uniform(0, self.duration.total_seconds()))
                found.append((timedelta(seconds=seconds), routine.service))
        return sorted(found)


_AFTER_METRICS = tuple(dict.fromkeys((*METRICS, *STEADY_METRICS)))


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method, in chunks so a large mean does not underflow)."""
    count = 0
    while mean > 0:
        chunk = min(mean, 500.0)
        mean -= chunk
        limit, product = math.exp(-chunk), rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
    return count


def _describe_target(target: str | TargetSelector) -> str:
    if isinstance(target, str):
        return repr(target)
    given = target.model_dump(exclude_none=True)
    return "{" + ", ".join(f"{key}: {value}" for key, value in given.items()) + "}"


@dataclass(frozen=True)
class _Targets:
    """What faults can be aimed at: instances (service, tier, region) and services."""

    instances: list[tuple[str, str, str, str]]
    services: list[tuple[str, str, frozenset[str]]]
    callers: dict[str, list[str]]

    @classmethod
    def of(cls, scenario: Scenario, config: Config | None) -> _Targets:
        instances: list[tuple[str, str, str, str]]
        if scenario.fleet is not None:
            instances = [
                (name, spec.name, spec.tier, region)
                for spec in scenario.fleet.services
                for name, region in spec.instance_regions().items()
            ]
        elif config is not None:
            instances = [
                (name, service.name, service.tier, service.region)
                for service in config.services
                for name in service.instances
            ]
        else:
            raise ConfigError(
                f"scenario {scenario.name}",
                ["faults: a drawn target needs the fleet: give `fleet:` or the config"],
            )
        tiers: dict[str, str] = {service: tier for _, service, tier, _ in instances}
        if config is not None and scenario.fleet is None:
            tiers.update({s.name: s.tier for s in config.services})
        services = [
            (name, tier, frozenset(r for _, s, _, r in instances if s == name))
            for name, tier in tiers.items()
        ]
        calls = scenario.dependencies()
        callers = {
            name: [caller for caller, deps in calls.items() if name in deps] for name in tiers
        }
        return cls(instances, services, callers)

    def candidates(self, spec: FaultSpec) -> list[str]:
        selector = spec.target if isinstance(spec.target, TargetSelector) else TargetSelector()

        def fits(service: str, tier: str, regions: frozenset[str]) -> bool:
            return (
                selector.service in (None, service)
                and selector.tier in (None, tier)
                and (selector.region is None or selector.region in regions)
            )

        if spec.kind in INSTANCE_KINDS:
            return [n for n, s, t, r in self.instances if fits(s, t, frozenset({r}))]
        if spec.kind in REGION_KINDS:
            regions = [r for _, s, t, r in self.instances if fits(s, t, frozenset({r}))]
            return sorted(set(regions))
        services = [name for name, tier, regions in self.services if fits(name, tier, regions)]
        if spec.kind == "dependency_outage":
            services = [name for name in services if self.callers.get(name)]
        if spec.kind in SERVICE_KINDS or spec.kind in SIGNAL_KINDS:
            return services
        return []


def scenario_problems(scenario: Scenario) -> list[str]:
    """Checks across fields, each problem naming the field it is about."""
    problems: list[str] = []
    zero = timedelta(0)
    for name in ("duration", "eval_interval", "resend_interval"):
        if getattr(scenario, name) <= zero:
            problems.append(f"{name}: must be longer than zero")
    if scenario.eval_interval > zero and scenario.resend_interval < scenario.eval_interval:
        problems.append("resend_interval: must not be shorter than eval_interval")
    problems += _fleet_problems(scenario)
    problems += _expectation_problems(scenario)
    if scenario.fault_spacing is not None and scenario.fault_spacing <= zero:
        problems.append("fault_spacing: must be longer than zero")
    learning = scenario.learning_period
    if learning is not None and not zero < learning < scenario.duration:
        problems.append(
            f"learning_period: must be longer than zero and shorter than the scenario "
            f"({format_duration(scenario.duration)})"
        )
    fleet = {spec.name for spec in scenario.fleet.services} if scenario.fleet is not None else None
    for index, routine in enumerate(scenario.routine_deploys):
        if fleet is not None and routine.service not in fleet:
            problems.append(
                f"routine_deploys[{index}].service: no service {routine.service!r} in the fleet "
                f"(services: {', '.join(sorted(fleet))})"
            )
    for index, period in enumerate(scenario.control):
        where = f"control[{index}]"
        if period.end <= period.start:
            problems.append(f"{where}.to: must be after `from`")
        elif period.end > scenario.duration:
            problems.append(
                f"{where}.to: {format_duration(period.end)} is after the end of the scenario "
                f"({format_duration(scenario.duration)})"
            )
    for index, fault in enumerate(scenario.faults):
        where = f"faults[{index}]"
        problems += _timing_problems(scenario, fault, where)
        if fault.at is not None and fault.at >= scenario.duration:
            problems.append(
                f"{where}.at: {format_duration(fault.at)} is not before the end of the scenario "
                f"({format_duration(scenario.duration)})"
            )
        if fault.kind not in _TIMED_KINDS and fault.duration is not None:
            problems.append(
                f"{where}.duration: {fault.kind} takes no duration (it lasts until healed)"
            )
        for name, kinds in _ONLY.items():
            if getattr(fault, name) is not None and fault.kind not in kinds:
                problems.append(f"{where}.{name}: only {' and '.join(kinds)} faults take a {name}")
        for name in ("duration", "period", "delay"):
            value = getattr(fault, name)
            if value is not None and value <= zero:
                problems.append(f"{where}.{name}: must be longer than zero")
        if fault.drawn:
            continue
        begins, ends = fault.window()
        for number, period in enumerate(scenario.control):
            inside = period.start <= begins < period.end
            overlaps = ends is not None and begins < period.end and ends > period.start
            if inside or overlaps:
                problems.append(
                    f"{where}.at: the {fault.kind} at {format_duration(begins)} falls in the "
                    f"no-fault control period control[{number}] "
                    f"({format_duration(period.start)} to {format_duration(period.end)})"
                )
    return problems


def _timing_problems(scenario: Scenario, fault: FaultSpec, where: str) -> list[str]:
    """`at` for a fixed fault; `count` or `rate` (and perhaps `between`) for drawn ones."""
    problems: list[str] = []
    if fault.count is not None and fault.rate is not None:
        problems.append(f"{where}.rate: give `count` or `rate`, not both")
    if fault.drawn and fault.at is not None:
        problems.append(
            f"{where}.at: a drawn fault (`count`/`rate`) has no `at`; use `between: [from, to]`"
        )
    if not fault.drawn and fault.at is None:
        problems.append(
            f"{where}.at: give `at` (a fixed time) or `count`/`rate` (times drawn at random)"
        )
    if fault.between is not None:
        begin, end = fault.between
        if not fault.drawn:
            problems.append(f"{where}.between: only a drawn fault (`count`/`rate`) takes it")
        elif end <= begin:
            problems.append(f"{where}.between: the second offset must be after the first")
        elif end > scenario.duration:
            problems.append(
                f"{where}.between: {format_duration(end)} is after the end of the scenario "
                f"({format_duration(scenario.duration)})"
            )
    return problems


def _expectation_problems(scenario: Scenario) -> list[str]:
    problems: list[str] = []
    for parse in (scenario.steady_before, scenario.steady_during, scenario.steady_after):
        try:
            parse()
        except ExpectationError as error:
            problems.append(str(error))
    for index, text in enumerate(scenario.expect.expressions):
        try:
            parse_expectation(text, f"expect[{index}]")
        except ExpectationError as error:
            problems.append(str(error))
    return problems


def _fleet_problems(scenario: Scenario) -> list[str]:
    if scenario.fleet is None:
        return []
    problems: list[str] = []
    names: dict[str, int] = {}
    owners: dict[str, str] = {}
    for index, spec in enumerate(scenario.fleet.services):
        where = f"fleet.services[{index}]"
        if spec.name in names:
            problems.append(
                f"{where}.name: {spec.name!r} is already used by fleet.services[{names[spec.name]}]"
            )
        names.setdefault(spec.name, index)
        for name in spec.instance_names():
            if name in owners:
                problems.append(
                    f"{where}.instances: {name!r} already belongs to service {owners[name]!r}"
                )
            owners.setdefault(name, spec.name)
        if spec.region and spec.regions:
            problems.append(f"{where}.regions: give `region` or `regions`, not both")
    for index, spec in enumerate(scenario.fleet.services):
        for position, dependency in enumerate(spec.depends_on):
            where = f"fleet.services[{index}].depends_on[{position}]"
            if dependency == spec.name:
                problems.append(f"{where}: a service cannot depend on itself")
            elif dependency not in names:
                problems.append(
                    f"{where}: no service {dependency!r} in the fleet "
                    f"(services: {', '.join(names)})"
                )
    return problems


def parse_scenario(document: Any, source: str = "<scenario>") -> Scenario:
    """Validate a parsed document; raise ConfigError naming every bad field."""
    scenario = validate_document(Scenario, document, source)
    problems = scenario_problems(scenario)
    if problems:
        raise ConfigError(source, problems)
    return scenario


def parse_scenario_text(text: str, source: str = "<scenario>") -> Scenario:
    """Validate a scenario's YAML text; each problem names its field and the line it is on."""
    document = read_yaml(text, source)
    try:
        return parse_scenario(document, source)
    except ConfigError as error:
        nodes = yaml.compose(text, Loader=yaml.SafeLoader)
        error.problems = [_placed(problem, nodes) for problem in error.problems]
        error.args = (f"{source}: " + "; ".join(error.problems),)
        raise


def _placed(problem: str, nodes: yaml.Node | None) -> str:
    """`faults[1].at: ...` -> `faults[1].at: ... (line 12)`."""
    path, sep, _ = problem.partition(": ")
    loc = loc_of(path) if sep else None
    line = line_of(nodes, loc) if loc else None
    return f"{problem} (line {line})" if line else problem


def builtin_scenarios() -> list[str]:
    """Names of the scenarios shipped with onduty."""
    folder = resources.files("onduty.sim").joinpath("scenarios")
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml") and not entry.name.endswith("-config.yaml")
    )


def read_builtin(filename: str) -> str:
    """The text of a file shipped in `onduty/sim/scenarios/` (e.g. 'demo-config.yaml')."""
    entry = resources.files("onduty.sim").joinpath("scenarios", filename)
    if not entry.is_file():
        raise ConfigError(
            f"builtin:{filename}",
            [f"(top level): no such built-in file; scenarios: {', '.join(builtin_scenarios())}"],
        )
    return entry.read_text(encoding="utf-8")


def load_scenario(path_or_builtin_name: str | Path) -> Scenario:
    """Load a scenario from a YAML file, or a built-in one by name ('demo')."""
    candidate = Path(path_or_builtin_name)
    text_name = str(path_or_builtin_name)
    is_name = not isinstance(path_or_builtin_name, Path) and "/" not in text_name
    is_name = is_name and not text_name.endswith((".yaml", ".yml")) and not candidate.exists()
    if is_name:
        if text_name not in builtin_scenarios():
            raise ConfigError(
                text_name,
                [
                    "(top level): not a file and not a built-in scenario; built-in scenarios: "
                    + ", ".join(builtin_scenarios())
                ],
            )
        source = f"builtin:{text_name}"
        return parse_scenario_text(read_builtin(f"{text_name}.yaml"), source)
    try:
        text = candidate.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(text_name, [f"cannot read the file: {error.strerror or error}"]) from None
    return parse_scenario_text(text, text_name)


def load_builtin_config(name: str = "demo") -> Config:
    """The onduty config a built-in scenario runs against (`<name>-config.yaml`)."""
    source = f"builtin:{name}-config.yaml"
    return parse_config(read_yaml(read_builtin(f"{name}-config.yaml"), source), source)
