"""The story of each incident, told from the event log: what went wrong (when a simulation knows
the truth), the signals, the decisions and their reasons, the actions and how they ended, the
verification, the escalations and approvals (who, when), and the recovery.

One pass over the log builds an `IncidentTimeline` per incident. Each event becomes a `Line`
drawn by the console's own timeline renderers (`onduty.api.console.timeline`), so a report says
exactly what the console says; an event belongs to the incident it names, or to the one of the
command or approval it follows up (`onduty.readmodel.timeline.incident_of`, as the read models
decide). A simulation adds its ground truth: `FaultRecord`s (cause, right fix) and the actions
that reached the simulated fleet with the judgement on each (right, wrong, harmful).

Everything here is plain data; the renderers (`html`, `markdown`) escape every piece of text.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from onduty.api.console.charts import outcome_of
from onduty.api.console.signals import SignalDetails, details_of
from onduty.api.console.timeline import entry
from onduty.events import Event
from onduty.readmodel.timeline import incident_of, is_signal_event, learn_follow_ups

SIGNAL_LINES_FIRST = 40
SIGNAL_LINES_RECENT = 10
"""Signal events of one incident shown as lines: the first and the most recent (an alert storm
of thousands of signals keeps its count, and the log keeps every one)."""
SIGNALS_LISTED = 50
"""Distinct signals of one incident described (labels, annotations)."""
LATE = timedelta(minutes=10)
"""An incident opened this long after a fault cleared is not that fault's (as the scorecard)."""
HUMAN = "human-"
"""The command ids of the fixes the simulated people make (`onduty.sim.oncall`)."""


@dataclass
class Line:
    """One line of an incident's story, ready to show."""

    at: datetime
    kind: str
    """fault, signal, plan, proposal, verdict, approval, action, verify, undo, escalation, ack,
    notify, recovery, resolved, other."""
    title: str
    tone: str = "info"
    facts: list[tuple[str, str]] = field(default_factory=list)
    rules: list[dict[str, str]] = field(default_factory=list)
    """A verdict's rules: rule, effect, word, tone, reason."""
    text: str = ""
    by: str | None = None
    seq: int | None = None
    """The event's place in the log; None for the simulated ground truth."""
    event_type: str = ""
    command_id: str = ""
    signal: SignalDetails | None = None


@dataclass(frozen=True)
class Fault:
    """A fault's ground truth (a simulation's `FaultRecord`, or its plain-data form)."""

    id: str
    kind: str
    target: str
    service: str
    injected_at: datetime
    cleared_at: datetime | None
    cleared_by: str | None
    cause: str = ""
    right_fix: str | None = None
    scope: str = ""
    alertnames: tuple[str, ...] = ()
    signals_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class Applied:
    """An action that reached the simulated fleet, as the truth judges it."""

    command_id: str
    action: str
    target: str
    at: datetime
    verdict: str = ""
    reason: str = ""
    target_was_healthy: bool = False


@dataclass
class Decision:
    """A guardrail verdict on a proposed action, with each rule's reason."""

    at: datetime
    command_id: str
    verdict: str
    reason: str
    rules: list[tuple[str, str, str]]
    """(rule, effect, reason)."""
    policy_version: str = ""


@dataclass
class Action:
    """A proposed action and what became of it."""

    command_id: str
    action: str
    target: str
    runbook: str
    rationale: str
    proposed_at: datetime
    verdict: str = ""
    """The last guardrail verdict on it ("" when none was recorded)."""
    started_at: datetime | None = None
    outcome: str = "not run"
    """not run, running, succeeded, failed, unknown."""
    finished_at: datetime | None = None
    detail: str = ""
    verified: bool | None = None
    judged: str = ""
    """In a simulation: right, wrong or harmful (the truth's verdict)."""
    judged_reason: str = ""


@dataclass
class Answer:
    """An approval request's answer: who, when, and what they said."""

    approval_id: str
    at: datetime
    who: str
    answer: str
    """granted, denied, expired."""
    role: str | None = None
    comment: str = ""


@dataclass
class IncidentTimeline:
    incident_id: str
    title: str
    service: str | None
    opened_at: datetime
    status: str = "open"
    resolved_at: datetime | None = None
    resolution: str = ""
    lines: list[Line] = field(default_factory=list)
    signals: list[SignalDetails] = field(default_factory=list)
    """The distinct signals that opened or joined it (at most `SIGNALS_LISTED`)."""
    signal_events: int = 0
    signal_lines_omitted: int = 0
    decisions: list[Decision] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    runbooks: list[str] = field(default_factory=list)
    """The runbooks that matched it (planned or proposed), in order."""
    approvals: list[Answer] = field(default_factory=list)
    escalations: list[tuple[datetime, str]] = field(default_factory=list)
    acknowledged: list[tuple[datetime, str]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    human_fixes: list[Applied] = field(default_factory=list)

    @property
    def escalated(self) -> bool:
        return bool(self.escalations)

    @property
    def outcome(self) -> str:
        """auto-remediated, resolved by itself, escalated or open (as the shift overview)."""
        acted = any(action.started_at is not None for action in self.actions)
        return outcome_of(self.status, self.escalated, acted)

    @property
    def duration(self) -> timedelta | None:
        return None if self.resolved_at is None else self.resolved_at - self.opened_at

    @property
    def recovered_at(self) -> datetime | None:
        """When the truth says health came back (the latest of its faults), else None."""
        cleared = [fault.cleared_at for fault in self.faults]
        if not cleared or any(moment is None for moment in cleared):
            return None
        return max(moment for moment in cleared if moment is not None)


# ---------------------------------------------------------------------------- ground truth


def value_of(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


def _moment(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def fault_of(record: Any) -> Fault:
    """A `FaultRecord` (or its plain-data form: a mapping of the same fields) as a `Fault`."""
    injected = _moment(value_of(record, "injected_at"))
    if injected is None:
        raise ValueError(f"fault {value_of(record, 'id')!r} has no injected_at")
    return Fault(
        id=str(value_of(record, "id", "")),
        kind=str(value_of(record, "kind", "")),
        target=str(value_of(record, "target", "")),
        service=str(value_of(record, "service", "")),
        injected_at=injected,
        cleared_at=_moment(value_of(record, "cleared_at")),
        cleared_by=value_of(record, "cleared_by"),
        cause=str(value_of(record, "cause", "") or ""),
        right_fix=value_of(record, "right_fix"),
        scope=str(value_of(record, "scope", "") or ""),
        alertnames=tuple(value_of(record, "alertnames", ()) or ()),
        signals_from=tuple(value_of(record, "signals_from", ()) or ()),
    )


def applied_of(action: Any) -> Applied:
    """An `AppliedAction` (or a mapping of its fields) as an `Applied`."""
    at = _moment(value_of(action, "at"))
    if at is None:
        raise ValueError(f"action {value_of(action, 'command_id')!r} has no time")
    return Applied(
        command_id=str(value_of(action, "command_id", "")),
        action=str(value_of(action, "action", "")),
        target=str(value_of(action, "target", "")),
        at=at,
        verdict=str(value_of(action, "verdict", "") or ""),
        reason=str(value_of(action, "reason", "") or ""),
        target_was_healthy=bool(value_of(action, "target_was_healthy", False)),
    )


def _matches(fault: Fault, at: datetime, labels: Mapping[str, str]) -> bool:
    """Whether an incident opened at `at` by a signal with `labels` is about `fault`: the
    scorecard's rule, for when no scorecard says which incidents each fault had."""
    if fault.alertnames and labels.get("alertname") not in fault.alertnames:
        return False
    if at < fault.injected_at or (fault.cleared_at is not None and at > fault.cleared_at + LATE):
        return False
    where = set(fault.signals_from) or {fault.target, fault.service}
    return bool(where & {labels.get("instance"), labels.get("service")})


# ---------------------------------------------------------------------------- the log


class _Builder:
    def __init__(self, only: set[str] | None) -> None:
        self.only = only
        self.incidents: dict[str, IncidentTimeline] = {}
        self.follows: dict[str, str] = {}
        self.actions: dict[str, Action] = {}
        self.signals: dict[str, Event] = {}
        """The latest `SignalReceived` of each fingerprint."""
        self.opening_labels: dict[str, Mapping[str, str]] = {}
        self.recent: dict[str, deque[Line]] = {}
        self.seen_signals: dict[str, set[str]] = {}

    def feed(self, event: Event) -> None:
        data = event.data
        if event.type == "SignalReceived":
            fingerprint = data.get("fingerprint")
            if isinstance(fingerprint, str):
                self.signals[fingerprint] = event
            return
        if event.type == "IncidentOpened":
            opened = str(data["incident_id"])
            if self.only is not None and opened not in self.only:
                return
            self.incidents[opened] = IncidentTimeline(
                incident_id=opened,
                title=str(data.get("title", "")),
                service=data.get("service"),
                opened_at=event.ts,
            )
            signal = self.signals.get(str(data.get("fingerprint")))
            self.opening_labels[opened] = signal.data.get("labels") or {} if signal else {}
        incident_id = incident_of(data, self.follows)
        incident = self.incidents.get(incident_id or "")
        if incident is None:
            return
        learn_follow_ups(data, incident.incident_id, self.follows)
        self._note(incident, event)

    def _note(self, incident: IncidentTimeline, event: Event) -> None:
        shown = entry(event)
        line = Line(
            at=event.ts,
            kind=shown.kind,
            title=shown.title,
            tone=shown.tone,
            facts=list(shown.facts),
            rules=list(shown.rules),
            text=shown.text,
            by=shown.by,
            seq=event.seq,
            event_type=event.type,
            command_id=str(event.data.get("command_id") or ""),
        )
        data = event.data
        fingerprint = data.get("fingerprint")
        if isinstance(fingerprint, str) and fingerprint in self.signals:
            seen = self.seen_signals.setdefault(incident.incident_id, set())
            if fingerprint not in seen and len(incident.signals) < SIGNALS_LISTED:
                seen.add(fingerprint)
                line.signal = details_of(self.signals[fingerprint])
                incident.signals.append(line.signal)
        if is_signal_event(event):
            incident.signal_events += 1
            if incident.signal_events > SIGNAL_LINES_FIRST:
                recent = self.recent.setdefault(
                    incident.incident_id, deque(maxlen=SIGNAL_LINES_RECENT)
                )
                if len(recent) == SIGNAL_LINES_RECENT:
                    incident.signal_lines_omitted += 1
                recent.append(line)
                return
        incident.lines.append(line)
        self._follow(incident, event, line)

    def _follow(self, incident: IncidentTimeline, event: Event, line: Line) -> None:
        """Keep the structured story: runbooks, decisions, actions, approvals, escalations."""
        data, kind = event.data, event.type
        command = str(data.get("command_id") or "")
        action = self.actions.get(command)
        if kind == "IncidentUpdated" and data.get("change") == "planned":
            runbook = str(data.get("detail") or "")
            if runbook and runbook not in incident.runbooks:
                incident.runbooks.append(runbook)
            if runbook:
                line.kind, line.title, line.facts = (
                    "plan",
                    "Runbook matched",
                    [("runbook", runbook)],
                )
        elif kind == "ActionProposed":
            action = Action(
                command_id=command,
                action=str(data["action"]),
                target=str(data["target"]),
                runbook=str(data.get("runbook", "")),
                rationale=str(data.get("rationale", "")),
                proposed_at=event.ts,
            )
            self.actions[command] = action
            incident.actions.append(action)
            if action.runbook and action.runbook not in incident.runbooks:
                incident.runbooks.append(action.runbook)
        elif kind == "PolicyEvaluated":
            rules = [
                (str(rule["rule"]), str(rule["effect"]), str(rule.get("reason", "")))
                for rule in data.get("rules", [])
            ]
            incident.decisions.append(
                Decision(
                    event.ts,
                    command,
                    str(data["verdict"]),
                    str(data.get("reason", "")),
                    rules,
                    str(data.get("policy_version", "")),
                )
            )
            if action is not None:
                action.verdict = str(data["verdict"])
        elif kind in ("ApprovalGranted", "ApprovalDenied", "ApprovalExpired"):
            answer = {"ApprovalGranted": "granted", "ApprovalDenied": "denied"}.get(kind, "expired")
            incident.approvals.append(
                Answer(
                    str(data.get("approval_id", "")),
                    event.ts,
                    event.actor,
                    answer,
                    data.get("role"),
                    str(data.get("comment", "")),
                )
            )
        elif kind == "ActionStarted" and action is not None:
            action.started_at, action.outcome = event.ts, "running"
        elif kind in ("ActionSucceeded", "ActionFailed", "ActionOutcomeUnknown") and action:
            action.outcome = {
                "ActionSucceeded": "succeeded",
                "ActionFailed": "failed",
                "ActionOutcomeUnknown": "unknown",
            }[kind]
            action.finished_at = event.ts
            action.detail = str(data.get("output") or data.get("error") or data.get("reason") or "")
        elif kind in ("VerificationPassed", "VerificationFailed") and action is not None:
            action.verified = kind == "VerificationPassed"
        elif kind == "Escalated":
            incident.escalations.append((event.ts, str(data.get("reason", ""))))
        elif kind == "Acknowledged" or (
            kind == "IncidentUpdated" and data.get("change") == "acknowledged"
        ):
            incident.acknowledged.append((event.ts, event.actor))
        elif kind == "IncidentResolved":
            incident.status, incident.resolved_at = "resolved", event.ts
            incident.resolution = str(data.get("reason", ""))

    def finish(self) -> list[IncidentTimeline]:
        for incident in self.incidents.values():
            recent = self.recent.get(incident.incident_id)
            if recent:
                if incident.signal_lines_omitted:
                    incident.lines.append(
                        Line(
                            at=recent[0].at,
                            kind="omitted",
                            title=f"{incident.signal_lines_omitted} more signal events are not "
                            "shown here; the event log keeps every one",
                            tone="quiet",
                            seq=recent[0].seq,
                        )
                    )
                incident.lines.extend(recent)
                incident.lines.sort(key=lambda line: line.seq or 0)
        return sorted(self.incidents.values(), key=lambda item: (item.opened_at, item.incident_id))


def incident_timelines(
    events: Iterable[Event],
    faults: Iterable[Any] | None = None,
    *,
    actions: Iterable[Any] | None = None,
    fault_incidents: Mapping[str, Sequence[str]] | None = None,
    only: Iterable[str] | None = None,
) -> list[IncidentTimeline]:
    """Every incident of `events` (a log read in order) as a timeline, oldest first.

    A simulation adds its truth: `faults` (`FaultRecord`s or mappings of their fields), the
    `actions` that reached its fleet (`AppliedAction`s or mappings: their verdicts, and the
    fixes its people made), and `fault_incidents` (fault id → the incidents the scorecard
    counted for it; without it a fault goes to the incidents its alerts opened on its target
    while it lasted). `only`: just these incidents (the others are skipped as they are read)."""
    builder = _Builder(set(only) if only is not None else None)
    for event in events:
        builder.feed(event)
    timelines = builder.finish()
    truth = [fault_of(record) for record in faults or ()]
    applied = [applied_of(action) for action in actions or ()]
    if truth or applied:
        _add_truth(timelines, builder, truth, applied, fault_incidents)
    return timelines


def _add_truth(
    timelines: list[IncidentTimeline],
    builder: _Builder,
    faults: list[Fault],
    applied: list[Applied],
    fault_incidents: Mapping[str, Sequence[str]] | None,
) -> None:
    by_id = {incident.incident_id: incident for incident in timelines}
    judged = {item.command_id: item for item in applied}
    for incident in timelines:
        for action in incident.actions:
            truth = judged.get(action.command_id)
            if truth is not None:
                action.judged, action.judged_reason = truth.verdict, truth.reason
        for line in incident.lines:
            truth = judged.get(line.command_id) if line.event_type == "ActionStarted" else None
            if truth is not None and truth.verdict:
                said = f"{truth.verdict}: {truth.reason}" if truth.reason else truth.verdict
                line.facts.append(("judged", said))
                if truth.verdict != "right":
                    line.tone = "bad"
    for fault in faults:
        if fault_incidents is not None:
            mine = [by_id[i] for i in fault_incidents.get(fault.id, ()) if i in by_id]
        else:
            mine = [
                incident
                for incident in timelines
                if _matches(fault, incident.opened_at, builder.opening_labels[incident.incident_id])
            ]
        for incident in mine:
            incident.faults.append(fault)
            incident.lines.append(_injected(fault))
            if fault.cleared_at is not None:
                incident.lines.append(_cleared(fault, builder.actions, judged))
    for item in applied:
        if not item.command_id.startswith(HUMAN):
            continue
        fixed = by_id.get(item.command_id.removeprefix(HUMAN))
        if fixed is not None:
            fixed.human_fixes.append(item)
            fixed.lines.append(_human_fix(item))
    for incident in timelines:
        incident.lines.sort(key=_order)


_RANK = {"fault": 0, "recovery": 2}


def _order(line: Line) -> tuple[datetime, int, int]:
    """Time first; at one moment a fault before the log's events, a recovery after them."""
    return (line.at, _RANK.get(line.kind, 1), line.seq or 0)


def _injected(fault: Fault) -> Line:
    return Line(
        at=fault.injected_at,
        kind="fault",
        title=f"Fault: {fault.kind.replace('_', ' ')} on {fault.target}",
        tone="bad",
        facts=[
            (label, value)
            for label, value in (
                ("cause", fault.cause),
                ("right fix", fault.right_fix or "none: a person must be paged, or it ends"),
                ("scope", fault.scope),
                ("fault", fault.id),
            )
            if value
        ],
        by="the simulation (ground truth)",
    )


def _cleared(fault: Fault, actions: Mapping[str, Action], judged: Mapping[str, Applied]) -> Line:
    assert fault.cleared_at is not None
    by = fault.cleared_by or ""
    if by == "self":
        how = "it ended by itself"
    elif by.startswith(HUMAN):
        item = judged.get(by)
        how = f"a person's {item.action} on {item.target}" if item else "a person's fix"
    elif by in actions:
        how = f"onduty's {actions[by].action} on {actions[by].target} ({by})"
    else:
        how = by or "unknown"
    took = fault.cleared_at - fault.injected_at
    return Line(
        at=fault.cleared_at,
        kind="recovery",
        title=f"Recovered: {fault.target} is healthy again",
        tone="good",
        facts=[("healed by", how), ("after", _span(took)), ("fault", fault.id)],
        by="the simulation (ground truth)",
    )


def _human_fix(item: Applied) -> Line:
    facts = [("judged", f"{item.verdict}: {item.reason}" if item.reason else item.verdict)]
    return Line(
        at=item.at,
        kind="action",
        title=f"A person ran {item.action} on {item.target}",
        tone="info",
        facts=[fact for fact in facts if fact[1]],
        by="the simulated on-call",
    )


def _span(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"
