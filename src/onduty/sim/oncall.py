"""The simulated on-call humans: they approve what is asked, acknowledge pages, and — some time
after being paged — fix what onduty handed them, directly in the fleet.

They read the log, like a person reading the pager and the console: every appended event is fed
to `feed`, and `due(now)` says what they do at an evaluation step. Because their behaviour is a
function of the log, a resumed run can tell which human fixes had already happened (`fixes_until`)
and re-simulate the fleet with them.

They answer approvals through the same door as real people: the answer desk
(`onduty.approvals`), over a read model of the log they read, with the same checks (still
pending? already approved by this person?) and the same role rules. `give` passes an intended
answer through the desk just before it is recorded.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from onduty.approvals import AnswerDesk, Refusal, Verdict
from onduty.config import ConfigError
from onduty.events import Acknowledged, Event
from onduty.readmodel import IncidentProjection, PolicyView
from onduty.runtime import Input
from onduty.sim.faults import FAULT_KINDS
from onduty.sim.scenario import FaultSpec, Person, Scenario, sample_delay

logger = logging.getLogger("onduty")

HUMAN = "human"
# What a human does for an alert onduty escalated: the obvious fix, when there is one.
FIXES = {
    "InstanceDown": ("process.restart", "instance"),
    "HighMemoryUsage": ("process.restart", "instance"),
    "HighErrorRate": ("deploy.rollback", "service"),
}


@dataclass(frozen=True)
class HumanFix:
    at: datetime
    action: str
    target: str
    command_id: str


@dataclass(frozen=True)
class HumanAnswer:
    """A person about to answer an approval request (checked at the answer desk by `give`)."""

    approval_id: str
    person: str
    verdict: Verdict = "approve"


@dataclass
class _Page:
    incident_id: str
    ack_at: datetime | None
    fix_at: datetime | None
    person: str = ""


@dataclass
class OnCall:
    scenario: Scenario
    start: datetime
    step: timedelta
    _labels: dict[str, dict[str, str]] = field(default_factory=dict)
    _incident_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    _grants: dict[tuple[str, str], datetime] = field(default_factory=dict)
    _pages: dict[str, _Page] = field(default_factory=dict)
    _resolved: dict[str, datetime] = field(default_factory=dict)
    _read: IncidentProjection = field(default_factory=IncidentProjection)
    _policy: PolicyView = field(default_factory=PolicyView)
    _desk: AnswerDesk | None = None
    _rng: random.Random = field(init=False)
    _roster: list[Person] = field(init=False)
    _faults: list[FaultSpec] | None = None

    def __post_init__(self) -> None:
        # People draw from a generator of their own: the fleet's noise never depends on them.
        self._rng = random.Random(f"people:{self.scenario.seed}")
        self._roster = self.scenario.roster()

    def _present(self, person: Person) -> bool:
        """Whether `person` answers this time (a draw only when they may be away)."""
        return not (person.away and self._rng.random() < person.away)

    def desk(self) -> AnswerDesk:
        """The answer desk over what these people have read of the log."""
        if self._desk is None:
            self._desk = AnswerDesk(self._read, self._approval_roles)
        return self._desk

    def _approval_roles(self) -> list[str]:
        document = self._policy.document or {}
        return list(document.get("policy", {}).get("approvals", {}).get("roles", []))

    def _align(self, moment: datetime) -> datetime:
        """The first evaluation step at or after `moment`: humans act between steps."""
        steps = -(-(moment - self.start) // self.step)
        return self.start + steps * self.step

    def feed(self, event: Event) -> None:
        self._read.feed(event)
        self._policy.feed(event)
        data = event.data
        people = self.scenario.on_call
        if event.type == "SignalReceived":
            self._labels[data["fingerprint"]] = data.get("labels", {})
        elif event.type == "IncidentOpened":
            self._incident_labels[data["incident_id"]] = self._labels.get(data["fingerprint"], {})
        elif event.type == "ApprovalRequested":
            required = data.get("required", 1)
            chosen = 0
            for person in self._roster:
                if chosen >= required:
                    break
                if people.role not in person.roles or person.approve_after is None:
                    continue
                key = (data["approval_id"], person.name)
                if key in self._grants or not self._present(person):
                    continue
                chosen += 1
                after = sample_delay(person.approve_after, self._rng)
                assert after is not None
                self._grants[key] = self._align(event.ts + after * chosen)
        elif event.type in ("ApprovalGranted", "ApprovalDenied"):
            self._grants.pop((data["approval_id"], event.actor), None)
        elif event.type == "ApprovalExpired":
            for key in [k for k in self._grants if k[0] == data["approval_id"]]:
                del self._grants[key]
        elif event.type == "Escalated" and data["incident_id"] not in self._pages:
            responder = next((p for p in self._roster if self._present(p)), None)
            if responder is not None:  # everyone away: a later page may find someone
                ack = sample_delay(responder.acknowledge_after, self._rng)
                fix = sample_delay(responder.fix_after, self._rng)
                self._pages[data["incident_id"]] = _Page(
                    data["incident_id"],
                    self._align(event.ts + ack) if ack is not None else None,
                    self._align(event.ts + fix) if fix is not None else None,
                    responder.name,
                )
        elif event.type == "Acknowledged" and data["incident_id"] in self._pages:
            self._pages[data["incident_id"]].ack_at = None
        elif event.type == "IncidentResolved":
            self._resolved.setdefault(data["incident_id"], event.ts)

    def due(self, now: datetime) -> tuple[list[HumanAnswer | Input], list[HumanFix]]:
        """What the humans do at `now`: answers to approvals (for `give`) and other inputs for
        onduty (with their actor), and fixes they make in the fleet themselves."""
        inputs: list[HumanAnswer | Input] = []
        for (approval_id, person), at in sorted(self._grants.items(), key=lambda kv: kv[1]):
            if at <= now:
                del self._grants[(approval_id, person)]
                inputs.append(HumanAnswer(approval_id, person))
        for page in self._pages.values():
            if page.ack_at is not None and page.ack_at <= now:
                page.ack_at = None
                resolved = self._resolved.get(page.incident_id)
                if resolved is None or resolved > now:
                    person = page.person or self.scenario.on_call.approvers[0]
                    inputs.append(Input(Acknowledged(incident_id=page.incident_id), actor=person))
        return inputs, self.fixes_until(now)

    def give(self, item: HumanAnswer | Input) -> Input | None:
        """The input to record for what a person does, or None when the answer desk refuses an
        answer (the request was decided meanwhile, or this person already approved it)."""
        if isinstance(item, Input):
            return item
        roles = (self.scenario.on_call.role,)
        given = self.desk().answer(item.approval_id, item.person, roles, item.verdict)
        if isinstance(given, Refusal):
            logger.debug("simulated %s does not answer: %s", item.person, given.reason)
            return None
        return given.input()

    def fixes_until(self, now: datetime) -> list[HumanFix]:
        """The fixes humans make by `now` (each once), in time order."""
        fixes: list[HumanFix] = []
        for page in sorted(self._pages.values(), key=lambda p: (p.fix_at or now, p.incident_id)):
            if page.fix_at is None or page.fix_at > now:
                continue
            at, page.fix_at = page.fix_at, None
            resolved = self._resolved.get(page.incident_id)
            if resolved is not None and resolved <= at:
                continue  # it went away by itself, or onduty fixed it after all
            labels = self._incident_labels.get(page.incident_id, {})
            found = self.diagnose(labels, at)
            if found is not None:
                fixes.append(HumanFix(at, found[0], found[1], f"{HUMAN}-{page.incident_id}"))
        return fixes

    def diagnose(self, labels: dict[str, str], at: datetime) -> tuple[str, str] | None:
        """What a person investigating an incident with these labels does at `at`: the right
        fix of the fault behind it (the latest one injected by then whose alerts these are),
        nothing when no action fixes that fault, and the obvious fix for the alert when no
        fault explains it."""
        alertname = labels.get("alertname", "")
        fault = self._cause(labels, at)
        if fault is not None:
            kind = FAULT_KINDS[fault.kind]
            if not kind.healed_by:
                return None
            return sorted(kind.healed_by)[0], str(fault.target)
        fix = FIXES.get(alertname)
        if fix is not None and labels.get(fix[1]):
            return fix[0], labels[fix[1]]
        return None

    def _cause(self, labels: dict[str, str], at: datetime) -> FaultSpec | None:
        if self._faults is None:
            try:
                self._faults = self.scenario.planned_faults()
            except ConfigError:  # targets drawn from a config's fleet: only the named ones
                self._faults = [f for f in self.scenario.faults if f.fixed_target and not f.drawn]
        callers = {
            name: [c for c, deps in self.scenario.dependencies().items() if name in deps]
            for name in {str(f.target) for f in self._faults}
        }
        offset = at - self.start
        found: FaultSpec | None = None
        for fault in self._faults:
            kind = FAULT_KINDS[fault.kind]
            if (
                fault.at is None
                or fault.at > offset
                or labels.get("alertname") not in kind.alertnames
            ):
                continue
            target = str(fault.target)
            if fault.kind == "dependency_outage":
                ours = labels.get("service") in callers.get(target, [])
            elif kind.scope == "instance":
                ours = labels.get("instance") == target
            elif kind.scope == "region":
                ours = labels.get("region") == target
            else:
                ours = labels.get("service") == target
            if ours and (found is None or found.at is None or fault.at >= found.at):
                found = fault
        return found
