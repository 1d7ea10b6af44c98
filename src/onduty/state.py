"""The core's state: plain data, changed only by applying events, encodable as a snapshot.

Everything here is derived from the log. Two managers that applied the same events hold equal
states, which is what replay, recovery and snapshots rely on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec


class ActionStatus(StrEnum):
    PROPOSED = "proposed"
    AWAITING_APPROVAL = "awaiting_approval"
    ALLOWED = "allowed"
    STARTED = "started"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    DENIED = "denied"
    FAILED = "failed"
    UNKNOWN = "unknown"
    VERIFY_FAILED = "verify_failed"


# Dicts in the order they were filled: the order the core visits them in, which a state made
# from a snapshot must keep.
_ENCODER = msgspec.json.Encoder()
# Keys sorted, as in the canonical JSON a snapshot's digest is taken over (`to_json`).
_CANONICAL = msgspec.json.Encoder(order="sorted")
_NO_UNDOS = b',"undos":{}}'
_NOT_WAITING = b',"waiting_fleet":{}}'
_NO_KILL_SWITCHES = b',"kill_switches":{}}'
_NO_KILL_SWITCHES_SORTED = b',"kill_switches":{},"last_ts":'
# A float with a positive exponent is the one thing msgspec writes unlike the canonical JSON
# (`1e16`, not `1e+16`): a number after `:`, `,` or `[`. It may match inside a string too
# (`"x:1e5"`), which only costs a slower snapshot.
_EXPONENT = re.compile(rb"[:,\[]-?[0-9]+(?:\.[0-9]+)?e[0-9]")

IN_FLIGHT = frozenset({ActionStatus.ALLOWED, ActionStatus.STARTED, ActionStatus.VERIFYING})
TERMINAL = frozenset(
    {
        ActionStatus.VERIFIED,
        ActionStatus.DENIED,
        ActionStatus.FAILED,
        ActionStatus.UNKNOWN,
        ActionStatus.VERIFY_FAILED,
    }
)


class Ranked:
    """An object's place among its dict's entries, for the core's indexes (`lifecycle/
    indexes.py`) to put what they find back in the order of the state's dicts. A slot and no
    field: it is neither encoded in a snapshot nor compared, and an index sets it."""

    __slots__ = ("rank",)
    rank: int


@dataclass(slots=True)
class SignalState(Ranked):
    fingerprint: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    source: str
    incident_id: str
    last_seen: datetime | None = None


@dataclass(slots=True)
class Incident(Ranked):
    incident_id: str
    group_key: dict[str, str]
    service: str | None
    title: str
    opened_at: datetime
    ready_at: datetime
    fingerprints: list[str] = field(default_factory=list)
    planned: bool = False
    flapping: bool = False
    escalated: bool = False
    acknowledged: bool = False
    muted: str = ""
    escalation_tier: int = -1
    """The highest escalation tier paged so far (-1: nobody paged yet)."""
    escalation_due: datetime | None = None
    """When the next tier is paged if nobody acknowledges."""
    last_tier_pages: int = 0
    overdue: bool = False
    runbook: str | None = None
    commands: list[str] = field(default_factory=list)
    shared_labels: dict[str, str] | None = None
    """The labels all its signals have, with equal values; what its title is made of (None:
    not known yet, for a state from a snapshot older than group titles)."""
    shared_summary: str = ""
    """The `summary` annotation all its signals have, if they have the same one."""


@dataclass(slots=True)
class ActionState:
    command_id: str
    incident_id: str
    runbook: str
    step: int
    action: str
    target: str
    params: dict[str, Any]
    timeout_s: float
    service: str | None
    status: ActionStatus = ActionStatus.PROPOSED
    approval_id: str | None = None
    verify_deadline: datetime | None = None
    attempt: int = 0


@dataclass(slots=True)
class Approval:
    approval_id: str
    command_id: str
    incident_id: str
    expires_at: datetime
    required: int = 1
    round: int = 0
    approvers: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ActionRecord:
    """An allowed action, remembered for rate limits."""

    at: datetime
    action: str
    target: str
    service: str | None
    runbook: str


@dataclass(slots=True)
class BreakerState:
    """Consecutive failures of one action on one target, and when the breaker last opened."""

    failures: int = 0
    opened_at: datetime | None = None


@dataclass(slots=True)
class KillSwitch:
    """An active kill switch: automation under it (`kind` actuator, runbook or service, and
    `name`) is denied until it is cleared."""

    kind: str
    name: str
    reason: str = ""
    set_by: str = ""
    set_at: datetime | None = None


def kill_switch_key(kind: str, name: str) -> str:
    return f"{kind}:{name}"


class UndoStatus(StrEnum):
    DECIDED = "decided"
    """The core decided it (applying the action's failure); no `UndoStarted` yet."""
    STARTED = "started"
    """`UndoStarted` is recorded; its `UndoFinished` is not."""


@dataclass(slots=True)
class UndoState:
    """An undo step the core decided whose outcome is not recorded yet: what a restart runs
    (never started) or settles (started, outcome unknown)."""

    command_id: str
    of_command_id: str
    incident_id: str
    step: int
    action: str
    target: str
    params: dict[str, Any]
    timeout_s: float
    decided: int
    """`State.applied` when it was decided: undos are run in the order they were decided."""
    of_action: str = ""
    of_target: str = ""
    service: str | None = None
    title: str = ""
    """The incident's title, to escalate with after the incident has closed."""
    status: UndoStatus = UndoStatus.DECIDED


@dataclass(slots=True)
class State:
    policy: dict[str, Any] | None = None
    policy_version: str = ""
    previous_policy: dict[str, Any] | None = None
    candidate: dict[str, Any] | None = None
    candidate_role: str = ""
    candidate_selector: str | None = None
    autonomy_overrides: dict[str, str] = field(default_factory=dict)
    signals: dict[str, SignalState] = field(default_factory=dict)
    incidents: dict[str, Incident] = field(default_factory=dict)
    open_by_key: dict[str, str] = field(default_factory=dict)
    actions: dict[str, ActionState] = field(default_factory=dict)
    approvals: dict[str, Approval] = field(default_factory=dict)
    history: list[ActionRecord] = field(default_factory=list)
    transitions: dict[str, list[datetime]] = field(default_factory=dict)
    deliveries: dict[str, datetime] = field(default_factory=dict)
    silences: dict[str, dict[str, Any]] = field(default_factory=dict)
    breakers: dict[str, BreakerState] = field(default_factory=dict)
    last_ts: datetime | None = None
    applied: int = 0
    undos: dict[str, UndoState] = field(default_factory=dict)
    """Undo steps decided and not finished, by undo command id. One of the last fields, so that
    one with none in flight is left out of a snapshot by cutting the end of its JSON."""
    waiting_fleet: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Actions waiting for their fleet-wide counts: the `FleetCountRequested` of each, by
    command id. The last field (and last in sorted order), left out of a snapshot when empty."""
    kill_switches: dict[str, KillSwitch] = field(default_factory=dict)
    """The active kill switches, by `kill_switch_key`. Declared last, and left out of a
    snapshot when empty, so a snapshot without any reads as it did before they existed."""

    def to_snapshot(self) -> dict[str, Any]:
        return State.snapshot_of(self.encode())

    def encode(self) -> bytes:
        """The snapshot's content (`to_snapshot`) as JSON, in one pass that makes no objects:
        what a snapshot stores."""
        return _without_undos(_ENCODER.encode(self))

    def encode_canonical(self) -> bytes | None:
        """The snapshot's content as its canonical JSON (`to_json`: keys sorted), that its
        digest is taken over; None when that cannot be told without decoding: a float with a
        positive exponent may be in the fields that can hold floats (`FLOAT_FIELDS`), checked
        without the bulk of the state (signals, incidents)."""
        parts = tuple(getattr(self, name) for name in FLOAT_FIELDS)
        if _EXPONENT.search(_CANONICAL.encode(parts)) is not None:
            return None
        return _without_undos(_CANONICAL.encode(self))

    @staticmethod
    def snapshot_of(encoded: bytes) -> dict[str, Any]:
        """The content of a snapshot of the state `encode` returned."""
        data: dict[str, Any] = msgspec.json.decode(encoded)
        return data

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> State:
        return msgspec.convert(data, cls, strict=False)


FLOAT_FIELDS = (
    "policy",
    "previous_policy",
    "candidate",
    "actions",
    "undos",
    "silences",
    "waiting_fleet",
)
"""The fields of `State` that can hold a float (directly or as `Any`); the others cannot."""


def _without_undos(encoded: bytes) -> bytes:
    """A state's JSON without its last keys, `undos` and `waiting_fleet`, when they are empty:
    a snapshot then reads as it did before they were tracked. The same for `kill_switches`: last
    in declared order, and between `incidents` and `last_ts` in sorted order."""
    if encoded.endswith(_NO_KILL_SWITCHES):
        encoded = encoded[: -len(_NO_KILL_SWITCHES)] + b"}"
    else:
        encoded = encoded.replace(_NO_KILL_SWITCHES_SORTED, b',"last_ts":', 1)
    if encoded.endswith(_NOT_WAITING):
        encoded = encoded[: -len(_NOT_WAITING)] + b"}"
    if encoded.endswith(_NO_UNDOS):
        return encoded[: -len(_NO_UNDOS)] + b"}"
    return encoded
