"""Freeze windows: no autonomous changes during fixed ranges or recurring periods.

A recurring freeze starts at each `cron` occurrence, read in the freeze's time zone (so "every
Friday at 18:00 in Berlin" stays 18:00 across daylight-saving changes), and lasts `duration`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from onduty.config import Freeze
from onduty.events import RuleOutcome
from onduty.govern.base import outcome
from onduty.govern.context import Facts


@dataclass(frozen=True)
class FreezeRule:
    name: str
    freeze: Freeze
    zone: ZoneInfo = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", ZoneInfo(self.freeze.timezone))

    def active(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The freeze period containing `now` (start inclusive, end exclusive), if any."""
        for span in self.freeze.ranges:
            if span.start <= now < span.end:
                return span.start, span.end
        if self.freeze.cron is not None and self.freeze.duration is not None:
            local = now.astimezone(self.zone)
            # The latest occurrence at or before now (cronsim's reverse walk excludes `now`).
            probe = local + timedelta(microseconds=1)
            start = next(CronSim(self.freeze.cron, probe, reverse=True), None)
            if start is not None and start <= local < start + self.freeze.duration:
                return start, start + self.freeze.duration
        return None

    def check(self, facts: Facts) -> RuleOutcome | None:
        period = self.active(facts.now)
        if period is None:
            return None
        start, end = period
        zone = self.freeze.timezone
        return outcome(
            self.name,
            "deny",
            f"{self.name}: changes are frozen from {start.astimezone(self.zone):%Y-%m-%d %H:%M} "
            f"to {end.astimezone(self.zone):%Y-%m-%d %H:%M} ({zone})",
        )
