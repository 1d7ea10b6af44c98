"""What an agent hands to the guardrails: one action, its target, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Proposal:
    agent: str
    """Who proposes: a runbook agent today; a learning agent or an advisor later, each judged
    by the same guardrails."""
    runbook: str
    step: int
    """The step's index in its runbook, counting from 0."""
    action: str
    target: str
    rationale: str
    """Why, in words a person reads on the timeline and in the approval request."""
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 30.0
    model: str | None = None
    """The learning model in the decision's context, or the language model that advised
    (`ActionProposed.model`)."""
    prompt_hash: str | None = None
    """For the advisor's proposals: the hash of the prompt its model answered."""
    priority: int = 0
    """Among proposals acting on the same target, the highest wins (then configuration
    order); the others are recorded as not chosen."""
