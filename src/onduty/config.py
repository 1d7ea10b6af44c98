"""The onduty.yaml model: validated, with errors that name the field and the reason.

The whole validated configuration travels into the log as a `PolicyActivated` event, named by
the content hash of its canonical JSON; the core reads its configuration only from there, so a
replay always runs against the configuration that was live at the time.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cel
import jinja2
import yaml
from cronsim import CronSim, CronSimError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from onduty.act.specs import (
    ActuatorConfigError,
    AlertmanagerSilenceSpec,
    HttpSpec,
    ShellSpec,
    SupervisorSpec,
    parse_actuators,
)
from onduty.api.access_config import AccessConfig, parse_access
from onduty.correlate.inhibition import InhibitRule
from onduty.escalate.specs import AnyChannel, ChannelConfigError, parse_channels
from onduty.events import to_json
from onduty.sense.specs import HttpProbe, PrometheusQuery, parse_sources

# Duration and the validation helpers live below every layer (onduty.values); they are
# re-exported here for the modules that still import them from the configuration.
from onduty.values import (
    Duration,
    FieldProblems,
    SectionProblems,
    describe_validation_error,
    format_duration,
    format_seconds,
    line_of,
    loc_of,
    parse_duration,
)

__all__ = [
    "GUARDRAIL_KINDS",
    "Approvals",
    "Autonomy",
    "AutonomyLevel",
    "BlastRadius",
    "Breaker",
    "Concurrency",
    "Condition",
    "Config",
    "ConfigError",
    "Correlation",
    "Duration",
    "Escalation",
    "Freeze",
    "FreezeRange",
    "Guardrail",
    "HostName",
    "Model",
    "Network",
    "OutageBrake",
    "Policy",
    "ProbeCheck",
    "PrometheusCheck",
    "RateLimit",
    "Runbook",
    "ServerSettings",
    "Service",
    "Step",
    "Template",
    "Tier",
    "Verify",
    "describe_validation_error",
    "field_names",
    "format_duration",
    "format_seconds",
    "load_config",
    "model_at",
    "parse_config",
    "parse_config_text",
    "parse_duration",
    "policy_version",
    "sections",
]


class Autonomy(IntEnum):
    """Progressive empowerment, least to most: record, propose, act after approval, act."""

    OBSERVE = 0
    SUGGEST = 1
    APPROVE = 2
    ACT = 3

    @classmethod
    def parse(cls, value: Any) -> Autonomy:
        if isinstance(value, Autonomy):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            raise ValueError(
                f"unknown autonomy level {value!r}; expected one of observe, suggest, approve, act"
            ) from None


AutonomyLevel = Annotated[
    Autonomy,
    BeforeValidator(Autonomy.parse),
    PlainSerializer(lambda level: level.name.lower(), return_type=str),
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Service(Model):
    """A service onduty looks after. An alert belongs to the service its `service` label names;
    without one, to the service whose `instances` list its `instance` label (or else its `job`
    label); else to no service, and acting on what onduty cannot place is never autonomous (it
    counts as autonomy `suggest`: proposed to humans, not run)."""

    name: str = Field(min_length=1)
    """The service's name: what a signal's `service` label names, and what `service.name` is in
    conditions."""
    tier: Literal["critical", "high", "standard", "low"] = "standard"
    """How critical it is (`critical`, `high`, `standard`, `low`); conditions read it as
    `service.tier`."""
    region: str = ""
    """Where it runs, free text; conditions read it as `service.region`."""
    autonomy: AutonomyLevel = Autonomy.SUGGEST
    """How far onduty may go on its own: `observe` (record only), `suggest` (propose to humans),
    `approve` (act once a human approves), `act` (act within the guardrails). `onduty autonomy
    SERVICE LEVEL` changes it on a running server."""
    instances: list[str] = Field(default_factory=list)
    """Its instances (host or program names). An alert without a `service` label whose `instance`
    (or `job`) label is one of them belongs to this service; an action's target must be one of them
    (or the service itself), else the `known-target` guardrail refuses it. Each instance belongs to
    one service."""

    @field_validator("instances")
    @classmethod
    def _unique(cls, instances: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in instances:
            if not name:
                raise ValueError("an instance name cannot be empty")
            if name in seen:
                raise ValueError(f"instance {name!r} is listed twice")
            seen.add(name)
        return instances


class Correlation(Model):
    group_by: list[str] = Field(default_factory=lambda: ["service", "alertname"], min_length=1)
    """The labels whose values make one incident: signals with the same values (a missing label
    counts as empty) join the open incident of that group, as in Alertmanager's `group_by`."""
    group_wait: Duration = timedelta(seconds=0)
    """How long a new incident waits for more signals of its group before onduty plans what to
    do."""
    flap_threshold: int = Field(default=4, ge=2)
    """A signal that changes state (firing, resolved) this many times within `flap_window` is
    flapping: automatic actions on its incident pause and a human is paged."""
    flap_window: Duration = timedelta(minutes=15)
    """The window `flap_threshold` counts state changes in; a flapping incident closes only once
    calm for a whole window."""
    resolve_timeout: Duration | None = None
    """A firing signal not heard of for this long counts as resolved (for sources that never send a
    resolution); unset: wait for the source to say so."""
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    """Alerts that explain others: while a source alert fires, matching target alerts with the same
    `equal` labels are muted (recorded, never acted on), as in Alertmanager."""


def _check_condition(expression: str) -> str:
    """A CEL condition must compile; the message keeps the compiler's position."""
    try:
        cel.compile(expression)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"not a valid CEL expression: {error}") from None
    return expression


def _check_template(text: str) -> str:
    try:
        _TEMPLATE_SYNTAX.parse(text)
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(f"not a valid template (line {error.lineno}): {error.message}") from None
    return text


_TEMPLATE_SYNTAX = jinja2.Environment(autoescape=False)
Condition = Annotated[str, Field(min_length=1), AfterValidator(_check_condition)]
Template = Annotated[str, Field(min_length=1), AfterValidator(_check_template)]


class Step(Model):
    action: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_.-]*$")
    """The action's name (`process.restart`): routed to the actuator whose `action` names it or its
    family (`process.*`)."""
    target: Template
    """A template (see "Template variables") rendering what the action acts on, usually `{{
    signal.labels.instance }}`; a target that renders empty or is not in the inventory is refused by
    `known-target`."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Extra parameters handed to the actuator as they are (actuator templates read them as
    `params`)."""
    timeout: Duration = timedelta(seconds=30)
    """How long the action may run before its outcome counts as unknown (the actuator's own
    `timeout` applies when shorter)."""


_OPS = Literal[">", ">=", "<", "<=", "==", "!="]


class ProbeCheck(Model):
    """Verified when a GET of `url` answers one of `expect_status`."""

    url: str = Field(pattern=r"^https?://")
    """The URL to GET (http or https)."""
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    """The statuses that mean healthy."""
    interval: Duration = timedelta(seconds=5)
    """How often the probe runs while verifying."""
    timeout: Duration = timedelta(seconds=5)
    """The limit of one probe."""


class PrometheusCheck(Model):
    """Verified when every series of `query` compares true with `threshold` (and there is at
    least one)."""

    url: str = Field(pattern=r"^https?://")
    """The Prometheus base URL."""
    query: str = Field(min_length=1)
    """An instant PromQL query."""
    op: _OPS
    """How each series' value is compared with `threshold`: `>`, `>=`, `<`, `<=`, `==`, `!=`."""
    threshold: float
    """The value compared with."""
    interval: Duration = timedelta(seconds=15)
    """How often the query runs while verifying."""
    timeout: Duration = timedelta(seconds=10)
    """The limit of one query."""


class Verify(Model):
    """How an action is verified, within `signal_resolved_within`: by the incident's signals
    resolving, or — when given — by an HTTP probe passing or a Prometheus query holding."""

    signal_resolved_within: Duration = timedelta(minutes=5)
    """The verification window: the action is verified when the incident's signals resolve (or the
    check passes) within it."""
    probe: ProbeCheck | None = None
    """Verify by an HTTP probe instead of waiting for the signals."""
    prometheus: PrometheusCheck | None = None
    """Verify by a Prometheus query instead of waiting for the signals."""

    @model_validator(mode="after")
    def _one_check(self) -> Verify:
        if self.probe is not None and self.prometheus is not None:
            raise ValueError("give at most one of probe and prometheus")
        return self

    def check(self) -> dict[str, Any] | None:
        """The configured check as plain data for the shell, with its kind."""
        if self.probe is not None:
            return {"kind": "probe", **self.probe.model_dump(mode="json")}
        if self.prometheus is not None:
            return {"kind": "prometheus", **self.prometheus.model_dump(mode="json")}
        return None


class Runbook(Model):
    name: str = Field(min_length=1)
    """The runbook's name (unique): recorded with each proposal, and what `action.runbook` is in
    guardrail conditions."""
    when: Condition
    """A CEL condition over `signal`, `incident`, `service` and `now` (see "CEL variables"): the
    runbook proposes its steps for incidents where it is true."""
    do: list[Step] = Field(min_length=1)
    """The steps, run in order, each an action on a target."""
    verify: Verify = Field(default_factory=Verify)
    """How the result is checked; an action not verified in time is undone and escalated."""
    undo: list[Step] = Field(default_factory=list)
    """Steps that reverse `do`, run in reverse order when verification fails."""
    priority: int = 0
    """When several runbooks match, the highest priority wins (ties: the first listed)."""
    autonomy: AutonomyLevel | None = None
    """At most this autonomy for this runbook's actions, whatever the service's level (a cap, never
    a raise)."""
    excludes: list[str] = Field(default_factory=list)
    """Runbooks that must not act on the same target while this one does (and vice versa)."""


class RateLimit(Model):
    action: str = "*"
    """The action counted (`*`: every action; `process.*`: a family)."""
    max: int = Field(ge=0)
    """How many are allowed within `per`."""
    per: Duration
    """The sliding window."""
    key: Literal["target", "service", "runbook"] = "target"
    """What is counted separately: each `target`, each `service` or each `runbook`."""


class Concurrency(Model):
    max: int | None = Field(default=None, ge=0)
    """At most this many actions in flight per scope."""
    max_fraction: float | None = Field(default=None, gt=0, le=1)
    """At most this fraction of the scope's instances acted on at once."""
    scope: Literal["service"] = "service"
    """What the limit is counted over: `service`."""

    @model_validator(mode="after")
    def _one_limit(self) -> Concurrency:
        if (self.max is None) == (self.max_fraction is None):
            raise ValueError("give exactly one of max or max_fraction")
        return self


class BlastRadius(Model):
    """At most `max` (or `max_fraction` of a service's instances) affected at once, counting
    instances already down and those acted on within `window`, like a PodDisruptionBudget's
    `minAvailable`. An action on the whole service affects all its instances."""

    action: str = "*"
    """The action counted (`*`: every action)."""
    max: int | None = Field(default=None, ge=0)
    """At most this many instances affected."""
    max_fraction: float | None = Field(default=None, gt=0, le=1)
    """At most this fraction of the service's instances affected (rounded down)."""
    window: Duration = timedelta(minutes=10)
    """Instances acted on within this window still count as affected."""
    down_alerts: list[str] = Field(
        default_factory=lambda: ["InstanceDown", "TargetDown", "ProbeFailed"]
    )
    """Instances with one of these alerts firing are already down: they count as affected, and
    acting on them adds no disruption."""

    @model_validator(mode="after")
    def _one_limit(self) -> BlastRadius:
        if (self.max is None) == (self.max_fraction is None):
            raise ValueError("give exactly one of max or max_fraction")
        return self


class OutageBrake(Model):
    """When more than `max_fraction` of the services (or instances) are alerting at once,
    autonomous actions pause and incidents go to humans: no fixing in the middle of an outage."""

    max_fraction: float = Field(gt=0, le=1)
    """Brake when more than this fraction is alerting."""
    of: Literal["services", "instances"] = "services"
    """What the fraction is of: `services` or `instances`."""


class FreezeRange(Model):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )

    start: datetime = Field(alias="from")
    """When the freeze starts (`from`, with a UTC offset)."""
    end: datetime = Field(alias="to")
    """When it ends (`to`, with a UTC offset)."""


class Freeze(Model):
    """No autonomous actions during fixed ranges, or from each `cron` occurrence for
    `duration`, in `timezone` (cron is read in local time, so DST is handled)."""

    ranges: list[FreezeRange] = Field(default_factory=list)
    """Fixed ranges (`from`, `to`, with a UTC offset)."""
    cron: str | None = None
    """A cron expression (5 fields) for recurring freezes, read in `timezone`."""
    duration: Duration | None = None
    """How long each recurring freeze lasts."""
    timezone: str = "UTC"
    """The IANA time zone `cron` is read in."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronSim(value, datetime(2026, 1, 1, tzinfo=UTC))
            except CronSimError as error:
                raise ValueError(f"not a valid cron expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> Freeze:
        if (self.cron is None) != (self.duration is None):
            raise ValueError("a recurring freeze needs both cron and duration")
        if self.cron is None and not self.ranges:
            raise ValueError("give ranges, or cron with duration")
        for index, span in enumerate(self.ranges):
            if span.start.tzinfo is None or span.end.tzinfo is None:
                raise ValueError(f"ranges[{index}]: times need a UTC offset")
            if span.end <= span.start:
                raise ValueError(f"ranges[{index}]: `to` must be after `from`")
        return self


GUARDRAIL_KINDS = ("rate", "concurrent", "blast", "outage", "freeze")


class Guardrail(Model):
    """One rule. A kind (rate, concurrent, blast, outage, freeze) with an optional `when` that
    narrows where it applies, or a bare `when` condition with an `effect`."""

    name: str = Field(min_length=1)
    """The rule's name (unique): recorded with every verdict it gives."""
    rate: RateLimit | None = None
    """At most `max` actions per `per` (a rate limit)."""
    concurrent: Concurrency | None = None
    """At most this many actions in flight at once."""
    blast: BlastRadius | None = None
    """At most this many (or this fraction of) a service's instances affected at once (a blast
    radius)."""
    outage: OutageBrake | None = None
    """Pause autonomous actions when too much is alerting at once (an outage brake)."""
    freeze: Freeze | None = None
    """No autonomous actions during these times (a change freeze)."""
    when: Condition | None = None
    """A CEL condition (see "CEL variables"): with a kind, where the rule applies; alone, when
    `effect` applies."""
    effect: Literal["allow", "deny", "require_approval"] | None = None
    """For a bare `when` rule: `allow`, `deny` or `require_approval` when the condition holds."""

    @property
    def kind(self) -> str:
        return next((k for k in GUARDRAIL_KINDS if getattr(self, k) is not None), "condition")

    @model_validator(mode="after")
    def _one_kind(self) -> Guardrail:
        kinds = [k for k in GUARDRAIL_KINDS if getattr(self, k) is not None]
        if not kinds and self.effect is not None and self.when is None:
            raise ValueError("a condition guardrail needs `when`")
        if len(kinds) > 1 or (not kinds and (self.when is None or self.effect is None)):
            raise ValueError(
                "a guardrail is exactly one of: rate, concurrent, blast, outage, freeze, or a "
                "`when` condition with an `effect`"
            )
        if kinds and self.effect is not None:
            raise ValueError(f"`effect` is for condition guardrails; a {kinds[0]} rule denies")
        return self


class Approvals(Model):
    timeout: Duration = timedelta(minutes=10)
    """How long a request waits for its answers."""
    on_timeout: Literal["deny", "escalate"] = "deny"
    """What an unanswered request becomes: `deny` (the safe default), or `escalate`: page the next
    tier while still denying the action."""
    notify: list[str] = Field(default_factory=lambda: ["on-call"])
    """The channels an approval request is sent to."""
    required: int = Field(default=1, ge=1, le=5)
    """Distinct people who must approve (2: the two-person rule)."""
    roles: list[str] = Field(default_factory=list)
    """Roles allowed to approve; empty: anyone who may answer approvals."""


class Breaker(Model):
    """Per action and target: after `failures` consecutive failures (or unknown outcomes) the
    breaker opens and proposals escalate instead of acting; after `cooldown` one trial may go
    ahead (half-open); a success closes it, a failure opens it again."""

    failures: int = Field(default=3, ge=1)
    """Consecutive failures (or unknown outcomes) that open the breaker."""
    cooldown: Duration = timedelta(minutes=15)
    """How long it stays open before one trial may go ahead."""


class Policy(Model):
    guardrails: list[Guardrail] = Field(default_factory=list)
    """The rules every proposal passes, besides the built-in `known-target` and `autonomy`; the most
    restrictive verdict wins (deny > require approval > allow)."""
    approvals: Approvals = Field(default_factory=Approvals)
    """How approvals are asked for and answered."""
    breaker: Breaker = Field(default_factory=Breaker)
    """The circuit breaker per action and target."""


class Tier(Model):
    """Who is paged, through which channels (in fallback order), and how long to wait for an
    acknowledgement before the next tier; the last tier repeats every `wait` until someone
    acknowledges (the incident is then overdue)."""

    notify: list[str] = Field(min_length=1)
    """The channels paged, in fallback order (the next is tried when one fails). A name that is no
    configured channel pages nobody (`onduty config check` warns)."""
    wait: Duration = timedelta(minutes=5)
    """How long to wait for an acknowledgement before paging the next tier (the last tier repeats
    every `wait`)."""


class Escalation(Model):
    default: list[Tier] = Field(default_factory=lambda: [Tier(notify=["on-call"])], min_length=1)
    """The tiers of every service without its own."""
    services: dict[str, list[Tier]] = Field(default_factory=dict)
    """Escalation policies of particular services; the others use `default`."""
    repeat_last: int = Field(default=3, ge=0)
    """How many times the last tier is paged again while nobody acknowledges."""

    def tiers(self, service: str | None) -> list[Tier]:
        return self.services.get(service or "", self.default) or self.default


def _check_sources(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pollers (HTTP probes, Prometheus queries) are validated by the sense layer's models."""
    try:
        parse_sources(raw)
    except ValidationError as error:
        raise SectionProblems(describe_validation_error(error, prefix="sources")) from None
    return raw


def _check_actuators(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Actuators are validated by the act layer's models (names the field and the reason)."""
    try:
        parse_actuators(raw)
    except ActuatorConfigError as error:
        raise SectionProblems(error.problems) from None
    return raw


def _check_channels(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Notification channels are validated by the escalate layer's models."""
    try:
        parse_channels(raw)
    except ChannelConfigError as error:
        raise SectionProblems(error.problems) from None
    return raw


def _check_access(raw: dict[str, Any]) -> dict[str, Any]:
    """Access control (tokens, roles, ingest secrets) is validated by the API layer's models."""
    try:
        AccessConfig.model_validate(raw or {})
    except ValidationError as error:
        raise SectionProblems(describe_validation_error(error, prefix="access")) from None
    parse_access(raw)  # what else the API layer checks; raises ValueError naming the field
    return raw


_HOST_NAME = re.compile(
    r"^(\*|(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*)$"
)


def _check_host(value: str) -> str:
    """A host name (`onduty.example.com`), a pattern (`*.example.com`, or `*` for any), or an
    IP address (`10.0.0.5`, `::1`, `[::1]`); never a port or a scheme."""
    import ipaddress

    text = value.strip().lower().rstrip(".")
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        if not _HOST_NAME.match(text):
            raise ValueError(
                f"{value!r} is not a host name (give a name such as onduty.example.com, a "
                "pattern such as *.example.com, or an IP address; no scheme and no port)"
            ) from None
        return text
    return f"[{address}]" if address.version == 6 else str(address)


def _check_network(value: str) -> str:
    """An address or a CIDR block (`10.0.0.0/8`, `::1`)."""
    import ipaddress

    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or a CIDR block") from None


HostName = Annotated[str, AfterValidator(_check_host)]
Network = Annotated[str, AfterValidator(_check_network)]


class ServerSettings(Model):
    """How `onduty serve` meets the network. Read when it starts; a reload does not change it."""

    allowed_hosts: list[HostName] = Field(default_factory=list)
    """Host names answered besides the loopback names, the bind address and IP addresses."""
    trusted_proxies: list[Network] = Field(default_factory=list)
    """Peers whose X-Forwarded-For / X-Forwarded-Proto are believed; none by default."""
    body_timeout: Duration = timedelta(seconds=10)
    """A request body must arrive within this long of its headers, else 408."""
    max_unauthenticated: int = Field(default=64, ge=1)
    """Bodies read at once before their sender is known (HMAC signatures, PagerDuty routing
    keys); past it, 503 with Retry-After."""
    shutdown_timeout: Duration = timedelta(seconds=10)
    """After SIGTERM, how long in-flight requests may take before what is left is closed."""

    @field_validator("body_timeout", "shutdown_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value


class Config(Model):
    store: str = "sqlite:///onduty.db"
    """Where the event log lives: `sqlite:///path/to/file.db` (a path relative to the working
    directory), or a plain path. `onduty serve --store` overrides it."""
    bus: str = "memory"
    """How inputs reach the core: `memory` (in the process; the default)."""
    sources: Annotated[list[dict[str, Any]], AfterValidator(_check_sources)] = Field(
        default_factory=list
    )
    """Pollers that turn what they observe into signals (`http_probe`, `prometheus`): see "sources"
    below."""
    actuators: Annotated[list[dict[str, Any]], AfterValidator(_check_actuators)] = Field(
        default_factory=list
    )
    """What carries out the runbooks' actions, routed by action name (`process.restart`) or family
    (`process.*`): see "actuators" below. An action no actuator provides is recorded as failed
    (`onduty config check` warns)."""
    channels: Annotated[list[dict[str, Any]], AfterValidator(_check_channels)] = Field(
        default_factory=list
    )
    """Where people are paged (`webhook`, `slack`, `email`, `pagerduty`), by the names the
    escalation tiers use: see "channels" below."""
    access: Annotated[dict[str, Any], AfterValidator(_check_access)] = Field(default_factory=dict)
    """Who may do what over HTTP (tokens, roles, ingest credentials): see "access" below. Without
    tokens `serve` listens on loopback only."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    """How `onduty serve` meets the network."""
    snapshot_every: int = Field(default=10_000, ge=1)
    """Save a snapshot of the core's state every this many events; a restart folds at most this many
    events after the newest trusted one (snapshots cost the core thread time)."""
    services: list[Service] = Field(default_factory=list)
    """The services onduty looks after and their instances: how alerts are placed, how autonomous
    onduty may be."""
    correlation: Correlation = Field(default_factory=Correlation)
    """How signals become incidents: grouping, waiting, flapping, inhibition, timeouts."""
    runbooks: list[Runbook] = Field(default_factory=list)
    """What to do about an incident: a CEL condition on its signal, the steps, how to verify them
    and how to undo them."""
    policy: Policy = Field(default_factory=Policy)
    """The guardrails every proposed action passes, the approvals and the circuit breaker."""
    escalation: Escalation = Field(default_factory=Escalation)
    """Who is paged when a human must decide, in tiers, until someone acknowledges."""

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems = [
            *_unique_names("services", [s.name for s in self.services]),
            *_unique_names("runbooks", [r.name for r in self.runbooks]),
            *_unique_names("policy.guardrails", [g.name for g in self.policy.guardrails]),
        ]
        owners: dict[str, str] = {}
        for index, service in enumerate(self.services):
            for position, instance in enumerate(service.instances):
                if instance in owners:
                    problems.append(
                        f"services[{index}].instances[{position}]: {instance!r} already belongs "
                        f"to service {owners[instance]!r}"
                    )
                else:
                    owners[instance] = service.name
        if problems:
            raise FieldProblems(problems)
        return self

    def policy_document(self) -> dict[str, Any]:
        """What the core decides by: everything except the shell's own settings (where the log
        lives, the bus, the pollers that feed it)."""
        return self.model_dump(
            mode="json",
            exclude={"store", "bus", "sources", "actuators", "channels", "access", "server"},
        )

    @property
    def version(self) -> str:
        return policy_version(self.policy_document())


def policy_version(document: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(to_json(document)).hexdigest()[:16]


def _unique_names(where: str, names: list[str]) -> list[str]:
    first: dict[str, int] = {}
    problems = []
    for index, name in enumerate(names):
        if name in first:
            problems.append(
                f"{where}[{index}].name: the name {name!r} is already used by "
                f"{where}[{first[name]}]"
            )
        else:
            first[name] = index
    return problems


class ConfigError(ValueError):
    """A configuration that cannot be used; `problems` name each field and its reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def parse_config(document: Any, source: str = "<config>") -> Config:
    """Validate a parsed document; raise ConfigError naming every bad field."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(source, ["(top level): expected a mapping of settings"])
    try:
        config = Config.model_validate(document)
    except ValidationError as error:
        raise ConfigError(source, describe_validation_error(error)) from None
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file (moving to `onduty.configfile.load_config`)."""
    from onduty.configfile import load_config

    return load_config(path)


def parse_config_text(text: str, source: str = "<config>") -> Config:
    """Validate a YAML document; each problem names its field and the line it is on."""
    try:
        document = yaml.safe_load(text)
        nodes = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        reason = getattr(error, "problem", None) or str(error)
        raise ConfigError(source, [f"{where}: not valid YAML: {reason}"]) from None
    try:
        return parse_config(document, source)
    except ConfigError as error:
        error.problems = [_placed(problem, document, nodes) for problem in error.problems]
        error.args = (f"{source}: " + "; ".join(error.problems),)
        raise


# ---------------------------------------------------------------------------- where problems are

_UNKNOWN = "unknown field (check its spelling and indentation)"


def _placed(problem: str, document: Any, nodes: yaml.Node | None) -> str:
    """A problem with the line it is on and, for an unknown field, the field meant."""
    path, sep, message = problem.partition(": ")
    loc = loc_of(path) if sep else None
    if loc is None:
        return problem
    line = line_of(nodes, loc) if loc else None
    where = f"line {line}" if line else ""
    if message == _UNKNOWN and loc:
        known = field_names(model_at(document, loc[:-1]))
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "check its spelling and indentation"
        return f"{path}: unknown field ({'; '.join(filter(None, (where, hint)))})"
    return f"{problem} ({where})" if where else problem


def sections() -> dict[str, Any]:
    """The sections whose models other packages own, as the types their models have."""
    actuator = ShellSpec | HttpSpec | SupervisorSpec | AlertmanagerSilenceSpec
    return {
        "sources": list[HttpProbe | PrometheusQuery],
        "actuators": list[actuator],
        "channels": list[AnyChannel],
        "access": AccessConfig,
    }


def _unwrap(annotation: Any, value: Any) -> Any:
    """The model (or container type) an annotation stands for, given the value it holds:
    Annotated and Optional are seen through; a union is decided by the value's `kind`."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        kind = value.get("kind") if isinstance(value, dict) else None
        for model in models:
            field = model.model_fields.get("kind")
            if field is not None and kind in (get_args(field.annotation) or (field.default,)):
                return model
        if len(members) == 1:
            return _unwrap(members[0], value)
        return models[0] if len(models) == 1 else None
    return annotation


def model_at(document: Any, loc: tuple[str | int, ...]) -> Any:
    """The model that validates the part of `document` at `loc` (None when unknown)."""
    current: Any = Config
    value = document
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            fields = {f.alias or name: f for name, f in current.model_fields.items()}
            field = fields.get(part)
            if field is None:
                return None
            annotation: Any = field.annotation
            if current is Config and part in sections():
                annotation = sections()[part]
            if field.metadata:
                annotation = Annotated[(annotation, *field.metadata)]
        elif get_origin(current) is list and isinstance(part, int):
            annotation = get_args(current)[0]
        elif get_origin(current) is dict and isinstance(part, str):
            annotation = get_args(current)[1]
        else:
            return None
        value = (
            value.get(part)
            if isinstance(value, dict)
            else (
                value[part]
                if isinstance(value, list) and isinstance(part, int) and part < len(value)
                else None
            )
        )
        current = _unwrap(annotation, value)
        if current is None:
            return None
    return current


def field_names(model: Any) -> list[str]:
    """The fields a model accepts, as a document spells them."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [field.alias or name for name, field in model.model_fields.items()]
