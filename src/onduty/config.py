"""The onduty.yaml model: validated, with errors that name the field and the reason.

The whole validated configuration travels into the log as a `PolicyActivated` event, named by
the content hash of its canonical JSON; the core reads its configuration only from there, so a
replay always runs against the configuration that was live at the time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Literal
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

from onduty.correlate.inhibition import InhibitRule
from onduty.events import to_json

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MICROSECONDS = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    None: 1_000_000,
}
_MICROSECOND = timedelta(microseconds=1)


def parse_duration(value: Any) -> timedelta:
    """'30s', '2m', '1h', '1d', '250ms' or a number of seconds."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 2m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            # Decimal arithmetic, so that every string format_duration writes reads back exactly.
            micros = Decimal(match.group(1)) * _UNIT_MICROSECONDS[match.group(2)]
            return timedelta(microseconds=int(micros.to_integral_value(ROUND_HALF_EVEN)))
    raise ValueError(f"expected a duration such as 30s, 2m or 1h, got {value!r}")


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling: '1d', '90m', '30s', '250ms', '1.5s'; parses back equal."""
    micros = value // _MICROSECOND
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000)):
        if micros >= size and micros % size == 0:
            return f"{micros // size}{unit}"
    if 0 < micros < 1_000_000 and micros % 1_000 == 0:
        return f"{micros // 1_000}ms"
    whole, fraction = divmod(micros, 1_000_000)
    if fraction == 0:
        return f"{whole}s"
    return f"{whole}.{fraction:06d}".rstrip("0") + "s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
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
    model_config = ConfigDict(extra="forbid", frozen=True)


class Service(Model):
    name: str = Field(min_length=1)
    tier: Literal["critical", "high", "standard", "low"] = "standard"
    region: str = ""
    autonomy: AutonomyLevel = Autonomy.SUGGEST
    instances: list[str] = Field(default_factory=list)

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
    group_wait: Duration = timedelta(seconds=0)
    flap_threshold: int = Field(default=4, ge=2)
    flap_window: Duration = timedelta(minutes=15)
    # A firing signal not heard of for this long counts as resolved (for sources that never
    # send a resolution); None: wait for the source to say so.
    resolve_timeout: Duration | None = None
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)


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
    target: Template
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=30)


_OPS = Literal[">", ">=", "<", "<=", "==", "!="]


class ProbeCheck(Model):
    """Verified when a GET of `url` answers one of `expect_status`."""

    url: str = Field(pattern=r"^https?://")
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    interval: Duration = timedelta(seconds=5)
    timeout: Duration = timedelta(seconds=5)


class PrometheusCheck(Model):
    """Verified when every series of `query` compares true with `threshold` (and there is at
    least one)."""

    url: str = Field(pattern=r"^https?://")
    query: str = Field(min_length=1)
    op: _OPS
    threshold: float
    interval: Duration = timedelta(seconds=15)
    timeout: Duration = timedelta(seconds=10)


class Verify(Model):
    """How an action is verified, within `signal_resolved_within`: by the incident's signals
    resolving, or — when given — by an HTTP probe passing or a Prometheus query holding."""

    signal_resolved_within: Duration = timedelta(minutes=5)
    probe: ProbeCheck | None = None
    prometheus: PrometheusCheck | None = None

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
    when: Condition
    do: list[Step] = Field(min_length=1)
    verify: Verify = Field(default_factory=Verify)
    undo: list[Step] = Field(default_factory=list)
    priority: int = 0
    autonomy: AutonomyLevel | None = None
    excludes: list[str] = Field(default_factory=list)
    """Runbooks that must not act on the same target while this one does (and vice versa)."""


class RateLimit(Model):
    action: str = "*"
    max: int = Field(ge=0)
    per: Duration
    key: Literal["target", "service", "runbook"] = "target"


class Concurrency(Model):
    max: int | None = Field(default=None, ge=0)
    max_fraction: float | None = Field(default=None, gt=0, le=1)
    scope: Literal["service"] = "service"

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
    max: int | None = Field(default=None, ge=0)
    max_fraction: float | None = Field(default=None, gt=0, le=1)
    window: Duration = timedelta(minutes=10)
    # Instances with one of these alerts firing are already down: they count as affected, and
    # acting on them adds no disruption.
    down_alerts: list[str] = Field(
        default_factory=lambda: ["InstanceDown", "TargetDown", "ProbeFailed"]
    )

    @model_validator(mode="after")
    def _one_limit(self) -> BlastRadius:
        if (self.max is None) == (self.max_fraction is None):
            raise ValueError("give exactly one of max or max_fraction")
        return self


class OutageBrake(Model):
    """When more than `max_fraction` of the services (or instances) are alerting at once,
    autonomous actions pause and incidents go to humans: no fixing in the middle of an outage."""

    max_fraction: float = Field(gt=0, le=1)
    of: Literal["services", "instances"] = "services"


class FreezeRange(Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")


class Freeze(Model):
    """No autonomous actions during fixed ranges, or from each `cron` occurrence for
    `duration`, in `timezone` (cron is read in local time, so DST is handled)."""

    ranges: list[FreezeRange] = Field(default_factory=list)
    cron: str | None = None
    duration: Duration | None = None
    timezone: str = "UTC"

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
    rate: RateLimit | None = None
    concurrent: Concurrency | None = None
    blast: BlastRadius | None = None
    outage: OutageBrake | None = None
    freeze: Freeze | None = None
    when: Condition | None = None
    effect: Literal["allow", "deny", "require_approval"] | None = None

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
    # What an unanswered request becomes: deny (the safe default) or escalate to the next tier
    # while still denying the action.
    on_timeout: Literal["deny", "escalate"] = "deny"
    notify: list[str] = Field(default_factory=lambda: ["on-call"])
    required: int = Field(default=1, ge=1, le=5)
    """Distinct people who must approve (2: the two-person rule)."""
    roles: list[str] = Field(default_factory=list)
    """Roles allowed to approve; empty: anyone who may answer approvals."""


class Breaker(Model):
    """Per action and target: after `failures` consecutive failures (or unknown outcomes) the
    breaker opens and proposals escalate instead of acting; after `cooldown` one trial may go
    ahead (half-open); a success closes it, a failure opens it again."""

    failures: int = Field(default=3, ge=1)
    cooldown: Duration = timedelta(minutes=15)


class Policy(Model):
    guardrails: list[Guardrail] = Field(default_factory=list)
    approvals: Approvals = Field(default_factory=Approvals)
    breaker: Breaker = Field(default_factory=Breaker)


class Tier(Model):
    """Who is paged, through which channels (in fallback order), and how long to wait for an
    acknowledgement before the next tier; the last tier repeats every `wait` until someone
    acknowledges (the incident is then overdue)."""

    notify: list[str] = Field(min_length=1)
    wait: Duration = timedelta(minutes=5)


class Escalation(Model):
    default: list[Tier] = Field(default_factory=lambda: [Tier(notify=["on-call"])], min_length=1)
    services: dict[str, list[Tier]] = Field(default_factory=dict)
    """Escalation policies of particular services; the others use `default`."""
    repeat_last: int = Field(default=3, ge=0)
    """How many times the last tier is paged again while nobody acknowledges."""

    def tiers(self, service: str | None) -> list[Tier]:
        return self.services.get(service or "", self.default) or self.default


def _check_sources(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pollers (HTTP probes, Prometheus queries) are validated by the sense layer's models."""
    from onduty.sense.pollers import parse_sources

    try:
        parse_sources(raw)
    except ValidationError as error:
        raise ValueError("; ".join(describe_validation_error(error))) from None
    return raw


def _check_actuators(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Actuators are validated by the act layer's models (names the field and the reason)."""
    from onduty.act.specs import ActuatorConfigError, parse_actuators

    try:
        parse_actuators(raw)
    except ActuatorConfigError as error:
        raise ValueError("; ".join(error.problems)) from None
    return raw


def _check_channels(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Notification channels are validated by the escalate layer's models."""
    from onduty.escalate.channels import parse_channels

    parse_channels(raw)  # raises ValueError naming the field
    return raw


def _check_access(raw: dict[str, Any]) -> dict[str, Any]:
    """Access control (tokens, roles, ingest secrets) is validated by the API layer's models."""
    from onduty.api.auth import parse_access

    parse_access(raw)  # raises ValueError naming the field
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
    bus: str = "memory"
    sources: Annotated[list[dict[str, Any]], AfterValidator(_check_sources)] = Field(
        default_factory=list
    )
    actuators: Annotated[list[dict[str, Any]], AfterValidator(_check_actuators)] = Field(
        default_factory=list
    )
    channels: Annotated[list[dict[str, Any]], AfterValidator(_check_channels)] = Field(
        default_factory=list
    )
    access: Annotated[dict[str, Any], AfterValidator(_check_access)] = Field(default_factory=dict)
    server: ServerSettings = Field(default_factory=ServerSettings)
    # Snapshots cost the core thread time; restart folds at most this many events after one.
    snapshot_every: int = Field(default=10_000, ge=1)
    services: list[Service] = Field(default_factory=list)
    correlation: Correlation = Field(default_factory=Correlation)
    runbooks: list[Runbook] = Field(default_factory=list)
    policy: Policy = Field(default_factory=Policy)
    escalation: Escalation = Field(default_factory=Escalation)

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
            raise _FieldProblems(problems)
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


class _FieldProblems(ValueError):
    """Raised by a model validator that checks several fields: each problem names its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class ConfigError(ValueError):
    """A configuration that cannot be used; `problems` name each field and its reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    """`services[0].autonomy`: where in the document a problem is, under `prefix`."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith("function-"):  # validator frames, not fields
            text += f".{part}" if text else part
    return text or "(top level)"


def describe_validation_error(
    error: ValidationError,
    *,
    prefix: str = "",
    tags: Collection[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per problem, naming the field and the reason. `prefix` places the document
    (`actuators[2]`); `tags` are a discriminated union's tags, which are not fields; `aliases`
    spell fields as the document does (`from_` → `from`)."""
    renames = aliases or {}
    problems: list[str] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        if loc and loc[0] in tags:
            loc = loc[1:]
        loc = tuple(renames.get(part, part) if isinstance(part, str) else part for part in loc)
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, _FieldProblems):
            where = _path(prefix, loc) + "." if loc or prefix else ""
            problems.extend(where + problem for problem in cause.problems)
            continue
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check its spelling and indentation)"
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append(f"{_path(prefix, loc)}: {message}")
    return problems


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
    """Read and validate a YAML config file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(source, [f"cannot read the file: {error.strerror or error}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            source, [f"cannot read the file: not UTF-8 text (byte {error.start})"]
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        reason = getattr(error, "problem", None) or str(error)
        raise ConfigError(source, [f"{where}: not valid YAML: {reason}"]) from None
    return parse_config(document, source)
