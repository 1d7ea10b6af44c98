"""The event vocabulary: the envelope, every event type, canonical JSON and the chain hash.

Every fact onduty knows is an `Event`. The envelope is generic (its `data` is the JSON form of
a typed payload) so the log can store, hash and verify events without knowing their types, and
old events stay readable: a payload is upcast from the version it was written with to the
current one before it is validated.

    hash = sha256(prev_hash + canonical_json(envelope without hash))

The package, one module per concern, each importing only those before it:

* `vocabulary`: the payload types and their registry (`EVENT_TYPES`);
* `upcasters`: lifting a payload written at an older version to the current one;
* `codec`: the envelope, its canonical encoding, and typed payloads out of it;
* `chain`: the chain hash and sealing an event at its place in the log.

Everything is imported from here (`from onduty.events import Event`).
"""

from __future__ import annotations

from onduty.events.chain import GENESIS_HASH, chain_hash, seal
from onduty.events.codec import (
    Event,
    canonical_body,
    encode_body,
    event_from_body,
    json_schemas,
    make_event,
    parse_ts,
    payload,
    payload_as,
    to_json,
)
from onduty.events.upcasters import UPCASTERS, Upcaster, upcast
from onduty.events.vocabulary import (
    EVENT_TYPES,
    Acknowledged,
    ActionFailed,
    ActionOutcomeUnknown,
    ActionProposed,
    ActionStarted,
    ActionSucceeded,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    AutonomyChanged,
    AutonomyRaiseConfirmed,
    AutonomyRaiseRequested,
    CheckCompleted,
    CheckpointSigned,
    Escalated,
    EventSpec,
    FleetCount,
    FleetCountAnswer,
    FleetCountAnswered,
    FleetCountRequested,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    NotificationFailed,
    NotificationSent,
    Origin,
    P,
    Payload,
    PolicyActivated,
    PolicyEvaluated,
    PolicyShadowDiverged,
    ProposalRejected,
    RuleOutcome,
    Signal,
    SignalReceived,
    SignalRejected,
    SignalStatus,
    SilenceCreated,
    SilenceExpired,
    SnapshotDiscarded,
    Tick,
    UndoFinished,
    UndoStarted,
    UnknownEventType,
    Verdict,
    VerificationFailed,
    VerificationPassed,
)

__all__ = [
    "EVENT_TYPES",
    "GENESIS_HASH",
    "UPCASTERS",
    "Acknowledged",
    "ActionFailed",
    "ActionOutcomeUnknown",
    "ActionProposed",
    "ActionStarted",
    "ActionSucceeded",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalGranted",
    "ApprovalRequested",
    "AutonomyChanged",
    "AutonomyRaiseConfirmed",
    "AutonomyRaiseRequested",
    "CheckCompleted",
    "CheckpointSigned",
    "Escalated",
    "Event",
    "EventSpec",
    "FleetCount",
    "FleetCountAnswer",
    "FleetCountAnswered",
    "FleetCountRequested",
    "IncidentOpened",
    "IncidentResolved",
    "IncidentUpdated",
    "NotificationFailed",
    "NotificationSent",
    "Origin",
    "P",
    "Payload",
    "PolicyActivated",
    "PolicyEvaluated",
    "PolicyShadowDiverged",
    "ProposalRejected",
    "RuleOutcome",
    "Signal",
    "SignalReceived",
    "SignalRejected",
    "SignalStatus",
    "SilenceCreated",
    "SilenceExpired",
    "SnapshotDiscarded",
    "Tick",
    "UndoFinished",
    "UndoStarted",
    "UnknownEventType",
    "Upcaster",
    "Verdict",
    "VerificationFailed",
    "VerificationPassed",
    "canonical_body",
    "chain_hash",
    "encode_body",
    "event_from_body",
    "json_schemas",
    "make_event",
    "parse_ts",
    "payload",
    "payload_as",
    "seal",
    "to_json",
    "upcast",
]
