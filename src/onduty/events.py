"""The event vocabulary: the envelope, every event type, canonical JSON and the chain hash.

Every fact onduty knows is an `Event`. The envelope is generic (its `data` is the JSON form of
a typed payload) so the log can store, hash and verify events without knowing their types, and
old events stay readable: a payload is upcast from the version it was written with to the
current one before it is validated.

    hash = sha256(prev_hash + canonical_json(envelope without hash))
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

GENESIS_HASH = "0" * 64


class Origin(StrEnum):
    """Who writes an event: the outside world (through the shell) or the core's decisions."""

    INPUT = "input"
    DECISION = "decision"


class Event(BaseModel):
    """The envelope. `seq`, `prev_hash` and `hash` are set by the log when it appends."""

    model_config = ConfigDict(frozen=True)

    seq: int = 0
    id: str
    type: str
    v: int = 1
    ts: datetime
    stream: str
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str = "onduty"
    data: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str = ""
    hash: str = ""

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("event time must carry a time zone (UTC)")
        return value.astimezone(UTC)

    @property
    def origin(self) -> Origin:
        spec = EVENT_TYPES.get(self.type)
        return spec.origin if spec else Origin.INPUT


_ENVELOPE_FIELDS = frozenset(Event.model_fields)


def canonical_body(event: Event) -> bytes:
    """Canonical JSON of the envelope without `hash`: sorted keys, no spaces, UTC 'Z' times."""
    return orjson.dumps(
        {
            "seq": event.seq,
            "id": event.id,
            "type": event.type,
            "v": event.v,
            "ts": event.ts,
            "stream": event.stream,
            "correlation_id": event.correlation_id,
            "causation_id": event.causation_id,
            "actor": event.actor,
            "data": event.data,
            "prev_hash": event.prev_hash,
        },
        option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z,
    )


def chain_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def seal(event: Event, seq: int, prev_hash: str) -> tuple[Event, bytes]:
    """Place an event at `seq` after `prev_hash`; return it with its hash, and its body bytes."""
    placed = event.model_copy(update={"seq": seq, "prev_hash": prev_hash, "hash": ""})
    body = canonical_body(placed)
    return placed.model_copy(update={"hash": chain_hash(prev_hash, body)}), body


def event_from_body(body: bytes, hash_: str) -> Event:
    """Rebuild an event from the bytes the log stored (the inverse of `canonical_body`).

    The body is the log's own canonical JSON, which was validated when it was written and is
    covered by the chain hash, so it is rebuilt without validating it again: reading is the hot
    path of recovery and replay. `verify` is what checks the stored bytes."""
    fields = orjson.loads(body)
    fields["ts"] = datetime.fromisoformat(fields["ts"])
    fields["hash"] = hash_
    return _trusted_event(fields)


def _trusted_event(fields: dict[str, Any]) -> Event:
    """An Event from fields known to be valid, without running validation again."""
    event = object.__new__(Event)
    object.__setattr__(event, "__dict__", fields)
    # A mutable set of its own: `model_copy(update=...)` (and so `seal`) adds to it.
    object.__setattr__(event, "__pydantic_fields_set__", set(_ENVELOPE_FIELDS))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


def to_json(value: Any) -> bytes:
    """Canonical JSON for anything the project hashes or compares (configs, decisions)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)


# --------------------------------------------------------------------------- payloads


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


class SnapshotDiscarded(Payload):
    """At start-up, a stored snapshot of the core's state was not used because it is not bound
    to this chain as it claims (edited, rewritten chain, beyond the head, or written by an older
    version without a binding); the state was folded from the log instead."""

    seq: int
    """The seq the discarded snapshot claimed to fold up to."""
    reason: str


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
    (ProposalRejected, _D),
    (AutonomyChanged, _I),
    (AutonomyRaiseRequested, _I),
    (AutonomyRaiseConfirmed, _I),
    (Tick, _I),
    (SilenceCreated, _I),
    (SilenceExpired, _I),
    (SnapshotDiscarded, _I),
]
EVENT_TYPES: dict[str, EventSpec] = {
    model.__name__: EventSpec(model, 1, origin) for model, origin in _REGISTERED
}

# Upcasters lift a payload written at version v to v+1: {(type, v): function}. A schema change
# that cannot be expressed as defaults on new fields adds one here and bumps the spec version.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UnknownEventType(ValueError):
    pass


def upcast(type_: str, version: int, data: Mapping[str, Any]) -> dict[str, Any]:
    spec = EVENT_TYPES.get(type_)
    if spec is None:
        raise UnknownEventType(f"unknown event type {type_!r}")
    lifted = dict(data)
    while version < spec.version:
        lifted = UPCASTERS[(type_, version)](lifted)
        version += 1
    return lifted


def payload(event: Event) -> Payload:
    """The typed payload of an event, upcast to the current schema."""
    spec = EVENT_TYPES.get(event.type)
    if spec is None:
        raise UnknownEventType(f"unknown event type {event.type!r}")
    data = event.data if event.v == spec.version else upcast(event.type, event.v, event.data)
    return spec.model.model_validate(data)


def payload_as(event: Event, model: type[P]) -> P:
    value = payload(event)
    if not isinstance(value, model):
        raise TypeError(f"event {event.id} is {event.type}, not {model.__name__}")
    return value


def make_event(
    body: Payload,
    *,
    id: str,
    ts: datetime,
    stream: str,
    actor: str = "onduty",
    causation_id: str | None = None,
    correlation_id: str | None = None,
) -> Event:
    """Wrap a payload in an envelope (not yet placed in a log)."""
    type_ = type(body).__name__
    spec = EVENT_TYPES.get(type_)
    if spec is None or spec.model is not type(body):
        raise UnknownEventType(f"{type_} is not a registered event type (see EVENT_TYPES)")
    if ts.tzinfo is None:
        Event(id=id, type=type_, ts=ts, stream=stream)  # raises the validation error
    # Every field here is already typed and valid (the payload was validated when it was built),
    # so the envelope is assembled without validating it again: this is the ingest hot path.
    return _trusted_event(
        {
            "seq": 0,
            "id": id,
            "type": type_,
            "v": spec.version,
            "ts": ts if ts.tzinfo is UTC else ts.astimezone(UTC),
            "stream": stream,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "actor": actor,
            "data": body.model_dump(mode="json"),
            "prev_hash": "",
            "hash": "",
        }
    )


def json_schemas() -> dict[str, Any]:
    """JSON Schema of the envelope and of every payload type, keyed by type name."""
    return {
        "envelope": Event.model_json_schema(),
        "types": {
            name: {
                "version": spec.version,
                "origin": spec.origin.value,
                "schema": spec.model.model_json_schema(),
            }
            for name, spec in sorted(EVENT_TYPES.items())
        },
    }


def parse_ts(value: str) -> datetime:
    """Parse an ISO-8601 time; naive times are taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
