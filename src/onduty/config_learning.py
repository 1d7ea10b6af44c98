"""The `learning:` section of the configuration: whether the learning agent runs beside the
runbook agent, how it chooses, how it learns from outcomes as they are recorded, and when it
stops trusting its model (drift).

The core reads it. Which model the agent ranks with is not configuration: it enters the log as
a `ModelActivated` event (`onduty learn promote`), as a policy does; with none activated the
agent starts from the prior alone and learns from what it sees.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from onduty.values import ConfigModel as Model
from onduty.values import PositiveDuration

__all__ = ["LearningDrift", "LearningSettings"]


def _yaml_switch(value: Any) -> Any:
    """YAML 1.1 reads a bare `on` or `off` as a boolean: take it as the word that was written."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


class LearningDrift(Model):
    """When a model stops fitting what it sees, for one service: the runbook order decides there
    again (recorded as `ModelDriftDetected`, with retraining suggested)."""

    max_feature_shift: float = Field(default=0.25, gt=0)
    """The population stability index (PSI) of the service's recent incidents' kinds (alert name
    and whether a deploy preceded them) against the model's training window over which the mix
    has drifted: 0.1 is a small shift, 0.25 a large one. Judged only for a trained model."""
    window: int = Field(default=20, ge=2)
    """How many of the service's newest incidents the mix is taken over."""
    max_verification_shortfall: float = Field(default=0.25, gt=0, le=1)
    """How far the rate at which the model's choices verified may fall below the rate it
    predicted for them, over the newest `window` of its choices for the service. Judged only
    for a trained model (the prior alone learning online has nothing to retrain)."""
    min_outcomes: int = Field(default=8, ge=1)
    """Judge the verification rate only over at least this many outcomes."""


class LearningSettings(Model):
    """The learning agent: for an incident, it ranks the first steps of the runbooks that match
    by how likely each is to verify, from the log's history of (incident features → action →
    verified or not), and proposes the best; the arbiter and the guardrails judge its proposal
    like any other. Off by default."""

    agent: Annotated[Literal["off", "shadow", "on"], BeforeValidator(_yaml_switch)] = "off"
    """`on`: the learning agent proposes (the runbook order only breaks ties); `shadow`: it ranks
    beside the runbook order and records where it would have chosen otherwise
    (`ModelShadowDiverged`), never deciding; `off`: not run at all."""
    choose: Literal["thompson", "ucb"] = "ucb"
    """`ucb` (the upper end of the credible interval: an action is tried while its chance may
    still be high, and draws nothing) or `thompson` (one draw from each action's posterior,
    seeded from the event being handled so replay is exact: keeps exploring longer). On the
    sim lab's ambiguous faults, `ucb` chose the fix first 89% of the time after learning against
    77% for `thompson` (BENCHMARKS.md)."""
    online: bool = True
    """Learn from outcomes as they are recorded, on top of the active model."""
    min_evidence: int = Field(default=1, ge=1)
    """A kind of incident with fewer outcomes of an action than this is read at a coarser kind
    (the same alert on any service, then the alert alone). 1: the finest kind with any outcome
    (a restart that failed after a deploy says little of one with no deploy). It applies to a
    trained model too."""
    prior_alpha: float = Field(default=1.0, gt=0)
    """The Beta prior's alpha for an action's chance to verify before any outcome is known (with
    `prior_beta` 1 and 1: uniform). A trained model brings its own prior."""
    prior_beta: float = Field(default=1.0, gt=0)
    """The Beta prior's beta (see `prior_alpha`)."""
    recurrence_window: PositiveDuration = timedelta(hours=1)
    """A verified action whose alert fires again on its target within this long did not fix
    the cause: it is learned as failed."""
    drift: LearningDrift = Field(default_factory=LearningDrift)
    """When to stop trusting the model for a service."""
    model: str | None = None
    """A model artifact (`onduty learn train`) to make active when onduty starts (or reloads)
    with this configuration, if the log's active model is another: recorded as
    `ModelActivated`. A path relative to this file. Not part of the policy's version: the model
    is versioned by its own content hash."""
    auto_promote: bool = False
    """`onduty learn train --schedule` may promote a model it trained and validated; otherwise
    it leaves promotion to a person."""

    @property
    def enabled(self) -> bool:
        return self.agent != "off"
