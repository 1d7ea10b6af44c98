"""What every guardrail kind shares: the protocol, outcomes, and readable windows."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from onduty.events import RuleOutcome, Verdict
from onduty.govern.context import Facts
from onduty.state import ActionRecord


class Guardrail(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, facts: Facts) -> RuleOutcome | None:
        """An outcome when the rule has an opinion on this proposal, else None."""
        ...


def outcome(rule: str, effect: Verdict, reason: str) -> RuleOutcome:
    return RuleOutcome(rule=rule, effect=effect, reason=reason)


_SINGULAR = {"d": "day", "h": "hour", "m": "minute"}


def recent(history: Sequence[ActionRecord], since: datetime) -> Sequence[ActionRecord]:
    """The records after `since`; the history is in time order, so this is a bisection."""
    return history[bisect.bisect_right(history, since, key=lambda record: record.at) :]


def window_text(seconds: float) -> str:
    """'hour', '10m', '2h', '90s': how a window reads in a reason."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return (
                f"{count}{unit}" if count != 1 else {"d": "day", "h": "hour", "m": "minute"}[unit]
            )
    return f"{seconds:g}s"
