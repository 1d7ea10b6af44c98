"""The `policy:` section of the configuration: the guardrails every proposed action passes
(rate limits, concurrency, blast radius, the outage brake, change freezes, CEL conditions), how
approvals are asked for, and the circuit breaker. Pure models; `onduty.govern` enforces them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cel
from cronsim import CronSim, CronSimError
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from onduty.values import ConfigModel as Model
from onduty.values import Duration, require_exactly_one

__all__ = [
    "GUARDRAIL_KINDS",
    "Approvals",
    "BlastRadius",
    "Breaker",
    "Concurrency",
    "Condition",
    "Freeze",
    "FreezeRange",
    "Guardrail",
    "OutageBrake",
    "Policy",
    "RateLimit",
]


def _check_condition(expression: str) -> str:
    """A CEL condition must compile; the message keeps the compiler's position."""
    try:
        cel.compile(expression)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"not a valid CEL expression: {error}") from None
    return expression


Condition = Annotated[str, Field(min_length=1), AfterValidator(_check_condition)]
"""A CEL condition (see "CEL variables"), checked to compile."""


class RateLimit(Model):
    action: str = "*"
    """The action counted (`*`: every action; `process.*`: a family)."""
    max: int = Field(ge=0)
    """How many are allowed within `per`."""
    per: Duration
    """The sliding window."""
    key: Literal["target", "service", "runbook"] = "target"
    """What is counted separately: each `target`, each `service` or each `runbook`."""
    across: Literal["manager", "fleet"] = "manager"
    """What is counted: the actions of this manager (`manager`), or of every manager of the
    fleet sharing its PostgreSQL store (`fleet`: racing managers never exceed `max`; each
    count is recorded in the log as the answer the action waited for)."""

    @model_serializer(mode="wrap")
    def _default_across_unsaid(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_default_across(handler(self))


def _without_default_across(dumped: dict[str, Any]) -> dict[str, Any]:
    """`across` is left out of the policy document when it is the default, so that a policy
    written before fleets existed keeps its version (its content hash)."""
    if dumped.get("across") == "manager":
        del dumped["across"]
    return dumped


class Concurrency(Model):
    max: int | None = Field(default=None, ge=0)
    """At most this many actions in flight per scope."""
    max_fraction: float | None = Field(default=None, gt=0, le=1)
    """At most this fraction of the scope's instances acted on at once."""
    scope: Literal["service"] = "service"
    """What the limit is counted over: `service`."""

    @model_validator(mode="after")
    def _one_limit(self) -> Concurrency:
        require_exactly_one(self, "max", "max_fraction")
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
    across: Literal["manager", "fleet"] = "manager"
    """Whose actions are counted: this manager's (`manager`), or also every other manager's
    of the fleet (`fleet`: racing managers never act on more than the limit's distinct
    instances of a service within `window`; each count is recorded in the log)."""

    @model_serializer(mode="wrap")
    def _default_across_unsaid(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_default_across(handler(self))

    @model_validator(mode="after")
    def _one_limit(self) -> BlastRadius:
        require_exactly_one(self, "max", "max_fraction")
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
