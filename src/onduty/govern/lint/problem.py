"""A finding of the policy linter: the rule it is about, how bad it is, where it points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding. `rule` is the guardrail's name ("" for a problem outside any rule);
    `position` a 1-based character offset into `expression`, the condition it points into."""

    rule: str
    severity: Severity
    message: str
    position: int | None = None
    expression: str | None = None
