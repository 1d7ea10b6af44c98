"""The scorecard: what the manager did against the simulated truth.

Faults come from the world (what really broke, when, and what healed it); incidents, verdicts
and actions come from the log. A fault is *detected* when an incident opened for one of the
alerts it raises on its target, *auto-remediated* when an action of onduty's healed it, and
*escalated* when one of its incidents was handed to a human.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from onduty.events import Event
from onduty.sim.faults import SELF, FaultRecord
from onduty.sim.oncall import HUMAN
from onduty.sim.scenario import Scenario
from onduty.sim.world import AppliedAction

# An incident opened this long after a fault cleared is not that fault's.
_LATE = timedelta(minutes=10)


@dataclass
class FaultScore:
    record: FaultRecord
    detected_at: datetime | None = None
    escalated: bool = False
    incidents: list[str] = field(default_factory=list)

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


@dataclass
class Expectation:
    name: str
    bound: str
    actual: int
    ok: bool


@dataclass
class Scorecard:
    """What a scenario's run did, counted from its event log."""

    faults: list[FaultScore]
    actions_taken: int
    guardrail_denials: int
    """Verdicts that denied an action (`denied_by` says which rule)."""
    approvals_requested: int
    approved: int
    wrong_actions: int
    """Actions on a healthy target (one with no fault at the time)."""
    control_incidents: int
    """Incidents opened in the no-fault control periods: false alarms."""
    incidents: int
    escalations: int
    events: int
    denied_by: dict[str, int] = field(default_factory=dict)
    two_person_approvals: int = 0
    expectations: list[Expectation] = field(default_factory=list)

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
    def passed(self) -> bool:
        return all(e.ok for e in self.expectations)

    def detect_times(self) -> list[timedelta]:
        return [t for f in self.faults if (t := f.time_to_detect) is not None]

    def recover_times(self) -> list[timedelta]:
        return [t for f in self.faults if (t := f.time_to_recover) is not None]


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
) -> Scorecard:
    labels_of: dict[str, dict[str, str]] = {}
    opened: list[tuple[datetime, str, dict[str, str]]] = []
    escalated_incidents: set[str] = set()
    counts = {"ActionStarted": 0, "ApprovalRequested": 0, "ApprovalGranted": 0, "Escalated": 0}
    denials = 0
    denied_by: dict[str, int] = {}
    grants: dict[str, set[str]] = {}
    total = 0
    for event in events:
        total += 1
        data = event.data
        if event.type == "SignalReceived":
            labels_of[data["fingerprint"]] = data.get("labels", {})
        elif event.type == "IncidentOpened":
            opened.append((event.ts, data["incident_id"], labels_of.get(data["fingerprint"], {})))
        elif event.type == "Escalated":
            escalated_incidents.add(data["incident_id"])
        elif event.type == "PolicyEvaluated" and data["verdict"] == "deny":
            denials += 1
            for rule in data["rules"]:
                if rule["effect"] == "deny":
                    denied_by[rule["rule"]] = denied_by.get(rule["rule"], 0) + 1
        elif event.type == "ApprovalGranted":
            grants.setdefault(data["approval_id"], set()).add(event.actor)
        if event.type in counts:
            counts[event.type] += 1

    scores = [FaultScore(record) for record in faults]
    for at, incident_id, labels in opened:
        for fault in scores:
            if _matches(fault.record, at, labels):
                fault.incidents.append(incident_id)
                if fault.detected_at is None or at < fault.detected_at:
                    fault.detected_at = at
                if incident_id in escalated_incidents:
                    fault.escalated = True

    start = scenario.start_at
    control = [(start + period.start, start + period.end) for period in scenario.control]
    card = Scorecard(
        faults=scores,
        actions_taken=counts["ActionStarted"],
        guardrail_denials=denials,
        approvals_requested=counts["ApprovalRequested"],
        approved=counts["ApprovalGranted"],
        wrong_actions=sum(
            1
            for action in applied
            if action.target_was_healthy and not action.command_id.startswith(HUMAN)
        ),
        control_incidents=sum(1 for at, _, _ in opened if any(a <= at < b for a, b in control)),
        incidents=len(opened),
        escalations=counts["Escalated"],
        events=total,
        denied_by=denied_by,
        two_person_approvals=sum(1 for people in grants.values() if len(people) >= 2),
    )
    card.expectations = _expectations(card, scenario)
    return card


def _matches(fault: FaultRecord, at: datetime, labels: dict[str, str]) -> bool:
    if labels.get("alertname") not in fault.alertnames or at < fault.injected_at:
        return False
    if fault.cleared_at is not None and at > fault.cleared_at + _LATE:
        return False
    return fault.target in (labels.get("instance"), labels.get("service"))


def _expectations(card: Scorecard, scenario: Scenario) -> list[Expectation]:
    expect = scenario.expect
    checks: list[Expectation] = []
    for name, actual, minimum in (
        ("detected", card.detected, expect.detected_min),
        ("auto-remediated", card.auto_remediated, expect.auto_remediated_min),
        ("escalated", card.escalated, expect.escalated_min),
        ("approved", card.approved, expect.approved_min),
        ("guardrail denials", card.guardrail_denials, expect.guardrail_denials_min),
        ("fixed by a human after escalation", card.human_fixed, expect.human_fixed_min),
    ):
        if minimum is not None:
            checks.append(Expectation(name, f">= {minimum}", actual, actual >= minimum))
    for name, actual, maximum in (
        ("wrong actions", card.wrong_actions, expect.wrong_actions_max),
        ("incidents in control periods", card.control_incidents, expect.control_incidents_max),
    ):
        if maximum is not None:
            checks.append(Expectation(name, f"<= {maximum}", actual, actual <= maximum))
    for rule in expect.denied_by:
        count = card.denied_by.get(rule, 0)
        checks.append(Expectation(f"denied by {rule}", ">= 1", count, count >= 1))
    return checks
