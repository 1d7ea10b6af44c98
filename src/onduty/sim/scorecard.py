"""The scorecard: what the manager did against the simulated truth.

Faults come from the world (what really broke, when, and what healed it); incidents, verdicts
and actions come from the log. A fault is *detected* when an incident opened for one of the
alerts it raises on its target, *auto-remediated* when an action of onduty's healed it, and
*escalated* when one of its incidents was handed to a human.

Faults of the alerting pipeline itself (scope "signals": stale, duplicated, malformed or
clock-skewed signals) are no outage of the fleet: there is nothing to detect or recover from, so
they count in none of the figures about faults (detected, time to detect or recover,
escalations...). The scorecard reports them apart (`signal_faults`): how many, and what they did
to the signals onduty received (those delivered while they held, the deliveries refused).

A fault with no service of its own (a region outage) belongs to the most critical tier among the
services it raises alerts about.

Every action onduty ran on the fleet is judged: *right* (the fix of an active fault on its
target), *wrong* (no fault it fixes), or *harmful* (on a healthy target, or it made the fleet
worse). A *false action* is one on a target no fault touched at the time; in a control run
(no fault at all) every action is one, and the false-action rate is per simulated hour.

`Scorecard.metrics()` gives every figure under the names expectations use (durations in
seconds); `metrics(group=("tier", "critical"))` restricts the figures about faults and actions
to those of one tier, service or fault kind.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from onduty.config import Config, Service
from onduty.events import Event
from onduty.lifecycle.learning import AGENT as LEARNER
from onduty.sim.expectations import Check, check
from onduty.sim.faults import ANY, SELF, FaultRecord, MalformedSignals
from onduty.sim.oncall import HUMAN
from onduty.sim.scenario import Scenario
from onduty.sim.world import AppliedAction

# An incident opened this long after a fault cleared is not that fault's.
_LATE = timedelta(minutes=10)

Verdict = Literal["right", "wrong", "harmful"]
GroupKind = Literal["tier", "service", "kind", "rule"]
Group = tuple[str, str]
Metrics = dict[str, float | None]

# The guardrail that only applies a service's autonomy level: a service at `observe` is denied
# every action by it, which is not a guardrail stopping a bad action.
AUTONOMY_RULE = "autonomy"

SIGNALS = "signals"
"""The scope of the faults of the alerting pipeline itself, reported apart from the outages."""

TIERS: tuple[str, ...] = get_args(Service.model_fields["tier"].annotation)
"""The service tiers, most critical first."""

HIGHER_IS_BETTER = frozenset({"detected", "auto_remediated", "right_actions"})
"""Metrics where more is better."""
NEUTRAL = frozenset(
    {
        "faults",
        "signal_faults",
        "actions",
        "approvals_requested",
        "approved",
        "guardrail_denials",
        "refused_signals",
    }
)
"""Metrics that are neither better nor worse by themselves (how many faults the scenario drew,
how often guardrails or people were asked); for the rest (times, wrong actions, SLO minutes,
escalations...) less is better."""


@dataclass
class FaultScore:
    record: FaultRecord
    detected_at: datetime | None = None
    escalated: bool = False
    incidents: list[str] = field(default_factory=list)
    escalated_at: datetime | None = None
    tier: str = ""

    @property
    def remediated(self) -> bool:
        """Healed by one of onduty's own actions."""
        cleared_by = self.record.cleared_by
        return cleared_by not in (None, SELF) and not str(cleared_by).startswith(HUMAN)

    @property
    def fixed_by_human(self) -> bool:
        return str(self.record.cleared_by).startswith(HUMAN)

    @property
    def time_to_detect(self) -> timedelta | None:
        return self.detected_at - self.record.injected_at if self.detected_at else None

    @property
    def time_to_recover(self) -> timedelta | None:
        cleared = self.record.cleared_at
        return cleared - self.record.injected_at if cleared else None

    @property
    def time_to_escalate(self) -> timedelta | None:
        return self.escalated_at - self.record.injected_at if self.escalated_at else None

    def in_group(self, group: Group) -> bool:
        what, name = group
        if what == "kind":
            return self.record.kind == name
        if what == "service":
            return self.record.service == name
        return self.tier == name


@dataclass(frozen=True)
class SignalFaultScore:
    """A fault of the alerting pipeline (scope "signals"): the fleet was fine, only what onduty
    was told about it was not, so it is no outage to detect or recover from. What it did instead:
    the signals it applied to that onduty received while it held, and for malformed signals the
    deliveries the webhook parser refused."""

    record: FaultRecord
    delivered: int = 0
    """Signals it applied to (every one, or those about its service) received while it held."""
    refused: int | None = 0
    """Deliveries it garbled that the webhook parser refused: 0 for the kinds that garble
    nothing; None when several malformed-signal faults share the run's refusals."""
    service: str = ""
    tier: str = ""

    def in_group(self, group: Group) -> bool:
        what, name = group
        return {"kind": self.record.kind, "service": self.service, "tier": self.tier}[what] == name


@dataclass(frozen=True)
class ActionScore:
    """One action onduty ran on the fleet, judged against the truth."""

    command_id: str
    action: str
    target: str
    at: datetime
    verdict: Verdict
    reason: str
    false: bool
    """No fault touched the target when it ran."""
    service: str = ""
    tier: str = ""
    fault_kind: str = ""
    """The kind of the fault it was taken for, as far as the truth tells ("" for none)."""
    fault_id: str = ""
    """The id of that fault ("" for none)."""

    def in_group(self, group: Group) -> bool:
        what, name = group
        return {"kind": self.fault_kind, "service": self.service, "tier": self.tier}[what] == name


@dataclass(frozen=True)
class FaultOutcome:
    """How one fault went, as plain data: what a learning curve is drawn from."""

    order: int
    """Its place among the run's faults, in order of injection (0: the first)."""
    kind: str
    injected_s: float
    """Seconds from the start of the scenario."""
    recover_s: float | None
    """Seconds from injection to recovery (None: not recovered)."""
    first_action: str | None
    """The verdict on onduty's first action taken for it (right, wrong, harmful); None when it
    took none."""
    wrong_actions: int
    """onduty's actions taken for it that fixed nothing (wrong or harmful)."""


@dataclass
class Expectation:
    name: str
    bound: str
    actual: float | None
    ok: bool


@dataclass
class Scorecard:
    """What a scenario's run did, counted from its event log."""

    faults: list[FaultScore]
    """The outages: every fault but those of the signals (see `signal_faults`)."""
    actions_taken: int
    guardrail_denials: int
    """Verdicts that denied an action by a guardrail (`denied_by` says which rule); the
    autonomy level alone (a service at `observe` or `suggest`) is not counted."""
    approvals_requested: int
    approved: int
    wrong_actions: int
    """Actions that fixed no fault (see `actions` for each verdict)."""
    control_incidents: int
    """Incidents opened in the no-fault control periods: false alarms."""
    incidents: int
    escalations: int
    events: int
    denied_by: dict[str, int] = field(default_factory=dict)
    two_person_approvals: int = 0
    expectations: list[Expectation] = field(default_factory=list)
    actions: list[ActionScore] = field(default_factory=list)
    approval_waits: list[timedelta] = field(default_factory=list)
    """From each approval request to the grant that completed it."""
    slo_minutes: dict[str, float] = field(default_factory=dict)
    """Per service, minutes of virtual time it was degraded (from the world)."""
    tiers: dict[str, str] = field(default_factory=dict)
    """Each service's tier, for grouping."""
    refused_signals: int = 0
    """Malformed deliveries the webhook parser refused."""
    open_incidents: int = 0
    firing_alerts: int = 0
    hours: float = 0.0
    """The simulated span, in hours."""
    signal_faults: list[SignalFaultScore] = field(default_factory=list)
    """Faults of the alerting pipeline, apart from the outages: no figure about faults counts
    them."""
    start: datetime | None = None
    """The start of the simulated span."""
    learner_proposals: int = 0
    """Actions the learning agent proposed (`learning.agent: on`)."""

    @property
    def injected(self) -> int:
        return len(self.faults)

    @property
    def detected(self) -> int:
        return sum(1 for f in self.faults if f.detected_at is not None)

    @property
    def auto_remediated(self) -> int:
        return sum(1 for f in self.faults if f.remediated)

    @property
    def escalated(self) -> int:
        return sum(1 for f in self.faults if f.escalated)

    @property
    def human_fixed(self) -> int:
        return sum(1 for f in self.faults if f.fixed_by_human)

    @property
    def right_actions(self) -> int:
        return sum(1 for a in self.actions if a.verdict == "right")

    @property
    def harmful_actions(self) -> int:
        return sum(1 for a in self.actions if a.verdict == "harmful")

    @property
    def false_actions(self) -> int:
        return sum(1 for a in self.actions if a.false)

    @property
    def false_action_rate(self) -> float:
        """False actions per simulated hour."""
        return self.false_actions / self.hours if self.hours > 0 else 0.0

    @property
    def passed(self) -> bool:
        return all(e.ok for e in self.expectations)

    def detect_times(self) -> list[timedelta]:
        return [t for f in self.faults if (t := f.time_to_detect) is not None]

    def recover_times(self) -> list[timedelta]:
        return [t for f in self.faults if (t := f.time_to_recover) is not None]

    def fault_outcomes(self) -> list[FaultOutcome]:
        """Every fault in order of injection, with onduty's first action on it and how long it
        took to recover."""
        start = self.start
        ordered = sorted(self.faults, key=lambda f: (f.record.injected_at, f.record.id))
        outcomes = []
        for order, fault in enumerate(ordered):
            record = fault.record
            taken = sorted((a for a in self.actions if a.fault_id == record.id), key=lambda a: a.at)
            recover = fault.time_to_recover
            outcomes.append(
                FaultOutcome(
                    order=order,
                    kind=record.kind,
                    injected_s=(record.injected_at - start).total_seconds() if start else 0.0,
                    recover_s=recover.total_seconds() if recover is not None else None,
                    first_action=taken[0].verdict if taken else None,
                    wrong_actions=sum(1 for a in taken if a.verdict != "right"),
                )
            )
        return outcomes

    def metrics(self, group: Group | None = None) -> Metrics:
        """Every figure by its metric name (durations in seconds; None where there is nothing
        to measure, e.g. no fault recovered). `group` ("tier"|"service"|"kind", name) restricts
        the figures about faults, actions and SLO minutes to that group's; ("rule", name)
        counts `guardrail_denials` by that rule alone."""
        if group is not None and group[0] == "rule":
            return {**self.metrics(), "guardrail_denials": self.denied_by.get(group[1], 0)}
        faults = self.faults if group is None else [f for f in self.faults if f.in_group(group)]
        actions = self.actions if group is None else [a for a in self.actions if a.in_group(group)]
        signal_faults = [f for f in self.signal_faults if group is None or f.in_group(group)]
        detect = _seconds(t for f in faults if (t := f.time_to_detect) is not None)
        recover = _seconds(t for f in faults if (t := f.time_to_recover) is not None)
        escalate = _seconds(t for f in faults if (t := f.time_to_escalate) is not None)
        false_actions = sum(1 for a in actions if a.false)
        return {
            "faults": len(faults),
            "signal_faults": len(signal_faults),
            "detected": sum(1 for f in faults if f.detected_at is not None),
            "undetected": sum(1 for f in faults if f.detected_at is None),
            "auto_remediated": sum(1 for f in faults if f.remediated),
            "escalated": sum(1 for f in faults if f.escalated),
            "human_fixed": sum(1 for f in faults if f.fixed_by_human),
            "unrecovered": sum(1 for f in faults if f.record.cleared_at is None),
            "actions": len(actions),
            "right_actions": sum(1 for a in actions if a.verdict == "right"),
            "wrong_actions": sum(1 for a in actions if a.verdict == "wrong"),
            "harmful_actions": sum(1 for a in actions if a.verdict == "harmful"),
            "false_actions": false_actions,
            "false_action_rate": false_actions / self.hours if self.hours > 0 else None,
            "guardrail_denials": self.guardrail_denials,
            "approvals_requested": self.approvals_requested,
            "approved": self.approved,
            "approval_wait_p90": quantile(_seconds(self.approval_waits), 0.9),
            "mttd_median": _median(detect),
            "mttd_p90": quantile(detect, 0.9),
            "mttd_max": max(detect, default=None),
            "mttr_median": _median(recover),
            "mttr_p90": quantile(recover, 0.9),
            "mttr_max": max(recover, default=None),
            "escalated_within": max(escalate, default=None),
            "slo_minutes_lost": self._slo_minutes(group),
            "control_incidents": self.control_incidents,
            "open_incidents": self.open_incidents,
            "firing_alerts": self.firing_alerts,
            "refused_signals": self.refused_signals,
        }

    def groups(self) -> list[Group]:
        """Every (tier|service|kind, name) group with a fault or an action in this run."""
        found: set[Group] = set()
        for fault in self.faults:
            found.add(("kind", fault.record.kind))
            found |= {
                (what, name)
                for what, name in (("service", fault.record.service), ("tier", fault.tier))
                if name
            }
        for signal in self.signal_faults:
            found.add(("kind", signal.record.kind))
            found |= {
                (what, name)
                for what, name in (("service", signal.service), ("tier", signal.tier))
                if name
            }
        for action in self.actions:
            found |= {
                (what, name)
                for what, name in (
                    ("kind", action.fault_kind),
                    ("service", action.service),
                    ("tier", action.tier),
                )
                if name
            }
        return sorted(found)

    def _slo_minutes(self, group: Group | None) -> float | None:
        if group is None:
            return float(sum(self.slo_minutes.values()))
        what, name = group
        if what == "service":
            return float(self.slo_minutes.get(name, 0.0))
        if what == "tier":
            return float(sum(m for s, m in self.slo_minutes.items() if self.tiers.get(s) == name))
        return None  # minutes are a service's, not a fault kind's

    def to_dict(self) -> dict[str, Any]:
        """The scorecard as plain JSON data."""
        return {
            "metrics": self.metrics(),
            "by_group": {
                f"{what}:{name}": self.metrics((what, name)) for what, name in self.groups()
            },
            "faults": [
                {
                    "id": f.record.id,
                    "kind": f.record.kind,
                    "target": f.record.target,
                    "service": f.record.service,
                    "tier": f.tier,
                    "injected_at": f.record.injected_at.isoformat(),
                    "cleared_at": _iso(f.record.cleared_at),
                    "cleared_by": f.record.cleared_by,
                    "detected_at": _iso(f.detected_at),
                    "escalated_at": _iso(f.escalated_at),
                    "remediated": f.remediated,
                    "escalated": f.escalated,
                    "fixed_by_human": f.fixed_by_human,
                    "incidents": list(f.incidents),
                }
                for f in self.faults
            ],
            "signal_faults": [
                {
                    "id": f.record.id,
                    "kind": f.record.kind,
                    "target": f.record.target,
                    "service": f.service,
                    "tier": f.tier,
                    "cause": f.record.cause,
                    "from": f.record.injected_at.isoformat(),
                    "to": _iso(f.record.cleared_at),
                    "delivered": f.delivered,
                    "refused": f.refused,
                }
                for f in self.signal_faults
            ],
            "actions": [{**asdict(a), "at": a.at.isoformat()} for a in self.actions],
            "denied_by": dict(self.denied_by),
            "two_person_approvals": self.two_person_approvals,
            "approval_waits_s": _seconds(self.approval_waits),
            "slo_minutes_lost": dict(self.slo_minutes),
            "incidents": self.incidents,
            "escalations": self.escalations,
            "events": self.events,
            "expectations": [asdict(e) for e in self.expectations],
            "passed": self.passed,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(values: Iterable[timedelta]) -> list[float]:
    return [value.total_seconds() for value in values]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def quantile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank quantile of plain numbers; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 100) * len(ordered) // 100))
    return ordered[min(rank, len(ordered)) - 1]


def percentile(values: list[timedelta], fraction: float) -> timedelta | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 100) * len(ordered) // 100))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: list[timedelta]) -> timedelta | None:
    if not values:
        return None
    return timedelta(seconds=statistics.median(v.total_seconds() for v in values))


def score(
    events: Iterable[Event],
    faults: list[FaultRecord],
    applied: list[AppliedAction],
    scenario: Scenario,
    *,
    config: Config | None = None,
    slo_minutes_lost: Mapping[str, float] | None = None,
    refused_signals: int = 0,
    firing_alerts: int = 0,
    control_run: bool = False,
    steady_before: Mapping[str, float | None] | None = None,
    steady_after: Mapping[str, float | None] | None = None,
    steady_during: Sequence[Check] = (),
) -> Scorecard:
    """Score a run. `config` (the one the run used) gives services their tiers and instances
    their services; the world's `slo_minutes_lost()`, the count of malformed deliveries the
    parser refused and the alerts still firing at the end come from the driver. In a
    `control_run` (no fault at all) every incident is a false alarm. `steady_before` and
    `steady_after`: the world's `steady_metrics` just before the first fault and at the end,
    for the steady-state hypotheses (incidents open then are counted here); `steady_during`:
    how those held at every step (`expectations.Watch.checks`)."""
    outages = [record for record in faults if record.scope != SIGNALS]
    pipeline = [record for record in faults if record.scope == SIGNALS]
    received: list[tuple[datetime, str]] = []  # (when, service label), for the signal faults
    labels_of: dict[str, dict[str, str]] = {}
    opened: list[tuple[datetime, str, dict[str, str]]] = []
    escalated_at: dict[str, datetime] = {}
    resolved: set[str] = set()
    resolved_at: dict[str, datetime] = {}
    counts = {"ActionStarted": 0, "ApprovalRequested": 0, "ApprovalGranted": 0, "Escalated": 0}
    denials = 0
    denied_by: dict[str, int] = {}
    grants: dict[str, list[tuple[datetime, str]]] = {}
    requested: dict[str, tuple[datetime, int]] = {}
    total = 0
    learner = 0
    for event in events:
        total += 1
        data = event.data
        kind = event.type
        if kind == "SignalReceived":
            labels_of[data["fingerprint"]] = data.get("labels", {})
            if pipeline:
                received.append((event.ts, labels_of[data["fingerprint"]].get("service", "")))
        elif kind == "IncidentOpened":
            opened.append((event.ts, data["incident_id"], labels_of.get(data["fingerprint"], {})))
        elif kind == "IncidentResolved":
            resolved.add(data["incident_id"])
            resolved_at.setdefault(data["incident_id"], event.ts)
        elif kind == "Escalated":
            escalated_at.setdefault(data["incident_id"], event.ts)
        elif kind == "PolicyEvaluated" and data["verdict"] == "deny":
            rules = [r["rule"] for r in data["rules"] if r["effect"] == "deny"]
            guardrails = [rule for rule in rules if rule != AUTONOMY_RULE]
            if guardrails:
                denials += 1
            for rule in rules:
                denied_by[rule] = denied_by.get(rule, 0) + 1
        elif kind == "ApprovalRequested":
            requested.setdefault(data["approval_id"], (event.ts, int(data.get("required", 1))))
        elif kind == "ApprovalGranted":
            grants.setdefault(data["approval_id"], []).append((event.ts, event.actor))
        elif kind == "ActionProposed" and data.get("agent") == LEARNER:
            learner += 1
        if kind in counts:
            counts[kind] += 1

    tiers, service_of = _services(config, scenario)
    scores = [FaultScore(record, tier=_tier(record, tiers, service_of)) for record in outages]
    for at, incident_id, labels in opened:
        for fault in scores:
            if _matches(fault.record, at, labels):
                fault.incidents.append(incident_id)
                if fault.detected_at is None or at < fault.detected_at:
                    fault.detected_at = at
                handed = escalated_at.get(incident_id)
                if handed is not None:
                    fault.escalated = True
                    if fault.escalated_at is None or handed < fault.escalated_at:
                        fault.escalated_at = handed

    waits: list[timedelta] = []
    for approval_id, (asked, required) in requested.items():
        given = sorted(grants.get(approval_id, []))
        if len(given) >= required:
            waits.append(given[required - 1][0] - asked)

    judged = [
        _judge(action, outages, service_of, tiers)
        for action in applied
        if not action.command_id.startswith(HUMAN)
    ]
    start = scenario.start_at
    control = [(start + period.start, start + period.end) for period in scenario.control]
    card = Scorecard(
        faults=scores,
        actions_taken=counts["ActionStarted"],
        guardrail_denials=denials,
        approvals_requested=counts["ApprovalRequested"],
        approved=counts["ApprovalGranted"],
        wrong_actions=sum(1 for a in judged if a.verdict == "wrong"),
        control_incidents=sum(
            1 for at, _, _ in opened if control_run or any(a <= at < b for a, b in control)
        ),
        incidents=len(opened),
        escalations=counts["Escalated"],
        events=total,
        denied_by=denied_by,
        two_person_approvals=sum(1 for given in grants.values() if len({p for _, p in given}) >= 2),
        actions=judged,
        approval_waits=waits,
        slo_minutes=dict(slo_minutes_lost or {}),
        tiers=tiers,
        refused_signals=refused_signals,
        open_incidents=sum(1 for _, incident_id, _ in opened if incident_id not in resolved),
        firing_alerts=firing_alerts,
        hours=scenario.duration.total_seconds() / 3600,
        signal_faults=_signal_faults(pipeline, received, refused_signals, tiers, scenario),
        start=scenario.start_at,
        learner_proposals=learner,
    )
    first = min((f.injected_at for f in faults), default=None)
    before = {**(steady_before or {}), "open_incidents": _open_at(first, opened, resolved_at)}
    after = {**(steady_after or {}), "open_incidents": card.open_incidents}
    card.expectations = _expectations(card, scenario, before, steady_during, after)
    return card


def _services(config: Config | None, scenario: Scenario) -> tuple[dict[str, str], dict[str, str]]:
    """Each service's tier, and each instance's service: from the config the run used, else
    from the scenario's fleet."""
    if config is not None:
        services = [(s.name, str(s.tier), list(s.instances)) for s in config.services]
    elif scenario.fleet is not None:
        services = [(s.name, s.tier, s.instance_names()) for s in scenario.fleet.services]
    else:
        services = []
    tiers = {name: tier for name, tier, _ in services}
    service_of = {instance: name for name, _, instances in services for instance in instances}
    return tiers, service_of


def _tier(record: FaultRecord, tiers: Mapping[str, str], service_of: Mapping[str, str]) -> str:
    """The fault's service's tier; for a fault with no service of its own (a region outage),
    the most critical tier among the services whose alerts it raises."""
    if record.service:
        return tiers.get(record.service, "")
    touched = {
        tiers[service]
        for name in _sources(record)
        if (service := service_of.get(name, name)) in tiers
    }
    return min(touched, key=_rank, default="")


def _rank(tier: str) -> int:
    return TIERS.index(tier) if tier in TIERS else len(TIERS)


def _signal_faults(
    records: list[FaultRecord],
    received: list[tuple[datetime, str]],
    refused: int,
    tiers: Mapping[str, str],
    scenario: Scenario,
) -> list[SignalFaultScore]:
    """The faults of the alerting pipeline, each with the signals it applied to that were
    received while it held, and (for malformed signals) the deliveries refused: the run's
    refusals all come from malformed-signal faults, so a lone one owns them all."""
    garbling = [r for r in records if r.kind == MalformedSignals.kind]
    end = scenario.start_at + scenario.duration
    scores = []
    for record in records:
        service = "" if record.target == ANY else record.service or record.target
        until = record.cleared_at or end
        delivered = sum(
            1
            for at, about in received
            if record.injected_at <= at < until and (not service or about == service)
        )
        own: int | None = 0
        if record.kind == MalformedSignals.kind:
            own = refused if len(garbling) == 1 else None
        scores.append(
            SignalFaultScore(record, delivered, own, service=service, tier=tiers.get(service, ""))
        )
    return scores


def _open_at(
    moment: datetime | None,
    opened: list[tuple[datetime, str, dict[str, str]]],
    resolved_at: Mapping[str, datetime],
) -> int:
    """Incidents open just before `moment` (at the end when None)."""
    return sum(
        1
        for at, incident_id, _ in opened
        if (moment is None or at < moment)
        and (
            incident_id not in resolved_at
            or (moment is not None and resolved_at[incident_id] >= moment)
        )
    )


def _judge(
    action: AppliedAction,
    faults: list[FaultRecord],
    service_of: Mapping[str, str],
    tiers: Mapping[str, str],
) -> ActionScore:
    """An action with the world's verdict, and what it is attributed to: the fault it healed,
    else one active on its target when it ran."""
    service = service_of.get(action.target, action.target if action.target in tiers else "")
    touched = [f for f in faults if _touches(f, action, service)]
    healer = [f for f in faults if f.cleared_by == action.command_id]
    cause = next(iter(healer or touched), None)
    return ActionScore(
        command_id=action.command_id,
        action=action.action,
        target=action.target,
        at=action.at,
        verdict=action.verdict,
        reason=action.reason,
        false=action.target_was_healthy,
        service=service,
        tier=tiers.get(service, ""),
        fault_kind=cause.kind if cause is not None else "",
        fault_id=cause.id if cause is not None else "",
    )


def _touches(fault: FaultRecord, action: AppliedAction, service: str) -> bool:
    """Whether the fault was active on the action's target (its own target, its service, or
    where its alerts come from) when it ran."""
    if action.at < fault.injected_at or (
        fault.cleared_at is not None and action.at > fault.cleared_at
    ):
        return False
    if action.target in (fault.target, fault.service) or action.target in _sources(fault):
        return True
    return fault.target == fault.service and service == fault.service


def _sources(fault: FaultRecord) -> tuple[str, ...]:
    """The instances and services whose alerts the fault raises."""
    return fault.signals_from or (fault.target,)


def _matches(fault: FaultRecord, at: datetime, labels: dict[str, str]) -> bool:
    if labels.get("alertname") not in fault.alertnames or at < fault.injected_at:
        return False
    if fault.cleared_at is not None and at > fault.cleared_at + _LATE:
        return False
    sources = _sources(fault)
    if labels.get("instance") in sources or labels.get("service") in sources:
        return True
    return fault.scope == "region" and labels.get("region") == fault.target


def _expectations(
    card: Scorecard,
    scenario: Scenario,
    steady_before: Mapping[str, float | None] | None,
    steady_during: Sequence[Check],
    steady_after: Mapping[str, float | None] | None,
) -> list[Expectation]:
    """The scenario's expectations over the scorecard's metrics (a group's through
    `metrics(group)`), and its steady-state hypotheses over the fleet before the first fault,
    at every step (checked as the run went) and at the end (with the metrics too)."""
    metrics = card.metrics()
    checks = [_checked(check(e, metrics, card.metrics)) for e in scenario.expectations()]
    before = scenario.steady_before()
    if before:
        state = dict(steady_before or {})
        checks += [_checked(check(e, state), "steady state before: ") for e in before]
    checks += [_checked(outcome, "steady state during: ") for outcome in steady_during]
    after = scenario.steady_after()
    if after:
        state = {**metrics, **(steady_after or {})}
        checks += [_checked(check(e, state, card.metrics), "steady state after: ") for e in after]
    return checks


def _checked(outcome: Check, prefix: str = "") -> Expectation:
    return Expectation(prefix + outcome.name, outcome.bound, outcome.actual, outcome.ok)
