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
    # The last answer and the span of time it holds for: the cron walk runs only when `now`
    # leaves it (a pure memo: the answer for a given `now` never changes).
    _memo: list[tuple[datetime, datetime, tuple[datetime, datetime] | None]] = field(
        init=False, default_factory=list, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", ZoneInfo(self.freeze.timezone))

    def active(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The freeze period containing `now` (start inclusive, end exclusive), if any."""
        for valid_from, valid_until, answer in self._memo:
            if valid_from <= now < valid_until:
                return answer
        answer, valid_from, valid_until = self._compute(now)
        self._memo[:] = [(valid_from, valid_until, answer)]
        return answer

    def _compute(
        self, now: datetime
    ) -> tuple[tuple[datetime, datetime] | None, datetime, datetime]:
        """The answer at `now`, and the span around `now` over which it stays the same."""
        period = self._period(now)
        if period is not None:
            return period, now, period[1]
        upcoming = [span.start for span in self.freeze.ranges if span.start > now]
        if self.freeze.cron is not None:
            following = next(CronSim(self.freeze.cron, now.astimezone(self.zone)), None)
            if following is not None:
                upcoming.append(following)
        return None, now, min(upcoming, default=datetime.max.replace(tzinfo=now.tzinfo))

    def _period(self, now: datetime) -> tuple[datetime, datetime] | None:
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
