"""What an agent hands to the guardrails: one action, its target, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Proposal:
    agent: str
    runbook: str
    step: int
    action: str
    target: str
    rationale: str
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 30.0
    priority: int = 0
