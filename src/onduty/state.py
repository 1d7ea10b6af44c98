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
    agent: str = "runbook"
    """Who proposed it (`ActionProposed.agent`): the advisor's proposals have their own autonomy
    cap, for each step of the runbook they start."""


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


@dataclass(slots=True)
class Finding:
    """One problem found with a source: what was measured (`value`) against what (`limit`)."""

    detail: str
    value: float
    limit: float


@dataclass(slots=True)
class SourceWatch:
    """What the core has seen of one source, to judge its signals (`lifecycle/quality.py`):
    when it last spoke, its clock against ours, and counts over the current windows."""

    source: str
    last_heard: datetime | None = None
    quiet_check: datetime | None = None
    """When its silence is next looked at (a timer is armed for it), None when none is."""
    skews: list[float] = field(default_factory=list)
    """Its newest clock differences, in seconds (positive: its clock is ahead of ours)."""
    window_start: datetime | None = None
    deliveries: int = 0
    rejected: int = 0
    duplicates: int = 0
    label_values: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per label, its distinct values in the window (counted up to one over the limit)."""
    mix_start: datetime | None = None
    mix: dict[str, int] = field(default_factory=dict)
    """Signals per value of the drift label in the current drift window"""
    baseline: list[dict[str, int]] = field(default_factory=list)
    """and in the windows before it, oldest first."""
    services: list[str] = field(default_factory=list)
    """The services it has reported signals for, in the order first seen."""
    findings: dict[str, Finding] = field(default_factory=dict)
    """What its signals show now, by check (found while folding inputs)"""
    problems: dict[str, str] = field(default_factory=dict)
    """and what the log records as its problems (`SourceDegraded` not yet `SourceRecovered`):
    the core records the difference as it appears."""


@dataclass(slots=True)
class SafeMode:
    """Autonomy lowered to `suggest` for `services` (empty: every service) because of one
    problem (`scope`); `incident_id` is the incident that paged people about it."""

    scope: str
    services: list[str]
    reason: str
    since: datetime
    incident_id: str

    def covers(self, service: str | None) -> bool:
        return not self.services or (service is not None and service in self.services)


@dataclass(slots=True)
class LearnedAction:
    """An action whose outcome the learning agent waits for: what was known of its incident
    when it was proposed (`IncidentFeatures.values`), and the model's estimate when the model
    chose it (None when the runbook order did)."""

    incident_id: str
    action: str
    target: str
    service: str
    features: list[str]
    predicted: float | None = None
    verified_at: datetime | None = None
    """When it verified: until `recurrence_window` has passed, its alert firing again on its
    target makes it a failure after all."""


@dataclass(slots=True)
class LearningState:
    """What the learning agent knows (`lifecycle/learning.py`): the models in their roles, what it
    learned online, and what it watches for its next features and outcomes."""

    model: dict[str, Any] | None = None
    """The active model's artifact (None: none activated; the prior alone)."""
    previous_model: dict[str, Any] | None = None
    candidate: dict[str, Any] | None = None
    candidate_role: str = ""
    candidate_selector: str | None = None
    online: dict[str, list[int]] = field(default_factory=dict)
    """Outcomes learned since the log began, by finest signature and action
    (`learning_key`): [verified, failed]."""
    deploys: dict[str, datetime] = field(default_factory=dict)
    """The last deploy marker seen, by service."""
    restarts: dict[str, datetime] = field(default_factory=dict)
    """The last successful restart, by target."""
    pending: dict[str, LearnedAction] = field(default_factory=dict)
    """By command id: actions proposed whose outcome is not learned yet, and verified ones
    still inside the recurrence window."""
    kinds: dict[str, list[str]] = field(default_factory=dict)
    """The kinds of each service's newest incidents, oldest first (for drift)."""
    choices: dict[str, list[list[float]]] = field(default_factory=dict)
    """The model's newest choices for each service, oldest first: [predicted, 1.0 verified or
    0.0 not]."""
    drift: dict[str, str] = field(default_factory=dict)
    """Services where the model is set aside, with why (`ModelDriftDetected.detail`)."""


@dataclass(slots=True)
class AdvisorState:
    """What the advisor agent (`lifecycle/advisor.py`) waits for and has spent."""

    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Consultations asked and not answered: the `AdviceRequested` of each, by request id
    (asked again after a restart)."""
    calls: list[datetime] = field(default_factory=list)
    """When the consultations of the last hour were asked, oldest first (the budget)."""
    consulted: dict[str, int] = field(default_factory=dict)
    """How many times each open incident was consulted on (its next request's id)."""
    deploys: dict[str, DeployMark] = field(default_factory=dict)
    """The last deploy marker seen, by service (what the advisor is told of recent changes)."""


@dataclass(slots=True)
class DeployMark:
    """A signal that spoke of a deploy (`think/features.deployish`)."""

    at: datetime
    alertname: str
    labels: dict[str, str] = field(default_factory=dict)


def learning_key(features: list[str], action: str) -> str:
    return "\x1f".join([*features, action])


def learning_key_parts(key: str) -> tuple[list[str], str]:
    """The features and the action a `learning_key` was made of."""
    *features, action = key.split("\x1f")
    return features, action


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
    """The active kill switches, by `kill_switch_key`."""
    sources: dict[str, SourceWatch] = field(default_factory=dict)
    """What is known of each source judged by the `quality:` section, by source name."""
    safe_modes: dict[str, SafeMode] = field(default_factory=dict)
    """The scopes in safe mode, by the problem that put them there (`SafeMode.scope`)."""
    learning: LearningState | None = None
    """What the learning agent knows; None while it has never run."""
    advisor: AdvisorState | None = None
    """What the advisor agent waits for and has spent; None while it has never been consulted."""

    def to_snapshot(self) -> dict[str, Any]:
        return State.snapshot_of(self.encode())

    def encode(self) -> bytes:
        """The snapshot's content (`to_snapshot`) as JSON, in one pass that makes no objects:
        what a snapshot stores."""
        return _ENCODER.encode(self._encoded_fields())

    def encode_canonical(self) -> bytes | None:
        """The snapshot's content as its canonical JSON (`to_json`: keys sorted), that its
        digest is taken over; None when that cannot be told without decoding: a float with a
        positive exponent may be in the fields that can hold floats (`FLOAT_FIELDS`), checked
        without the bulk of the state (signals, incidents)."""
        parts = tuple(getattr(self, name) for name in FLOAT_FIELDS)
        if _EXPONENT.search(_CANONICAL.encode(parts)) is not None:
            return None
        return _CANONICAL.encode(self._encoded_fields())

    def _encoded_fields(self) -> dict[str, Any]:
        """The fields a snapshot holds, in declared order: every one, except the later
        additions (`OMITTED_WHEN_EMPTY`) while they are empty, so the snapshot of a state that
        uses none of them reads exactly as it did before they existed."""
        return {
            name: value
            for name in _FIELD_NAMES
            if (value := getattr(self, name)) or name not in OMITTED_WHEN_EMPTY
        }

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
    "sources",
    "learning",
    "advisor",
)
"""The fields of `State` that can hold a float (directly or as `Any`); the others cannot."""

OMITTED_WHEN_EMPTY = frozenset(
    {"undos", "waiting_fleet", "kill_switches", "sources", "safe_modes", "learning", "advisor"}
)
"""Fields of `State` added after snapshots existed, left out of a snapshot while empty."""
_FIELD_NAMES = tuple(State.__dataclass_fields__)
