"""The learning agent in the core: models in their roles (`ModelActivated`), what it learns from
outcomes as they are recorded, the ranking it proposes from, and when it sets its model aside
(drift).

Everything it knows is folded from events (`observe`, before each event's own applier, so it
sees the state as the event found it): deploy markers, restarts, each proposed action's features
and how it ended. A verified action counts as verified only once `recurrence_window` has passed
without its alert firing again on its target; within it, a recurrence makes it a failure. Its
randomness comes from a seed derived from the id of the input being handled, so a replay ranks
exactly as the run did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from onduty.config_learning import LearningSettings
from onduty.events import (
    ActionFailed,
    ActionProposed,
    ActionSucceeded,
    Event,
    IncidentOpened,
    IncidentResolved,
    ModelActivated,
    ModelDriftDetected,
    ModelShadowDiverged,
    Payload,
    SignalReceived,
    Tick,
    VerificationFailed,
    VerificationPassed,
)
from onduty.expressions import Condition, prepare
from onduty.lifecycle.base import Emitter, Prior
from onduty.lifecycle.quality import psi
from onduty.lifecycle.setup import Setup
from onduty.state import (
    Incident,
    LearnedAction,
    LearningState,
    State,
    learning_key,
    learning_key_parts,
)
from onduty.think import Proposal
from onduty.think.features import UNTRAINED, deployish, features_at, recurs, restarts
from onduty.think.learner import (
    IncidentFeatures,
    Mode,
    ModelBodyProblem,
    Posterior,
    RankedAction,
    Ranker,
    kind_mix,
    posterior_from_body,
    seed_from,
)
from onduty.think.learner import (
    Prior as BetaPrior,
)

AGENT = "learner"


@dataclass(frozen=True)
class Ranking:
    """One model's ranking of an incident's proposals."""

    model_id: str
    order: list[tuple[int, RankedAction]]
    """Indexes into the proposals, best first, with what the model says of each."""

    @property
    def top(self) -> tuple[int, RankedAction]:
        return self.order[0]


@dataclass(frozen=True)
class Choice:
    """What the learning agent makes of an incident's proposals."""

    proposals: list[Proposal]
    """What the arbiter chooses among: the learner's proposal first, when it made one."""
    model: str | None = None
    """The model in the decision's context."""
    set_aside: str = ""
    """Why the runbook order decides although the learning agent runs ("" when it does not)."""
    beside: tuple[str, Ranking] | None = None
    """A ranking not enforced here (shadow, or a canary whose selector does not hold), to be
    compared with the proposal that wins."""


@dataclass(eq=False, repr=False)
class Learning:
    state: State
    setup: Setup
    emitter: Emitter
    _posteriors: dict[str, Posterior] = field(init=False, default_factory=dict)
    """The active model's and the candidate's posteriors with the online outcomes added, built
    on first use and kept in step with what is learned"""
    _trained: dict[str, Posterior | None] = field(init=False, default_factory=dict)
    """and as they were trained (what drift is judged against)."""

    # ------------------------------------------------------------------ settings and state

    @property
    def settings(self) -> LearningSettings | None:
        configured = self.setup.configured
        if configured is None or not configured.config.learning.enabled:
            return None
        return configured.config.learning

    def memory(self) -> LearningState:
        if self.state.learning is None:
            self.state.learning = LearningState()
        return self.state.learning

    def model_id(self, role: str = "active") -> str:
        memory = self.state.learning
        body = None
        if memory is not None:
            body = memory.model if role == "active" else memory.candidate
        return str(body.get("model_id") or UNTRAINED) if body else UNTRAINED

    def trained(self, role: str = "active") -> Posterior | None:
        """The model in `role` as it was trained (no online outcomes; None: no model, or one
        that cannot be read, although it was checked before it was recorded)."""
        if role not in self._trained:
            memory = self.memory()
            body = memory.model if role == "active" else memory.candidate
            found = None
            if body:
                with contextlib.suppress(ModelBodyProblem):
                    found = posterior_from_body(body)
            self._trained[role] = found
        return self._trained[role]

    def posterior(self, role: str = "active") -> Posterior:
        """What the model in `role` ranks with: as trained (else the policy's prior), read
        with the policy's `min_evidence`, plus the outcomes learned online."""
        found = self._posteriors.get(role)
        if found is not None:
            return found
        settings = self.settings or LearningSettings()
        trained = self.trained(role)
        if trained is not None:
            posterior = replace(trained.copy(), min_evidence=settings.min_evidence)
        else:
            posterior = Posterior(
                prior=BetaPrior(settings.prior_alpha, settings.prior_beta),
                min_evidence=settings.min_evidence,
            )
        if settings.online:
            for key, (verified, failed) in self.memory().online.items():
                values, action = learning_key_parts(key)
                posterior.add(IncidentFeatures.from_values(values), action, verified, failed)
        self._posteriors[role] = posterior
        return posterior

    # ------------------------------------------------------------------ folding events

    def observe(self, body: Payload, event: Event) -> None:
        """Fold an event into what the agent knows, before the event's own applier (while the
        agent runs)."""
        if self.settings is not None:
            self._SEEN[type(body)](self, body, event)

    def _saw_signal(self, body: SignalReceived, event: Event) -> None:
        if deployish(body.labels, body.annotations):
            service = self.setup.service_of(body.labels) or ""
            self.memory().deploys[service] = event.ts

    def _saw_incident(self, body: IncidentOpened, event: Event) -> None:
        memory = self.memory()
        signal = self.state.signals.get(body.fingerprint)
        labels = signal.labels if signal is not None else {}
        alertname = body.group_key.get("alertname") or labels.get("alertname") or "unknown"
        service = body.service or ""
        # What outlasted its recurrence window first: an alert firing again after it is a new
        # fault, not a recurrence (no tick may have come in between to settle it).
        self._settle_lasting(event.ts)
        places = {labels.get("instance"), labels.get("service"), service}
        for command_id, learned in list(memory.pending.items()):
            if learned.verified_at is not None and recurs(
                learned.features[0], learned.target, alertname, places
            ):
                self._settle(command_id, verified=False)
        kind = features_at(alertname, service, memory.deploys.get(service), None, event.ts)
        kinds = memory.kinds.setdefault(service, [])
        kinds.append(kind.kind())
        window = self._settings().drift.window
        del kinds[:-window]

    def _saw_proposal(self, body: ActionProposed, event: Event) -> None:
        incident = self.state.incidents.get(body.incident_id)
        if incident is None:
            return
        features = self.features(incident, body.target, event.ts)
        predicted = None
        if body.agent == AGENT:  # as estimated by the model that chose it (a canary's, maybe)
            memory = self.memory()
            canary = memory.candidate is not None and body.model == self.model_id("candidate")
            role = "candidate" if canary else "active"
            predicted = self.posterior(role).evidence(features, body.action).mean
        self.memory().pending[body.command_id] = LearnedAction(
            incident_id=body.incident_id,
            action=body.action,
            target=body.target,
            service=incident.service or "",
            features=features.values(),
            predicted=predicted,
        )

    def _saw_success(self, body: ActionSucceeded, event: Event) -> None:
        action = self.state.actions.get(body.command_id)
        if action is not None and restarts(action.action):
            self.memory().restarts[action.target] = event.ts

    def _saw_verified(self, body: VerificationPassed, event: Event) -> None:
        learned = self.memory().pending.get(body.command_id)
        if learned is not None:
            learned.verified_at = event.ts

    def _saw_failure(self, body: VerificationFailed | ActionFailed, event: Event) -> None:
        if body.command_id in self.memory().pending:
            self._settle(body.command_id, verified=False)

    def _saw_resolved(self, body: IncidentResolved, event: Event) -> None:
        pending = self.memory().pending
        for command_id, learned in list(pending.items()):
            if learned.incident_id == body.incident_id and learned.verified_at is None:
                del pending[command_id]  # never ran, or ended without an outcome to learn from

    def _saw_tick(self, body: Tick, event: Event) -> None:
        self._settle_lasting(event.ts)

    def _settle_lasting(self, now: datetime) -> None:
        """Verified actions whose recurrence window has passed are learned as verified."""
        window = self._settings().recurrence_window
        for command_id, learned in list(self.memory().pending.items()):
            if learned.verified_at is not None and now - learned.verified_at >= window:
                self._settle(command_id, verified=True)

    def _settle(self, command_id: str, *, verified: bool) -> None:
        memory = self.memory()
        learned = memory.pending.pop(command_id)
        key = learning_key(learned.features, learned.action)
        counts = memory.online.setdefault(key, [0, 0])
        counts[0 if verified else 1] += 1
        features = IncidentFeatures.from_values(learned.features)
        if self._settings().online:
            for posterior in self._posteriors.values():
                posterior.add(features, learned.action, int(verified), int(not verified))
        if learned.predicted is not None:
            choices = memory.choices.setdefault(learned.service, [])
            choices.append([learned.predicted, 1.0 if verified else 0.0])
            del choices[: -self._settings().drift.window]

    def _settings(self) -> LearningSettings:
        return self.settings or LearningSettings()

    # ------------------------------------------------------------------ the models' roles

    def _apply_model(self, body: ModelActivated, event: Event) -> None:
        memory = self.memory()
        model = dict(body.model) if body.model else None
        if body.role == "active":
            if memory.model != model:
                memory.previous_model = memory.model
            memory.model = model
            memory.drift.clear()  # a new model is judged afresh
            if memory.candidate is not None and memory.candidate.get("model_id") == body.model_id:
                memory.candidate, memory.candidate_role, memory.candidate_selector = None, "", None
        elif body.role == "withdrawn":
            memory.candidate, memory.candidate_role, memory.candidate_selector = None, "", None
        else:
            memory.candidate, memory.candidate_role = model or {}, body.role
            memory.candidate_selector = body.selector
        self._posteriors.clear()
        self._trained.clear()

    def _apply_drift(self, body: ModelDriftDetected, event: Event) -> None:
        self.memory().drift[body.service] = body.detail

    # ------------------------------------------------------------------ deciding

    def features(self, incident: Incident, target: str, at: datetime) -> IncidentFeatures:
        """What is known of an incident when an action on `target` is proposed for it."""
        memory = self.memory()
        primary = self.setup.primary_signal(incident, at)
        service = incident.service or ""
        return features_at(
            (primary.labels if primary is not None else {}).get("alertname") or "unknown",
            service,
            memory.deploys.get(service),
            memory.restarts.get(target),
            at,
        )

    def rank(self, role: str, incident: Incident, proposals: list[Proposal]) -> Ranking:
        settings = self._settings()
        now = self.emitter.now
        options = [
            (self.features(incident, proposal.target, now), proposal.action)
            for proposal in proposals
        ]
        cause = self.emitter.cause
        assert cause is not None
        seed = seed_from(f"{cause.id}/{incident.incident_id}/{role}")
        ranker = Ranker(self.posterior(role), mode=Mode(settings.choose))
        return Ranking(self.model_id(role), ranker.rank_options(options, seed))

    def choose(
        self, incident: Incident, proposals: list[Proposal], context: dict[str, Any]
    ) -> Choice:
        """The learning agent's view of an incident's first proposals (one per runbook that
        matches): with `agent: on`, its own proposal of the best-ranked one goes first."""
        settings = self.settings
        if settings is None or not proposals:
            return Choice(proposals)
        memory = self.memory()
        role, beside = "active", None
        if memory.candidate is not None:
            selector = memory.candidate_selector
            canary = memory.candidate_role == "canary" and (
                not selector or Condition.compile(selector).holds(prepare(context))
            )
            if canary and settings.agent == "on":
                role = "candidate"
            else:
                mode = "canary" if memory.candidate_role == "canary" else "shadow"
                beside = (mode, self.rank("candidate", incident, proposals))
        ranking = self.rank(role, incident, proposals)
        if settings.agent == "shadow":
            return Choice(proposals, ranking.model_id, beside=beside or ("shadow", ranking))
        service = incident.service or ""
        drift = memory.drift.get(service) or self._judge_drift(role, service)
        if drift:
            reason = f"learning agent set aside for {service or 'this service'}: {drift}"
            return Choice(proposals, ranking.model_id, set_aside=reason, beside=beside)
        index, top = ranking.top
        chosen = proposals[index]
        others = [entry for position, entry in ranking.order[1:] if position != index]
        versus = "; ".join(f"{entry.action} {entry.estimate:.0%}" for entry in others[:3])
        learner = replace(
            chosen,
            agent=AGENT,
            priority=max(proposal.priority for proposal in proposals) + 1,
            rationale=(
                f"learning agent ({ranking.model_id}): {top.rationale}; estimate "
                f"{top.estimate:.0%} ({top.interval[0]:.0%}-{top.interval[1]:.0%})"
                + (f", against {versus}" if versus else "")
                + f"; runbook {chosen.runbook}"
            ),
            model=ranking.model_id,
        )
        rest = [proposal for position, proposal in enumerate(proposals) if position != index]
        return Choice([learner, *rest], ranking.model_id, beside=beside)

    def context_model(self) -> str | None:
        """The model in a decision's context: the active one while the agent runs."""
        return self.model_id() if self.settings is not None else None

    def compare(
        self, incident: Incident, proposals: list[Proposal], choice: Choice, winner: Proposal | None
    ) -> None:
        """Record where a ranking not enforced here would have chosen otherwise."""
        if choice.beside is None or winner is None:
            return
        mode, ranking = choice.beside
        index, top = ranking.top
        preferred = proposals[index]
        if (preferred.action, preferred.target) == (winner.action, winner.target):
            return
        self.emitter.emit(
            ModelShadowDiverged(
                incident_id=incident.incident_id,
                mode="canary" if mode == "canary" else "shadow",
                model_id=ranking.model_id,
                enforced_action=winner.action,
                enforced_target=winner.target,
                model_action=preferred.action,
                model_target=preferred.target,
                rationale=top.rationale,
            ),
            incident.incident_id,
        )

    def _judge_drift(self, role: str, service: str) -> str:
        """Whether the model no longer fits `service`: recorded once (`ModelDriftDetected`), and
        the reason returned; "" while it fits."""
        settings = self._settings().drift
        memory = self.memory()
        model_id = self.model_id(role)
        found: tuple[str, str, float, float] | None = None
        kinds = memory.kinds.get(service, [])
        trained = kind_mix(self.trained(role) or Posterior(), service)
        if model_id != UNTRAINED and len(kinds) >= settings.window and trained:
            live: dict[str, int] = {}
            for kind in kinds:
                live[kind] = live.get(kind, 0) + 1
            shift = psi(live, trained)
            if shift > settings.max_feature_shift:
                found = (
                    "features",
                    f"the mix of incidents drifted from the model's training window (PSI "
                    f"{shift:.2f} over {settings.max_feature_shift:g}: now "
                    f"{_mix_text(live)}; trained on {_mix_text(trained)}); retrain the model",
                    shift,
                    settings.max_feature_shift,
                )
        choices = memory.choices.get(service, [])
        # Like the mix, judged only for a trained model: the prior alone, learning online, has
        # no model to retrain, and its early guesses miss by design while it explores.
        trained_model = model_id != UNTRAINED
        if found is None and trained_model and len(choices) >= settings.min_outcomes:
            predicted = sum(choice[0] for choice in choices) / len(choices)
            verified = sum(choice[1] for choice in choices) / len(choices)
            shortfall = predicted - verified
            if shortfall > settings.max_verification_shortfall:
                found = (
                    "verification",
                    f"its choices verified {verified:.0%} of the last {len(choices)} times "
                    f"against the {predicted:.0%} it predicted; retrain the model",
                    shortfall,
                    settings.max_verification_shortfall,
                )
        if found is None:
            return ""
        check, detail, value, limit = found
        self.emitter.emit(
            ModelDriftDetected(
                model_id=model_id,
                service=service,
                check="features" if check == "features" else "verification",
                detail=detail,
                value=round(value, 6),
                limit=limit,
            ),
            f"learning:{service}",
        )
        return detail

    _SEEN: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        SignalReceived: _saw_signal,
        IncidentOpened: _saw_incident,
        ActionProposed: _saw_proposal,
        ActionSucceeded: _saw_success,
        VerificationPassed: _saw_verified,
        VerificationFailed: _saw_failure,
        ActionFailed: _saw_failure,
        IncidentResolved: _saw_resolved,
        Tick: _saw_tick,
    }
    OBSERVERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = dict.fromkeys(
        _SEEN, observe
    )
    APPLIERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        ModelActivated: _apply_model,
        ModelDriftDetected: _apply_drift,
    }
    REACTIONS: ClassVar[dict[type[Payload], Callable[[Any, Any, Prior], None]]] = {}


def _mix_text(mix: dict[str, int]) -> str:
    total = sum(mix.values()) or 1
    return ", ".join(
        f"{kind} {count / total:.0%}" for kind, count in sorted(mix.items(), key=lambda i: -i[1])
    )
