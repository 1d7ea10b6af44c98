"""The advisor agent in the core: when to consult the language model, the budget, and what its
recorded answer becomes.

Consulting is a decision (`AdviceRequested`, with a `ConsultAdvisor` command for the shell);
the answer is a fact from outside (`AdviceReceived`, or `AdviceFailed` when there is none). The
answer is judged here (`think/advisor.judge`): a valid choice becomes an `ActionProposed` of
agent `advisor`, which the arbiter and the guardrails judge like any proposal, with the
advisor's autonomy cap (`Setup.autonomy`); anything else is discarded (`AdviceDiscarded`).
Replay judges the recorded answer again and never asks a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from onduty.commands import ConsultAdvisor
from onduty.config_advisor import AdvisorSettings
from onduty.events import (
    AdviceDiscarded,
    AdviceFailed,
    AdviceReceived,
    AdviceRequested,
    Event,
    IncidentResolved,
    Payload,
    SignalReceived,
)
from onduty.lifecycle.base import Emitter, Prior, derive_id
from onduty.lifecycle.setup import Setup
from onduty.state import AdvisorState, DeployMark, Incident, State
from onduty.think import Proposal
from onduty.think.advisor import choices_for, judge
from onduty.think.features import deployish

AGENT = "advisor"
BUDGET_WINDOW = timedelta(hours=1)
RECENT = timedelta(hours=24)
"""How far back a deploy marker is still worth telling the advisor of."""
OTHER_ALERTS = 10
"""The most other firing alerts of the service the advisor is told of."""


@dataclass(eq=False, repr=False)
class Advisor:
    """Consults the advisor for incidents the configuration says to, within its budget, and
    turns its answers into proposals (`propose`, the action lifecycle's door for them)."""

    state: State
    setup: Setup
    emitter: Emitter
    propose: Callable[[Incident, Proposal], None] = field(default=lambda incident, proposal: None)

    @property
    def settings(self) -> AdvisorSettings:
        return self.setup.active.config.advisor

    @property
    def running(self) -> bool:
        configured = self.setup.configured
        return configured is not None and configured.config.advisor.enabled

    def _known(self) -> AdvisorState:
        if self.state.advisor is None:
            self.state.advisor = AdvisorState()
        return self.state.advisor

    # ------------------------------------------------------------------ consulting

    def consult(self, incident: Incident, context: dict[str, Any], matched: bool) -> None:
        """Ask for advice on a planned incident when the configuration says to: for one no
        runbook matched, or for every one (`consult: always`)."""
        settings = self.settings
        if not settings.enabled or (matched and settings.consult != "always"):
            return
        now = self.emitter.now
        known = self.state.advisor
        recent = [t for t in known.calls if now - t < BUDGET_WINDOW] if known else []
        if len(recent) >= settings.max_calls_per_hour:
            self.emitter.note(
                incident.incident_id,
                "advice_skipped",
                f"the advisor was not consulted: its budget of {settings.max_calls_per_hour} "
                "consultations an hour is spent",
            )
            return
        choices = choices_for(self.setup.active.agent, context)
        if not choices:
            self.emitter.note(
                incident.incident_id,
                "advice_skipped",
                "the advisor was not consulted: no runbook's action has a target for this incident",
            )
            return
        signal = context.get("signal", {})
        alert = signal.get("labels", {}).get("alertname", "this alert")
        count = known.consulted.get(incident.incident_id, 0) if known else 0
        request = AdviceRequested(
            request_id=derive_id("adv", incident.incident_id, str(count)),
            incident_id=incident.incident_id,
            title=incident.title,
            service=incident.service,
            labels=dict(signal.get("labels", {})),
            annotations=dict(signal.get("annotations", {})),
            choices=choices,
            reason=f"no runbook matches {alert}" if not matched else "consulted on every incident",
            similar=settings.similar,
            max_rationale=settings.max_rationale,
            context=self._context(incident, now),
        )
        self.emitter.emit(request, incident.incident_id)
        self.emitter.command(
            ConsultAdvisor(
                request.request_id, incident.incident_id, request.model_dump(mode="json")
            )
        )

    def _context(self, incident: Incident, now: datetime) -> dict[str, Any]:
        """What else is known of the incident's service now: its last deploy marker and the
        other alerts firing there, each with how long ago (whole minutes, by event time)."""

        def minutes(at: datetime | None) -> int | None:
            return None if at is None else int((now - at).total_seconds() // 60)

        context: dict[str, Any] = {}
        known = self.state.advisor
        deploy = known.deploys.get(incident.service or "") if known else None
        if deploy is not None and now - deploy.at <= RECENT:
            context["last_deploy"] = {
                "alertname": deploy.alertname,
                "labels": dict(deploy.labels),
                "minutes_ago": minutes(deploy.at),
            }
        mine = set(incident.fingerprints)
        others = [
            {
                "alertname": signal.labels.get("alertname", ""),
                "instance": signal.labels.get("instance", ""),
                "last_seen_minutes_ago": minutes(signal.last_seen),
            }
            for fingerprint, signal in self.state.signals.items()
            if signal.status == "firing"
            and fingerprint not in mine
            and incident.service is not None
            and self.setup.service_of(signal.labels) == incident.service
        ]
        context["other_alerts"] = others[:OTHER_ALERTS]
        return context

    def pending(self) -> list[ConsultAdvisor]:
        """After a restart: consultations asked and never answered, to ask again."""
        known = self.state.advisor
        if known is None:
            return []
        return [
            ConsultAdvisor(request_id, request["incident_id"], request)
            for request_id, request in known.pending.items()
            if request["incident_id"] in self.state.incidents
        ]

    # ------------------------------------------------------------------ folding

    def _apply_requested(self, body: AdviceRequested, event: Event) -> None:
        known = self._known()
        known.pending[body.request_id] = body.model_dump(mode="json")
        known.calls = [t for t in known.calls if event.ts - t < BUDGET_WINDOW] + [event.ts]
        known.consulted[body.incident_id] = known.consulted.get(body.incident_id, 0) + 1

    def _apply_answer(self, body: AdviceReceived | AdviceFailed, event: Event) -> None:
        if self.state.advisor is not None:
            self.state.advisor.pending.pop(body.request_id, None)

    def _observe_signal(self, body: SignalReceived, event: Event) -> None:
        """A signal that speaks of a deploy is remembered for its service (while the advisor
        runs): the change the advisor is told of."""
        if not self.running or not deployish(body.labels, body.annotations):
            return
        service = self.setup.service_of(body.labels)
        if service is not None:
            labels = dict(body.labels)
            self._known().deploys[service] = DeployMark(
                event.ts, labels.pop("alertname", ""), labels
            )

    def _observe_resolved(self, body: IncidentResolved, event: Event) -> None:
        """A closed incident needs no advice: what was asked for it is forgotten."""
        known = self.state.advisor
        if known is None:
            return
        known.consulted.pop(body.incident_id, None)
        for request_id, request in list(known.pending.items()):
            if request["incident_id"] == body.incident_id:
                del known.pending[request_id]

    # ------------------------------------------------------------------ answers

    def _on_received(self, body: AdviceReceived, before: Prior) -> None:
        incident = self.state.incidents.get(body.incident_id)
        if before.advice is None or incident is None:
            return  # answered twice, or the incident closed while the model thought
        request = AdviceRequested.model_validate(before.advice)
        judgement = judge(body.content, request)
        name = f"the advisor ({body.model})"
        if judgement.problem is not None:
            self._discard(body, judgement.problem)
            return
        choice = judgement.choice
        if choice is None:
            detail = f"{name} proposes nothing: {judgement.rationale}"
            self.emitter.note(incident.incident_id, "advice", detail)
            return
        if self.settings.agent != "on":
            detail = (
                f"{name} would propose {choice.action} on {choice.target} (runbook "
                f"{choice.name}): {judgement.rationale}"
            )
            self.emitter.note(incident.incident_id, "advice", detail)
            return
        context = self.setup.variables(incident, self.emitter.now)
        step = self.setup.active.agent.propose_step(choice.name, 0, context)
        if step is None or step.target != choice.target or step.action != choice.action:
            now = f"{step.action} on {step.target!r}" if step else "gone"
            self._discard(
                body,
                f"runbook {choice.name}'s first step is now {now}, not the {choice.action} "
                f"on {choice.target!r} the advisor was offered",
            )
            return
        self.propose(
            incident,
            replace(
                step,
                agent=AGENT,
                rationale=f"{name}: {judgement.rationale}",
                model=body.model,
                prompt_hash=body.prompt_hash,
            ),
        )

    def _discard(self, body: AdviceReceived, reason: str) -> None:
        self.emitter.emit(
            AdviceDiscarded(
                request_id=body.request_id,
                incident_id=body.incident_id,
                model=body.model,
                prompt_hash=body.prompt_hash,
                reason=reason,
            ),
            body.incident_id,
        )

    def _on_failed(self, body: AdviceFailed, before: Prior) -> None:
        if before.advice is None or body.incident_id not in self.state.incidents:
            return
        self.emitter.note(
            body.incident_id,
            "advice_failed",
            f"the advisor gave no advice ({body.problem}: {body.reason}); "
            "onduty carries on without it",
        )

    APPLIERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        AdviceRequested: _apply_requested,
        AdviceReceived: _apply_answer,
        AdviceFailed: _apply_answer,
    }
    REACTIONS: ClassVar[dict[type[Payload], Callable[[Any, Any, Prior], None]]] = {
        AdviceReceived: _on_received,
        AdviceFailed: _on_failed,
    }
    OBSERVERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        IncidentResolved: _observe_resolved,
        SignalReceived: _observe_signal,
    }
