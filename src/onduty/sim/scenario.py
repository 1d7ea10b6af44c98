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

import re
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)

from onduty.config import (
    Config,
    ConfigError,
    Model,
    format_duration,
    parse_config,
    parse_duration,
    read_yaml,
    validate_document,
)
from onduty.sim.faults import DEFAULT_DURATIONS

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

FaultKind = Literal["instance_crash", "bad_deploy", "memory_leak", "dependency_latency", "flapping"]

_TIMED_KINDS = frozenset(DEFAULT_DURATIONS)


class FaultSpec(Model):
    """One fault to inject, `at` an offset from the scenario start."""

    at: Duration
    kind: FaultKind
    target: str = Field(min_length=1)
    duration: Duration | None = None
    period: Duration | None = None

    def window(self) -> tuple[timedelta, timedelta | None]:
        """(start, end) offsets of the fault; end is None when only an action ends it."""
        default = DEFAULT_DURATIONS.get(self.kind)
        if default is None:
            return self.at, None
        return self.at, self.at + (self.duration if self.duration is not None else default)


class ControlPeriod(Model):
    """A stretch of virtual time with no fault: any incident opened in it is a false alarm."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: Duration = Field(alias="from")
    end: Duration = Field(alias="to")


class OnCall(Model):
    """How the simulated on-call human behaves: approves requests and acknowledges pages
    after a delay (None: never)."""

    approve_after: Duration | None = timedelta(minutes=2)
    acknowledge_after: Duration | None = timedelta(minutes=5)
    # A paged human fixes what onduty handed over (restart, roll back) this long after the page.
    fix_after: Duration | None = timedelta(minutes=20)
    # Who answers approvals, in order (two of them for a two-person rule), and in which role.
    approvers: list[str] = Field(default_factory=lambda: ["alice", "bob"], min_length=1)
    role: str = "approver"


class Expect(Model):
    """What a run of the scenario should achieve; any subset may be given."""

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


class Scenario(Model):
    name: str = Field(min_length=1)
    seed: int
    start: datetime | None = None
    duration: Duration = timedelta(hours=6)
    eval_interval: Duration = timedelta(seconds=15)
    resend_interval: Duration = timedelta(minutes=5)
    on_call: OnCall = Field(default_factory=OnCall)
    faults: list[FaultSpec] = Field(default_factory=list)
    control: list[ControlPeriod] = Field(default_factory=list)
    expect: Expect = Field(default_factory=Expect)

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def start_at(self) -> datetime:
        return self.start if self.start is not None else DEFAULT_START


def scenario_problems(scenario: Scenario) -> list[str]:
    """Checks across fields, each problem naming the field it is about."""
    problems: list[str] = []
    zero = timedelta(0)
    for name in ("duration", "eval_interval", "resend_interval"):
        if getattr(scenario, name) <= zero:
            problems.append(f"{name}: must be longer than zero")
    if scenario.eval_interval > zero and scenario.resend_interval < scenario.eval_interval:
        problems.append("resend_interval: must not be shorter than eval_interval")
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
        if fault.at >= scenario.duration:
            problems.append(
                f"{where}.at: {format_duration(fault.at)} is not before the end of the scenario "
                f"({format_duration(scenario.duration)})"
            )
        if fault.kind not in _TIMED_KINDS and fault.duration is not None:
            problems.append(
                f"{where}.duration: {fault.kind} takes no duration (it lasts until healed)"
            )
        if fault.kind != "flapping" and fault.period is not None:
            problems.append(f"{where}.period: only a flapping fault takes a period")
        for name in ("duration", "period"):
            value = getattr(fault, name)
            if value is not None and value <= zero:
                problems.append(f"{where}.{name}: must be longer than zero")
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


def parse_scenario(document: Any, source: str = "<scenario>") -> Scenario:
    """Validate a parsed document; raise ConfigError naming every bad field."""
    scenario = validate_document(Scenario, document, source)
    problems = scenario_problems(scenario)
    if problems:
        raise ConfigError(source, problems)
    return scenario


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
        return parse_scenario(read_yaml(read_builtin(f"{text_name}.yaml"), source), source)
    try:
        text = candidate.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(text_name, [f"cannot read the file: {error.strerror or error}"]) from None
    return parse_scenario(read_yaml(text, text_name), text_name)


def load_builtin_config(name: str = "demo") -> Config:
    """The onduty config a built-in scenario runs against (`<name>-config.yaml`)."""
    source = f"builtin:{name}-config.yaml"
    return parse_config(read_yaml(read_builtin(f"{name}-config.yaml"), source), source)
