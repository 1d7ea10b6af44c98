"""An incident's timeline as the console shows it: one `Entry` per event, drawn by a small
renderer per payload type (`RENDERERS`) from the event's typed payload.

An event with no renderer (a signal, a policy activation, a type added later), or whose payload
does not validate, is shown as stored: its type and its fields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from onduty import events
from onduty.api.console.pages import stamp
from onduty.events import Event, Payload, payload


@dataclass
class Entry:
    """One line of an incident's timeline, ready to show."""

    event: Event
    kind: str
    title: str
    tone: str = "info"
    facts: list[tuple[str, str]] = field(default_factory=list)
    rules: list[dict[str, str]] = field(default_factory=list)
    text: str = ""
    """Longer text (an action's output, an error), shown preformatted."""
    by: str | None = None
    """Who recorded it, when that is a person or a tool (None: onduty itself, or the title
    says who)."""

    @property
    def ts(self) -> datetime:
        return self.event.ts


CHANGES = {
    "signal_added": ("signal", "A signal joined", "info"),
    "signal_resolved": ("signal", "A signal resolved", "good"),
    "signal_refired": ("signal", "A signal fired again", "warn"),
    "signal_timed_out": ("signal", "A signal went quiet (counted as resolved)", "info"),
    "acknowledged": ("ack", "Acknowledged at the source", "info"),
    "flapping": ("flapping", "Flapping: automation paused", "warn"),
    "muted": ("muted", "Muted", "quiet"),
    "unmuted": ("muted", "Unmuted", "info"),
    "planned": ("plan", "Planned", "info"),
    "overdue": ("escalation", "Overdue: nobody acknowledged", "bad"),
    "advice": ("advice", "The advisor's opinion", "info"),
    "advice_failed": ("advice", "No advice", "warn"),
    "advice_skipped": ("advice", "The advisor was not consulted", "quiet"),
}
"""How each `events.IncidentUpdated.change` is shown: (group, title, tone)."""
EFFECT_TONE = {"allow": "good", "require_approval": "warn", "deny": "bad"}
EFFECT_WORD = {"allow": "allow", "require_approval": "needs approval", "deny": "deny"}


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def facts(*pairs: tuple[str, Any]) -> list[tuple[str, str]]:
    """The labelled values that say something (no empty ones)."""
    return [(label, text(value)) for label, value in pairs if value not in (None, "", [], {})]


# ---------------------------------------------------------------------------- one per type


def _opened(event: Event, body: events.IncidentOpened) -> Entry:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(body.group_key.items()))
    return Entry(
        event,
        "signal",
        "Incident opened",
        "bad",
        facts(("signal", body.fingerprint), ("group", labels)),
    )


def _updated(event: Event, body: events.IncidentUpdated) -> Entry:
    change = body.change
    group, title, tone = CHANGES.get(change, ("update", change.replace("_", " "), "info"))
    return Entry(
        event, group, title, tone, facts(("signal", body.fingerprint), ("detail", body.detail))
    )


def _resolved(event: Event, body: events.IncidentResolved) -> Entry:
    return Entry(event, "resolved", "Resolved", "good", facts(("reason", body.reason)))


def _proposed(event: Event, body: events.ActionProposed) -> Entry:
    return Entry(
        event,
        "proposal",
        f"Proposed {body.action} on {body.target}",
        "info",
        facts(
            ("agent", body.agent if body.agent != "runbook" else None),
            ("runbook", f"{body.runbook} (step {body.step + 1})"),
            ("why", body.rationale),
            ("params", body.params),
            ("model", body.model),
            ("prompt", body.prompt_hash),
            ("command", body.command_id),
        ),
    )


def _rejected(event: Event, body: events.ProposalRejected) -> Entry:
    return Entry(
        event,
        "proposal",
        f"Not chosen: {body.action} on {body.target}",
        "quiet",
        facts(("runbook", body.runbook), ("reason", body.reason)),
    )


def _advice_requested(event: Event, body: events.AdviceRequested) -> Entry:
    choices = ", ".join(f"{c.name} ({c.action} on {c.target})" for c in body.choices)
    return Entry(
        event,
        "advice",
        "Asked the advisor",
        "info",
        facts(("why", body.reason), ("choices", choices), ("request", body.request_id)),
    )


def _advice_received(event: Event, body: events.AdviceReceived) -> Entry:
    return Entry(
        event,
        "advice",
        f"The advisor ({body.model}) answered",
        "info",
        facts(
            ("after", f"{body.latency_ms / 1000:.1f}s"),
            ("similar", ", ".join(body.similar)),
            ("prompt", body.prompt_hash),
        ),
        text=body.content,
    )


def _advice_failed(event: Event, body: events.AdviceFailed) -> Entry:
    return Entry(
        event,
        "advice",
        f"No advice ({body.problem})",
        "warn",
        facts(("reason", body.reason), ("model", body.model)),
    )


def _advice_discarded(event: Event, body: events.AdviceDiscarded) -> Entry:
    return Entry(
        event,
        "advice",
        f"The advisor's answer was discarded ({body.model})",
        "warn",
        facts(("reason", body.reason), ("prompt", body.prompt_hash)),
    )


def _evaluated(event: Event, body: events.PolicyEvaluated) -> Entry:
    rules = [
        {
            "rule": rule.rule,
            "effect": rule.effect,
            "word": EFFECT_WORD.get(rule.effect, rule.effect),
            "tone": EFFECT_TONE.get(rule.effect, "info"),
            "reason": rule.reason,
        }
        for rule in body.rules
    ]
    return Entry(
        event,
        "verdict",
        f"Guardrails: {EFFECT_WORD.get(body.verdict, body.verdict)}",
        EFFECT_TONE.get(body.verdict, "info"),
        facts(("reason", body.reason), ("policy", body.policy_version)),
        rules,
    )


def _diverged(event: Event, body: events.PolicyShadowDiverged) -> Entry:
    return Entry(
        event,
        "verdict",
        f"The {body.mode} policy would have said {body.other}",
        "quiet",
        facts(
            ("enforced", f"{body.enforced} ({body.enforced_version})"),
            ("candidate", f"{body.other} ({body.other_version})"),
            ("reason", body.other_reason),
        ),
    )


def _requested(event: Event, body: events.ApprovalRequested) -> Entry:
    return Entry(
        event,
        "approval",
        "Approval requested" + (" (next tier)" if body.round else ""),
        "warn",
        facts(
            ("action", body.summary),
            ("needs", f"{body.required} approver(s)"),
            ("asked", ", ".join(body.notify)),
            ("expires", stamp(body.expires_at)),
        ),
    )


def _answered(event: Event, body: events.ApprovalGranted | events.ApprovalDenied) -> Entry:
    granted = isinstance(body, events.ApprovalGranted)
    role = f" ({body.role})" if body.role else ""
    return Entry(
        event,
        "approval",
        f"{'Approved' if granted else 'Denied'} by {event.actor}{role}",
        "good" if granted else "bad",
        facts(("comment", body.comment)),
    )


def _expired(event: Event, body: events.ApprovalExpired) -> Entry:
    return Entry(event, "approval", "Approval expired: denied", "bad")


def _started(event: Event, body: events.ActionStarted) -> Entry:
    return Entry(
        event,
        "action",
        f"Started {body.action} on {body.target}",
        "info",
        facts(
            ("attempt", body.attempt if body.attempt > 1 else None), ("command", body.command_id)
        ),
    )


def _succeeded(event: Event, body: events.ActionSucceeded) -> Entry:
    return Entry(event, "action", "Action succeeded", "good", text=body.output)


def _failed(event: Event, body: events.ActionFailed) -> Entry:
    return Entry(event, "action", "Action failed", "bad", text=body.error)


def _unknown(event: Event, body: events.ActionOutcomeUnknown) -> Entry:
    return Entry(event, "action", "Action outcome unknown", "bad", facts(("why", body.reason)))


def _verified(event: Event, body: events.VerificationPassed) -> Entry:
    return Entry(event, "verify", "Verified", "good", facts(("check", body.check)))


def _unverified(event: Event, body: events.VerificationFailed) -> Entry:
    return Entry(event, "verify", "Verification failed", "bad", facts(("why", body.reason)))


def _undoing(event: Event, body: events.UndoStarted) -> Entry:
    return Entry(event, "undo", f"Undoing: {body.action} on {body.target}", "warn")


def _undone(event: Event, body: events.UndoFinished) -> Entry:
    return Entry(
        event,
        "undo",
        "Undo finished" if body.ok else "Undo failed",
        "good" if body.ok else "bad",
        text="" if body.ok else body.error,
    )


def _escalated(event: Event, body: events.Escalated) -> Entry:
    return Entry(
        event,
        "escalation",
        f"Escalated to people (tier {body.tier + 1})",
        "bad",
        facts(("why", body.reason), ("paged", ", ".join(body.notify))),
    )


def _acknowledged(event: Event, body: events.Acknowledged) -> Entry:
    return Entry(
        event,
        "ack",
        f"Acknowledged by {event.actor}",
        "info",
        facts(("comment", body.comment)),
    )


def _notified(event: Event, body: events.NotificationSent) -> Entry:
    return Entry(
        event,
        "notify",
        f"Notified {body.channel} ({body.kind})",
        "quiet",
        facts(("attempts", body.attempts if body.attempts > 1 else None)),
    )


def _not_notified(event: Event, body: events.NotificationFailed) -> Entry:
    return Entry(
        event,
        "notify",
        f"Could not notify {body.channel}",
        "bad",
        facts(("error", body.error), ("next", body.fallback)),
    )


Renderer = Callable[[Event, Any], Entry]
RENDERERS: dict[type[Payload], Renderer] = {
    events.IncidentOpened: _opened,
    events.IncidentUpdated: _updated,
    events.IncidentResolved: _resolved,
    events.ActionProposed: _proposed,
    events.ProposalRejected: _rejected,
    events.PolicyEvaluated: _evaluated,
    events.PolicyShadowDiverged: _diverged,
    events.ApprovalRequested: _requested,
    events.ApprovalGranted: _answered,
    events.ApprovalDenied: _answered,
    events.ApprovalExpired: _expired,
    events.ActionStarted: _started,
    events.ActionSucceeded: _succeeded,
    events.ActionFailed: _failed,
    events.ActionOutcomeUnknown: _unknown,
    events.VerificationPassed: _verified,
    events.VerificationFailed: _unverified,
    events.UndoStarted: _undoing,
    events.UndoFinished: _undone,
    events.Escalated: _escalated,
    events.Acknowledged: _acknowledged,
    events.NotificationSent: _notified,
    events.NotificationFailed: _not_notified,
    events.AdviceRequested: _advice_requested,
    events.AdviceReceived: _advice_received,
    events.AdviceFailed: _advice_failed,
    events.AdviceDiscarded: _advice_discarded,
}
"""Payload type → how its event is shown; the others are shown as stored."""
_BY_NAME = {model.__name__: model for model in RENDERERS}


def describe(event: Event) -> Entry:
    model = _BY_NAME.get(event.type)
    if model is not None:
        try:
            body = payload(event)
        except ValidationError:
            body = None
        if isinstance(body, model):
            return RENDERERS[model](event, body)
    shown = [
        (key, text(value)) for key, value in sorted(event.data.items()) if key != "incident_id"
    ]
    return Entry(event, "other", event.type, "info", shown)


def entry(event: Event) -> Entry:
    """The event as a line of the timeline, saying who recorded it when not onduty."""
    line = describe(event)
    if line.by is None and event.actor not in ("onduty", "") and event.actor not in line.title:
        line.by = event.actor
    return line
