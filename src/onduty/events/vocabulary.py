"""The event vocabulary: every payload type, its schema version and its origin.

A payload is the typed `data` of an event. `EVENT_TYPES` registers each type with the version it
is written at and who writes it (the outside world, or the core's decisions); a type not
registered here cannot be wrapped in an envelope or read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class Origin(StrEnum):
    """Who writes an event: the outside world (through the shell) or the core's decisions."""

    INPUT = "input"
    DECISION = "decision"


class Payload(BaseModel):
    """Base of every event payload. Unknown fields are kept, so newer writers never break
    older readers, and new fields always have defaults, so older events stay readable."""

    model_config = ConfigDict(frozen=True, extra="allow")


# "acknowledged": a human took the alert at its source (PagerDuty's acknowledge); it pauses
# escalation, and is neither a new firing nor a resolution.
SignalStatus = Literal["firing", "resolved", "acknowledged"]
Verdict = Literal["allow", "deny", "require_approval"]


class Signal(Payload):
    """A normalized observation from any source: an alert, a probe result, a metric breach."""

    source: str
    fingerprint: str
    status: SignalStatus
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    generator_url: str | None = None
    delivery_id: str | None = None
    """The identity of this exact notification at its source (CloudEvents `source` + `id`):
    a redelivery is recognised and counted once."""
    traceparent: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """The W3C trace context the signal was received under (`00-<trace id>-<span id>-<flags>`:
    the ingest request's span, or the sender's). Recorded by the shell, never read by the core;
    an incident's trace is rebuilt from it. Written only when present, so events written
    before it hash as they did."""


class SignalReceived(Signal):
    pass


class SignalRejected(Payload):
    source: str
    reason: str
    field: str | None = None
    raw: str = ""


class IncidentOpened(Payload):
    incident_id: str
    group_key: dict[str, str]
    service: str | None = None
    title: str
    fingerprint: str


class IncidentUpdated(Payload):
    incident_id: str
    change: str
    fingerprint: str | None = None
    detail: str = ""


class IncidentResolved(Payload):
    incident_id: str
    reason: str


class ActionProposed(Payload):
    command_id: str
    incident_id: str
    agent: str
    runbook: str
    step: int
    action: str
    target: str
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float
    rationale: str
    model: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """The learning model in the decision's context (`ModelActivated`): the one that ranked the
    candidates, or the one set aside (the rationale says why). Written only while the learning
    agent runs, so events written without it read as they did. For the advisor's proposals: the
    language model that answered."""
    prompt_hash: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """For the advisor's proposals: the SHA-256 of the request the model answered
    (`AdviceReceived.prompt_hash`)."""


class ProposalRejected(Payload):
    """A proposal that lost arbitration (another runbook won, or the target is busy)."""

    incident_id: str
    agent: str
    runbook: str
    action: str
    target: str
    reason: str


class RuleOutcome(Payload):
    """One guardrail's opinion of a proposal, with the reason a human can read."""

    rule: str
    effect: Verdict
    reason: str


class PolicyEvaluated(Payload):
    command_id: str
    incident_id: str
    verdict: Verdict
    policy_version: str
    rules: list[RuleOutcome]
    reason: str


class ApprovalRequested(Payload):
    approval_id: str
    command_id: str
    incident_id: str
    expires_at: datetime
    notify: list[str] = Field(default_factory=list)
    summary: str = ""
    required: int = 1
    """How many distinct people must approve (2: the two-person rule)."""
    round: int = 0
    """0 for the first request; 1 when an unanswered request went to the next tier."""


class ApprovalGranted(Payload):
    """An approval by the event's actor, acting in `role` (as established by the shell)."""

    approval_id: str
    comment: str = ""
    role: str | None = None


class ApprovalDenied(Payload):
    approval_id: str
    comment: str = ""
    role: str | None = None


class ApprovalExpired(Payload):
    approval_id: str
    command_id: str
    default: Literal["deny"] = "deny"


class ActionStarted(Payload):
    command_id: str
    incident_id: str
    action: str
    target: str
    attempt: int = 1


class ActionSucceeded(Payload):
    command_id: str
    output: str = ""


class ActionFailed(Payload):
    command_id: str
    error: str


class ActionOutcomeUnknown(Payload):
    command_id: str
    reason: str


class CheckCompleted(Payload):
    """The shell's verification check of an action (a probe, a query) came to a result."""

    command_id: str
    ok: bool
    detail: str = ""


class VerificationPassed(Payload):
    command_id: str
    incident_id: str
    check: str


class VerificationFailed(Payload):
    command_id: str
    incident_id: str
    reason: str


class UndoStarted(Payload):
    command_id: str
    of_command_id: str
    action: str
    target: str


class UndoFinished(Payload):
    command_id: str
    of_command_id: str
    ok: bool
    error: str = ""
    unknown: bool = False
    """The outcome is unknown (`ok` is false): onduty stopped while the undo ran and its effect
    could not be checked. It is not run again; the core escalates it."""


class Escalated(Payload):
    incident_id: str
    reason: str
    tier: int = 0
    notify: list[str] = Field(default_factory=list)
    command_id: str | None = None


class NotificationSent(Payload):
    """A notification reached a channel (recorded by the shell after delivery)."""

    incident_id: str
    channel: str
    kind: str
    dedup_key: str
    attempts: int = 1


class NotificationFailed(Payload):
    """A channel kept failing; `fallback` is the channel tried next (None: no channel left)."""

    incident_id: str
    channel: str
    kind: str
    dedup_key: str
    error: str
    fallback: str | None = None


class Acknowledged(Payload):
    incident_id: str
    comment: str = ""


class PolicyActivated(Payload):
    """A configuration takes a role: `active` (enforced), `shadow` (evaluated beside the active
    one, never enforced), `canary` (enforced where `selector` holds), or `withdrawn` (the
    candidate is dropped; `config` is then empty)."""

    version: str
    config: dict[str, Any]
    source: str = ""
    role: Literal["active", "shadow", "canary", "withdrawn"] = "active"
    selector: str | None = None


class PolicyShadowDiverged(Payload):
    """A candidate policy would have decided otherwise than the enforced one."""

    command_id: str
    incident_id: str
    mode: Literal["shadow", "canary"]
    enforced: Verdict
    enforced_version: str
    other: Verdict
    other_version: str
    other_reason: str


ModelRole = Literal["active", "shadow", "canary", "withdrawn"]


class ModelActivated(Payload):
    """A learning model takes a role, as a policy does: `active` (the learning agent ranks with
    it), `shadow` (it ranks beside the enforced choice, divergences recorded), `canary` (it ranks
    where `selector` holds), or `withdrawn` (the candidate is dropped; `model` is then empty).
    `model` is the whole artifact (`onduty learn train`), named by its content hash."""

    model_id: str
    model: dict[str, Any] = Field(default_factory=dict)
    source: str = ""
    role: ModelRole = "active"
    selector: str | None = None


class ModelShadowDiverged(Payload):
    """A model not enforced here (`mode`) ranks another action first than the one proposed."""

    incident_id: str
    mode: Literal["shadow", "canary"]
    model_id: str
    enforced_action: str
    enforced_target: str
    model_action: str
    model_target: str
    rationale: str


ModelDriftCheck = Literal["features", "verification"]


class ModelDriftDetected(Payload):
    """For `service`, the learning model no longer fits what it sees (`check`): the mix of
    incidents moved away from its training window (`value` is the PSI), or its actions verify
    less often than it predicted (`value` is the shortfall). Until a model is activated again,
    the runbook order decides there; retraining is suggested."""

    model_id: str
    service: str
    check: ModelDriftCheck
    detail: str
    value: float
    limit: float


class AdviceChoice(Payload):
    """One action the advisor may choose: the first step of a runbook, its target rendered for
    the incident."""

    name: str
    """The runbook's name: what the model answers with."""
    action: str
    target: str
    when: str = ""
    """The runbook's condition as written: when people meant it to run."""
    description: str = ""


class AdviceRequested(Payload):
    """The core asks the advisor (a language model) for a proposal for an incident, choosing
    among `choices` only. Recorded before it is asked (a restart asks again); the shell builds
    the prompt from this, the incident's similar past incidents and the endpoint's settings."""

    request_id: str
    incident_id: str
    title: str
    service: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    choices: list[AdviceChoice]
    reason: str
    """Why the advisor is consulted (no runbook matches, or it is consulted on every incident)."""
    similar: int = 3
    """How many similar past incidents the prompt may quote."""
    max_rationale: int = 400
    context: dict[str, Any] = Field(default_factory=dict)
    """What else the core knows of the incident's service at the time, by event time: the last
    deploy marker (`last_deploy`, with how many minutes ago) and the other alerts firing
    (`other_alerts`)."""


class AdviceReceived(Payload):
    """What the language model answered, with the request it answered (no header, secrets
    redacted): recorded so that replay reuses the answer instead of asking again. The core
    judges it: a valid answer becomes a proposal, anything else is discarded
    (`AdviceDiscarded`)."""

    request_id: str
    incident_id: str
    model: str
    """The model that answered, as the server named it."""
    prompt_hash: str
    """`sha256:` of the request's canonical JSON: which prompt this answer is to."""
    request: dict[str, Any] = Field(default_factory=dict)
    content: str
    """The model's reply, as received (cut at 8,000 characters)."""
    latency_ms: float = 0.0
    similar: list[str] = Field(default_factory=list)
    """The past incidents quoted in the prompt."""


AdviceProblem = Literal["unreachable", "timeout", "refused", "malformed", "unconfigured", "error"]


class AdviceFailed(Payload):
    """The advisor gave no answer: its server could not be reached, was too slow, refused the
    request or answered something that is not a chat completion; none is set up where onduty
    runs; or asking failed in onduty itself (`error`). onduty carries on without it."""

    request_id: str
    incident_id: str
    model: str = ""
    problem: AdviceProblem
    reason: str
    prompt_hash: str | None = None
    latency_ms: float = 0.0


class AdviceDiscarded(Payload):
    """An answer the core would not use: not the JSON the schema asks for, a choice that is not
    among the allowed ones, a target that is not the incident's, a rationale too long. Nothing
    is proposed; the incident goes on without advice."""

    request_id: str
    incident_id: str
    model: str
    prompt_hash: str
    reason: str


class FleetCount(Payload):
    """One guardrail counted across the fleet (`across: fleet`): at most `limit` actions in
    any `window_s` seconds within `scope`, counted at event time `at`."""

    rule: str
    scope: str
    limit: int
    window_s: float
    target: str
    distinct: bool = False
    """Count distinct targets (a blast radius), not actions (a rate limit)."""


class FleetCountRequested(Payload):
    """An action this manager's policy allows waits for its fleet-wide counts. Recorded before
    they are asked for (a restart asks again: the counts are kept by command id, so asking
    twice counts once); `rules` and `reason` are the verdict here, completed by the answer."""

    command_id: str
    incident_id: str
    policy_version: str
    rules: list[RuleOutcome]
    reason: str
    counts: list[FleetCount]


class FleetCountAnswer(Payload):
    """What the fleet's count said for one guardrail."""

    rule: str
    granted: bool
    seen: int
    """The actions already counted in the fullest window that holds this one."""
    limit: int
    reason: str


class FleetCountAnswered(Payload):
    """The fleet-wide counts of an action that waited for them: granted only when every one
    was. A fact from beyond this manager, recorded so that replay decides exactly the same."""

    command_id: str
    granted: bool
    answers: list[FleetCountAnswer]


class AutonomyChanged(Payload):
    service: str
    level: str
    previous: str | None = None


class AutonomyRaiseRequested(Payload):
    """An admin (the event's actor) asks to make a service more autonomous where actions need
    `required` approvers: the raise takes effect only once `required` different admins
    confirmed it before `expires_at`, the requester counting as the first; the last
    `AutonomyRaiseConfirmed` is then followed at once by the `AutonomyChanged`. Lowering
    autonomy is never a request: it takes effect at once."""

    request_id: str
    service: str
    level: str
    previous: str | None = None
    required: int = 2
    expires_at: datetime


class AutonomyRaiseConfirmed(Payload):
    """Another admin (the event's actor) confirms a pending autonomy raise."""

    request_id: str


class Tick(Payload):
    timer_id: str | None = None


class SilenceCreated(Payload):
    """Mute matching signals from `starts_at` (inclusive) to `ends_at` (exclusive): they are
    recorded but never acted on. A maintenance window is a silence of kind "maintenance"."""

    silence_id: str
    matchers: list[str]
    starts_at: datetime
    ends_at: datetime
    comment: str
    kind: Literal["silence", "maintenance"] = "silence"


class SilenceExpired(Payload):
    """End a silence now (at the event's time)."""

    silence_id: str


KillSwitchKind = Literal["actuator", "runbook", "service"]


class KillSwitchSet(Payload):
    """Stop automation at once for one actuator, runbook or service: from this event on, every
    proposal under the switch is denied, naming the switch and who set it (the event's actor).
    An actuator is named by the action it runs (`process.restart`) or an action family
    (`process`, covering `process.*`). Setting a switch already set replaces its reason."""

    kind: KillSwitchKind
    name: str
    reason: str = ""


class KillSwitchCleared(Payload):
    """Lift a kill switch (the event's actor lifted it); proposals under it are judged again."""

    kind: KillSwitchKind
    name: str


QualityProblem = Literal[
    "silent", "clock_skew", "drift", "rejected", "duplicates", "cardinality", "dependency"
]


class SourceDegraded(Payload):
    """The core judged a source's signals untrustworthy in one way (`check`): silent for longer
    than its heartbeat, its clock off, its mix of signals drifted, too many malformed or
    repeated deliveries, a label with too many values. `value` is what was measured and `limit`
    what it was judged against (seconds, PSI, a fraction or a count, as `check` says)."""

    source: str
    check: QualityProblem
    detail: str
    value: float | None = None
    limit: float | None = None


class SourceRecovered(Payload):
    """A source's problem (`check`) is over: it is judged healthy in that way again."""

    source: str
    check: QualityProblem
    detail: str = ""


class SafeModeEntered(Payload):
    """Autonomy is lowered to `suggest` for `services` (empty: every service) because of one
    problem (`scope`, as `check:source`, or `dependency:component`): proposals there are denied
    naming it, and the escalation tiers are paged once through `incident_id`."""

    scope: str
    services: list[str] = Field(default_factory=list)
    reason: str
    incident_id: str


class SafeModeExited(Payload):
    """The problem that put `scope` in safe mode is over: autonomy there is what the policy
    says again."""

    scope: str
    reason: str


class DependencyDegraded(Payload):
    """The shell found one of onduty's own dependencies failing (`component`: `log`, `bus`, or
    `core` when decisions fall behind): recorded so the core can step back (safe mode)."""

    component: str
    reason: str


class DependencyRecovered(Payload):
    """The dependency is healthy again."""

    component: str
    detail: str = ""


class SnapshotDiscarded(Payload):
    """At start-up, a stored snapshot of the core's state was not used because it is not bound
    to this chain as it claims (edited, rewritten chain, beyond the head, or written by an older
    version without a binding); the state was folded from the log instead."""

    seq: int
    """The seq the discarded snapshot claimed to fold up to."""
    reason: str


class CheckpointSigned(Payload):
    """A signed checkpoint of the log: its head at `seq` (hash `head`, `count` events) as of
    `signed_at`, signed with the Ed25519 key `key_id` (`signature`, hex). The same checkpoint is
    exported to a witness outside the log; `onduty audit verify` checks the log against both.
    The core folds it without deciding anything."""

    log_id: str
    seq: int
    head: str
    count: int
    signed_at: str
    """The signing time as the signed text (RFC 3339, UTC)."""
    key_id: str
    signature: str


P = TypeVar("P", bound=Payload)


@dataclass(frozen=True)
class EventSpec:
    model: type[Payload]
    version: int
    origin: Origin


_I, _D = Origin.INPUT, Origin.DECISION

_REGISTERED: list[tuple[type[Payload], Origin]] = [
    (SignalReceived, _I),
    (SignalRejected, _I),
    (IncidentOpened, _D),
    (IncidentUpdated, _D),
    (IncidentResolved, _D),
    (ActionProposed, _D),
    (PolicyEvaluated, _D),
    (ApprovalRequested, _D),
    (ApprovalGranted, _I),
    (ApprovalDenied, _I),
    (ApprovalExpired, _D),
    (ActionStarted, _I),
    (ActionSucceeded, _I),
    (ActionFailed, _I),
    (ActionOutcomeUnknown, _I),
    (VerificationPassed, _D),
    (VerificationFailed, _D),
    (UndoStarted, _I),
    (UndoFinished, _I),
    (Escalated, _D),
    (Acknowledged, _I),
    (CheckCompleted, _I),
    (NotificationSent, _I),
    (NotificationFailed, _I),
    (PolicyActivated, _I),
    (PolicyShadowDiverged, _D),
    (ModelActivated, _I),
    (ModelShadowDiverged, _D),
    (ModelDriftDetected, _D),
    (ProposalRejected, _D),
    (AutonomyChanged, _I),
    (AutonomyRaiseRequested, _I),
    (AutonomyRaiseConfirmed, _I),
    (Tick, _I),
    (SilenceCreated, _I),
    (SilenceExpired, _I),
    (KillSwitchSet, _I),
    (KillSwitchCleared, _I),
    (SnapshotDiscarded, _I),
    (CheckpointSigned, _I),
    (AdviceRequested, _D),
    (AdviceReceived, _I),
    (AdviceFailed, _I),
    (AdviceDiscarded, _D),
    (FleetCountRequested, _D),
    (FleetCountAnswered, _I),
    (SourceDegraded, _D),
    (SourceRecovered, _D),
    (SafeModeEntered, _D),
    (SafeModeExited, _D),
    (DependencyDegraded, _I),
    (DependencyRecovered, _I),
]
EVENT_TYPES: dict[str, EventSpec] = {
    model.__name__: EventSpec(model, 1, origin) for model, origin in _REGISTERED
}


class UnknownEventType(ValueError):
    pass
