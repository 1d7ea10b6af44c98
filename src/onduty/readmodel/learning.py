"""The learning agent's models in their roles, projected from the log: the active one, the
candidate beside it, the one before, where drift set the model aside and how often a candidate
ranked otherwise than what was enforced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onduty.events import Event
from onduty.think.features import UNTRAINED

"""The model id of the prior alone (no model activated, or rolled back past the first)."""
DIVERGENCES_KEPT = 50
"""Divergence counts are kept for this many models, the newest."""
SUMMARY = ("training_window", "examples", "offline_evaluation")
"""What a status shows of an artifact (its posterior rows are left out)."""


@dataclass
class LearningView:
    """Which model ranks, which candidate runs beside it, and the one before (whole artifacts:
    promoting or rolling back records them again)."""

    model_id: str = UNTRAINED
    model: dict[str, Any] | None = None
    source: str = ""
    activated_at: str = ""
    activated_by: str = ""
    previous_id: str = ""
    """The model active before this one ("" none; `untrained` the prior alone)."""
    previous: dict[str, Any] | None = None
    previous_source: str = ""
    candidate_id: str = ""
    candidate_role: str = ""
    candidate_selector: str | None = None
    candidate_source: str = ""
    candidate: dict[str, Any] | None = None
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By service: the `ModelDriftDetected` that set the active model aside there, since it
    was activated."""
    divergences: dict[str, dict[str, int]] = field(default_factory=dict)
    """By model id: how many times it ranked another action first, as shadow or canary."""

    def feed(self, event: Event) -> None:
        kind = event.type
        if kind == "ModelActivated":
            self._activated(event)
        elif kind == "ModelDriftDetected":
            data = event.data
            self.drift[data["service"]] = {
                "service": data["service"],
                "model_id": data["model_id"],
                "check": data["check"],
                "detail": data["detail"],
                "value": data["value"],
                "limit": data["limit"],
                "at": event.ts.isoformat(),
            }
        elif kind == "ModelShadowDiverged":
            data = event.data
            # a new dict: a snapshot copy being encoded may hold the old one
            counts = dict(self.divergences.pop(data["model_id"], {}))
            counts[data["mode"]] = counts.get(data["mode"], 0) + 1
            self.divergences[data["model_id"]] = counts  # the newest last
            while len(self.divergences) > DIVERGENCES_KEPT:
                del self.divergences[next(iter(self.divergences))]

    def _activated(self, event: Event) -> None:
        data = event.data
        role = data.get("role", "active")
        model = dict(data["model"]) if data.get("model") else None
        if role == "active":
            # a fleet's view sees the same activation once from every partition: only a change
            # makes the one before previous
            if model != self.model:
                self.previous_id, self.previous = self.model_id, self.model
                self.previous_source = self.source
                self.drift.clear()  # the core judges a new model afresh
            self.model_id, self.model = data["model_id"] if model else UNTRAINED, model
            self.source, self.activated_at = data.get("source", ""), event.ts.isoformat()
            self.activated_by = event.actor
            if self.candidate_id != data["model_id"]:
                return
            role = "withdrawn"  # promoted: no candidate left
        if role == "withdrawn":
            self.candidate_id, self.candidate_role, self.candidate_source = "", "", ""
            self.candidate_selector, self.candidate = None, None
        else:
            self.candidate_id, self.candidate_role = data["model_id"], role
            self.candidate_selector, self.candidate = data.get("selector"), model
            self.candidate_source = data.get("source", "")

    # ------------------------------------------------------------------ what the API answers

    def status(self) -> dict[str, Any]:
        """The models in their roles, summarised (no posterior rows), as `GET /api/v1/learn`
        answers."""
        active = {
            "model_id": self.model_id,
            "source": self.source,
            "activated_at": self.activated_at or None,
            "activated_by": self.activated_by or None,
            **_summary(self.model),
            "divergences": self._divergences(self.model_id),
        }
        candidate = None
        if self.candidate_id:
            candidate = {
                "model_id": self.candidate_id,
                "mode": self.candidate_role,
                "selector": self.candidate_selector,
                "source": self.candidate_source,
                **_summary(self.candidate),
                "divergences": self._divergences(self.candidate_id),
            }
        previous = None
        if self.previous_id:
            previous = {
                "model_id": self.previous_id,
                "source": self.previous_source,
                **_summary(self.previous),
            }
        return {
            "active": active,
            "candidate": candidate,
            "previous": previous,
            "drift": [self.drift[service] for service in sorted(self.drift)],
            "divergences": {key: dict(value) for key, value in self.divergences.items()},
            "can_roll_back": self.rollback_target() is not None,
        }

    def _divergences(self, model_id: str) -> dict[str, int]:
        counts = self.divergences.get(model_id, {})
        return {"shadow": counts.get("shadow", 0), "canary": counts.get("canary", 0)}

    def rollback_target(self) -> tuple[str, str, dict[str, Any] | None] | None:
        """What a rollback records: ("withdrawn", candidate id, None) while there is a
        candidate; else ("active", id, artifact) of the previous model, or of the prior alone
        (`untrained`, None) when a model is active; None when there is nothing to go back to."""
        if self.candidate_id:
            return "withdrawn", self.candidate_id, None
        if self.previous_id and (self.previous_id, self.previous) != (self.model_id, self.model):
            return "active", self.previous_id, self.previous
        if self.model is not None:
            return "active", UNTRAINED, None
        return None


def _summary(body: dict[str, Any] | None) -> dict[str, Any]:
    if not body:
        return {name: None for name in SUMMARY}
    return {name: body.get(name) for name in SUMMARY}
