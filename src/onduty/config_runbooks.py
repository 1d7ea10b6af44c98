"""The `runbooks:` section of the configuration: what to do about an incident — a CEL condition,
the steps (templated targets), how to verify them (the signals resolving, an HTTP probe or a
Prometheus query) and how to undo them. Pure models; `onduty.think.runbooks` proposes from them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

import jinja2
from pydantic import AfterValidator, Field, model_validator

from onduty.config_policy import Condition
from onduty.values import AutonomyLevel, Duration
from onduty.values import ConfigModel as Model

__all__ = ["ProbeCheck", "PrometheusCheck", "Runbook", "Step", "Template", "Verify"]


def _check_template(text: str) -> str:
    try:
        _TEMPLATE_SYNTAX.parse(text)
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(f"not a valid template (line {error.lineno}): {error.message}") from None
    return text


_TEMPLATE_SYNTAX = jinja2.Environment(autoescape=False)
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
    description: str = Field(default="", exclude_if=lambda value: value == "")
    """What the runbook does and when people use it, in words: shown to the advisor (a language
    model choosing among the runbooks' actions) beside the condition."""
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
