"""Judging each source's signals (the `quality:` section): silence past its heartbeat, clock
skew, drift of its mix of signals, malformed and repeated deliveries, label cardinality.

Everything is measured on event times: a signal's receive time (`ts`) against the times it
carries, silence by ticks. Inputs are folded into each source's `SourceWatch` (its `findings`:
what its signals show now), and the core records the difference between the findings and the
problems the log already holds (`SourceDegraded`, `SourceRecovered`), putting the source's
scope in safe mode for the kinds of problem the policy names. Folding and deciding are apart, so
a state folded from the log holds the same findings as the one that decided.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any, ClassVar, cast

from onduty.commands import ScheduleTimer
from onduty.config import format_duration
from onduty.config_quality import Drift, Heartbeat, QualitySettings
from onduty.events import (
    Event,
    Payload,
    PolicyActivated,
    QualityProblem,
    SignalReceived,
    SignalRejected,
    SourceDegraded,
    SourceRecovered,
    Tick,
)
from onduty.lifecycle.base import Emitter
from onduty.lifecycle.safemode import SafeModes
from onduty.lifecycle.setup import Setup
from onduty.state import Finding, SourceWatch, State

SKEW_SAMPLES = 5
"""How many of a source's newest clock differences its skew is the median of"""
SKEW_MIN_SAMPLES = 3
"""and how many it takes before one is judged (one late delivery is no skewed clock)."""
MAX_MIX_VALUES = 200
"""Values of the drift label counted apart; more are counted together (a label that varies
that much is a cardinality problem, judged on its own)."""
OTHER = "(other)"
MAX_SERVICES = 100
"""Services remembered per source, for the scope of its safe mode."""
_SMOOTHING = 0.5
"""Added to every count when comparing mixes, so a value missing from one side has a finite
weight."""

CHECK_WORDS = {
    "silent": "silence",
    "clock_skew": "clock skew",
    "drift": "drift of its signals",
    "rejected": "malformed deliveries",
    "duplicates": "repeated deliveries",
    "cardinality": "label cardinality",
}


def psi(current: dict[str, int], baseline: dict[str, int]) -> float:
    """The population stability index of `current` against `baseline`: the sum over values of
    (p - q) * ln(p / q), with every count smoothed."""
    values = sorted(set(current) | set(baseline))
    size = len(values)
    total_now = sum(current.values()) + _SMOOTHING * size
    total_before = sum(baseline.values()) + _SMOOTHING * size
    index = 0.0
    for value in values:
        p = (current.get(value, 0) + _SMOOTHING) / total_now
        q = (baseline.get(value, 0) + _SMOOTHING) / total_before
        index += (p - q) * math.log(p / q)
    return index


def merged(windows: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for window in windows:
        for value, count in window.items():
            total[value] = total.get(value, 0) + count
    return total


def skew_words(seconds: float) -> str:
    side = "ahead of" if seconds > 0 else "behind"
    return f"{format_duration(timedelta(seconds=round(abs(seconds))))} {side}"


@dataclass(eq=False, repr=False)
class SourceQuality:
    state: State
    setup: Setup
    emitter: Emitter
    safe_modes: SafeModes
    touched: list[SourceWatch] = field(default_factory=list)
    """The sources the input being folded changed: what the decision looks at."""
    armed: list[SourceWatch] = field(default_factory=list)
    """Sources whose silence check the input set: a timer must be armed for each."""

    # ------------------------------------------------------------------ folding inputs

    def fold(self, body: Payload, event: Event) -> None:
        """Fold an input into the sources' watches; runs before the input's own applier (a
        redelivery and a newly firing signal are told from the state as it was)."""
        self.touched, self.armed = [], []
        configured = self.setup.configured
        if configured is None:
            return
        settings = configured.config.quality
        if not configured.judges_quality:
            return
        if isinstance(body, SignalReceived):
            self._fold_signal(settings, body, event.ts)
        elif isinstance(body, SignalRejected):
            watch = self._watch(body.source)
            self._roll_window(settings, watch, event.ts)
            watch.rejected += 1
            self._heard(settings, watch, event.ts)
            self.touched.append(watch)
        elif isinstance(body, Tick):
            self._fold_tick(settings, event.ts)
        elif isinstance(body, PolicyActivated):
            self._expect_heartbeats(settings, event.ts)

    def _expect_heartbeats(self, settings: QualitySettings, now: datetime) -> None:
        """A policy names sources that speak regularly: the silence of one never heard is
        counted from now."""
        for beat in settings.heartbeats:
            watch = self._watch(beat.source)
            if watch.quiet_check is None and "silent" not in watch.findings:
                watch.last_heard = watch.last_heard or now
                watch.quiet_check = max(watch.last_heard + beat.every, now)
                self.armed.append(watch)

    def _watch(self, source: str) -> SourceWatch:
        watch = self.state.sources.get(source)
        if watch is None:
            watch = self.state.sources[source] = SourceWatch(source)
        return watch

    def _fold_signal(self, settings: QualitySettings, body: SignalReceived, ts: datetime) -> None:
        watch = self._watch(body.source)
        self.touched.append(watch)
        self._heard(settings, watch, ts)
        if settings.judges_windows:
            self._roll_window(settings, watch, ts)
            watch.deliveries += 1
            if body.delivery_id is not None and body.delivery_id in self.state.deliveries:
                watch.duplicates += 1
                return  # the same notification again: nothing new to measure
            self._count_labels(settings, watch, body.labels)
            if settings.drift is not None:
                self._count_mix(settings.drift, watch, body.labels, ts)
        known = self.state.signals.get(body.fingerprint)
        if settings.max_clock_skew is not None:
            self._measure_skew(settings, watch, body, known.status if known else None, ts)
        service = self.setup.service_of(body.labels)
        remembered = watch.services
        if service is not None and service not in remembered and len(remembered) < MAX_SERVICES:
            remembered.append(service)

    def _heard(self, settings: QualitySettings, watch: SourceWatch, ts: datetime) -> None:
        watch.last_heard = ts
        watch.findings.pop("silent", None)
        beat = _heartbeat(settings, watch.source)
        if beat is not None and watch.quiet_check is None:
            watch.quiet_check = ts + beat.every
            self.armed.append(watch)

    def _fold_tick(self, settings: QualitySettings, now: datetime) -> None:
        for watch in self.state.sources.values():
            if watch.quiet_check is None or watch.quiet_check > now:
                continue
            beat = _heartbeat(settings, watch.source)
            self.touched.append(watch)
            if beat is None:  # no longer expected to speak regularly
                watch.quiet_check = None
                watch.findings.pop("silent", None)
                continue
            heard = watch.last_heard or now
            if now - heard >= beat.every:
                watch.quiet_check = None  # judged silent: the next signal arms it again
                watch.findings["silent"] = Finding(
                    f"source {watch.source} has been silent for {format_duration(now - heard)} "
                    f"(expected every {format_duration(beat.every)})",
                    (now - heard).total_seconds(),
                    beat.every.total_seconds(),
                )
            else:
                watch.quiet_check = heard + beat.every
                self.armed.append(watch)

    def _measure_skew(
        self,
        settings: QualitySettings,
        watch: SourceWatch,
        body: SignalReceived,
        was: str | None,
        ts: datetime,
    ) -> None:
        """A signal that starts (or ends) now says when, by its source's clock."""
        limit = settings.max_clock_skew
        assert limit is not None
        if body.status == "firing" and was != "firing" and body.starts_at is not None:
            moment = body.starts_at
        elif body.status == "resolved" and was == "firing" and body.ends_at is not None:
            moment = body.ends_at
        else:
            return
        watch.skews = [*watch.skews[-(SKEW_SAMPLES - 1) :], (moment - ts).total_seconds()]
        if len(watch.skews) < SKEW_MIN_SAMPLES:
            return
        skew = median(watch.skews)
        if abs(skew) > limit.total_seconds():
            watch.findings["clock_skew"] = Finding(
                f"source {watch.source}'s clock is {skew_words(skew)} onduty's "
                f"(median of its last {len(watch.skews)} signals; at most "
                f"{format_duration(limit)} is trusted)",
                skew,
                limit.total_seconds(),
            )
        else:
            watch.findings.pop("clock_skew", None)

    def _count_labels(
        self, settings: QualitySettings, watch: SourceWatch, labels: dict[str, str]
    ) -> None:
        limit = settings.max_label_values
        if limit is None:
            return
        for name, value in labels.items():
            values = watch.label_values.setdefault(name, {})
            if value in values or len(values) > limit:
                continue
            values[value] = 1
            if len(values) > limit and "cardinality" not in watch.findings:
                watch.findings["cardinality"] = Finding(
                    f"label {name} of source {watch.source} took more than {limit} values "
                    f"within {format_duration(settings.window)}",
                    float(len(values)),
                    float(limit),
                )

    def _count_mix(
        self, drift: Drift, watch: SourceWatch, labels: dict[str, str], ts: datetime
    ) -> None:
        if watch.mix_start is None:
            watch.mix_start = ts
        elif ts >= watch.mix_start + drift.window:
            self._close_mix(drift, watch, ts)
        value = labels.get(drift.label, "")
        if value not in watch.mix and len(watch.mix) >= MAX_MIX_VALUES:
            value = OTHER
        watch.mix[value] = watch.mix.get(value, 0) + 1

    def _close_mix(self, drift: Drift, watch: SourceWatch, ts: datetime) -> None:
        """The drift window is over: judge its mix against the windows before it, then start
        the next one (windows nobody spoke in count as empty)."""
        assert watch.mix_start is not None
        closed, baseline = watch.mix, merged(watch.baseline)
        count, before = sum(closed.values()), sum(baseline.values())
        if count >= drift.min_signals and before >= drift.min_signals:
            index = psi(closed, baseline)
            if index > drift.threshold:
                watch.findings["drift"] = Finding(
                    f"the mix of source {watch.source}'s signals by {drift.label} drifted "
                    f"(PSI {index:.2f} over {drift.threshold:g}; {count} signals in "
                    f"{format_duration(drift.window)} against {before} before)",
                    index,
                    drift.threshold,
                )
            else:
                watch.findings.pop("drift", None)
        elapsed = int((ts - watch.mix_start) / drift.window)
        windows = [*watch.baseline, closed, *([{}] * min(elapsed - 1, drift.baseline))]
        watch.baseline = windows[-drift.baseline :]
        watch.mix = {}
        watch.mix_start += drift.window * elapsed

    def _roll_window(self, settings: QualitySettings, watch: SourceWatch, ts: datetime) -> None:
        """Judge the rates of a window that is over, then start the next one."""
        if watch.window_start is None:
            watch.window_start = ts
            return
        if ts < watch.window_start + settings.window:
            return
        total = watch.deliveries + watch.rejected
        span = format_duration(settings.window)
        if total >= settings.min_deliveries:
            self._judge_fraction(
                watch,
                "rejected",
                watch.rejected / total,
                settings.max_rejected_fraction,
                f"{watch.rejected} of {total} deliveries from source {watch.source} within "
                f"{span} were malformed",
            )
        if watch.deliveries >= settings.min_deliveries:
            self._judge_fraction(
                watch,
                "duplicates",
                watch.duplicates / watch.deliveries,
                settings.max_duplicate_fraction,
                f"{watch.duplicates} of {watch.deliveries} deliveries from source "
                f"{watch.source} within {span} were repeats of one already received",
            )
        limit = settings.max_label_values
        if limit is not None and not any(len(v) > limit for v in watch.label_values.values()):
            watch.findings.pop("cardinality", None)
        elapsed = int((ts - watch.window_start) / settings.window)
        watch.window_start += settings.window * elapsed
        watch.deliveries = watch.rejected = watch.duplicates = 0
        watch.label_values = {}

    @staticmethod
    def _judge_fraction(
        watch: SourceWatch, check: str, fraction: float, limit: float | None, detail: str
    ) -> None:
        if limit is None:
            return
        if fraction > limit:
            watch.findings[check] = Finding(f"{detail} (at most {limit:.0%})", fraction, limit)
        else:
            watch.findings.pop(check, None)

    # ------------------------------------------------------------------ deciding

    def decide(self) -> None:
        """Record what the input just folded changed: problems found or over, safe mode
        entered or left; arm the silence checks it set."""
        for watch in self.armed:
            if watch.quiet_check is not None:
                self.emitter.command(ScheduleTimer(f"quiet:{watch.source}", watch.quiet_check))
        for watch in self.touched:
            self._record(watch)
        self.touched, self.armed = [], []

    def _record(self, watch: SourceWatch) -> None:
        settings = self.setup.active.config.quality
        for check, finding in list(watch.findings.items()):
            if check in watch.problems:
                if self.safe_modes.applies_to(check):  # it may report for one more service
                    scope = self._scope(settings, watch)
                    self.safe_modes.enter(f"{check}:{watch.source}", scope, finding.detail)
                continue
            self.emitter.emit(
                SourceDegraded(
                    source=watch.source,
                    check=cast(QualityProblem, check),
                    detail=finding.detail,
                    value=finding.value,
                    limit=finding.limit,
                ),
                f"source:{watch.source}",
            )
            if self.safe_modes.applies_to(check):
                self.safe_modes.enter(
                    f"{check}:{watch.source}", self._scope(settings, watch), finding.detail
                )
        for check in [check for check in watch.problems if check not in watch.findings]:
            words = CHECK_WORDS.get(check, check)
            detail = f"no more {words} from source {watch.source}"
            self.emitter.emit(
                SourceRecovered(
                    source=watch.source, check=cast(QualityProblem, check), detail=detail
                ),
                f"source:{watch.source}",
            )
            self.safe_modes.exit(f"{check}:{watch.source}", detail)

    @staticmethod
    def _scope(settings: QualitySettings, watch: SourceWatch) -> list[str]:
        beat = _heartbeat(settings, watch.source)
        if beat is not None and beat.services:
            return list(beat.services)
        return list(watch.services)

    def _apply_degraded(self, body: SourceDegraded, event: Event) -> None:
        self._watch(body.source).problems[body.check] = body.detail

    def _apply_recovered(self, body: SourceRecovered, event: Event) -> None:
        watch = self.state.sources.get(body.source)
        if watch is not None:
            watch.problems.pop(body.check, None)

    APPLIERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        SourceDegraded: _apply_degraded,
        SourceRecovered: _apply_recovered,
    }
    REACTIONS: ClassVar[dict[type[Payload], Callable[[Any, Any, Any], None]]] = {}
    OBSERVERS: ClassVar[dict[type[Payload], Callable[[Any, Any, Event], None]]] = {
        SignalReceived: fold,
        SignalRejected: fold,
        Tick: fold,
    }

    def pending_timers(self) -> list[ScheduleTimer]:
        return [
            ScheduleTimer(f"quiet:{watch.source}", watch.quiet_check)
            for watch in self.state.sources.values()
            if watch.quiet_check is not None
        ]


def _heartbeat(settings: QualitySettings, source: str) -> Heartbeat | None:
    for beat in settings.heartbeats:
        if beat.source == source:
            return beat
    return None
