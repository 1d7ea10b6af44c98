"""The `quality:` section of the configuration: how onduty judges the signals it is given, per
source, and when it stops trusting them enough to act on its own (safe mode).

The core reads it: every check runs on event times only (a signal's receive time against the
times it carries, silence measured by ticks), so replay reaches the same judgements.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from onduty.events import QualityProblem
from onduty.values import ConfigModel as Model
from onduty.values import PositiveDuration

__all__ = ["Drift", "Heartbeat", "QualitySettings"]


SAFE_MODE_DEFAULT: tuple[QualityProblem, ...] = ("silent", "clock_skew", "drift", "dependency")


class Heartbeat(Model):
    """A source that speaks regularly when healthy (a poller, Alertmanager with an always-firing
    Watchdog alert): silent for longer than `every`, it is judged silent."""

    source: str = Field(min_length=1)
    """The source as signals name it (`alertmanager`, `grafana`, `probe`, a CloudEvents
    source)."""
    every: PositiveDuration
    """The longest silence that is still healthy: a Watchdog's repeat interval plus slack."""
    services: list[str] = Field(default_factory=list)
    """The services this source vouches for: safe mode for its problems covers these. Empty:
    the services it has reported signals for (every service until it has reported one)."""


class Drift(Model):
    """The mix of a source's signals (by one label) in each window, compared with the windows
    before it by the population stability index (PSI): 0.1 is a small shift, 0.25 a large one."""

    window: PositiveDuration = timedelta(minutes=10)
    """How long one window of signals is."""
    baseline: int = Field(default=6, ge=1)
    """How many windows before it the mix is compared with."""
    threshold: float = Field(default=0.25, gt=0)
    """The PSI over which the mix has drifted."""
    min_signals: int = Field(default=30, ge=1)
    """Judge only windows (and baselines) with at least this many signals."""
    label: str = "alertname"
    """The label whose values make the mix."""


class QualitySettings(Model):
    """Judging each source's signals, and safe mode. Every problem found and every recovery is
    an event (`SourceDegraded`, `SourceRecovered`) and a metric; problems of the kinds listed in
    `safe_mode` lower autonomy to `suggest` where the source reports (no autonomous action;
    proposals are recorded and denied, naming why) and page the escalation tiers once, until the
    source is healthy again."""

    heartbeats: list[Heartbeat] = Field(default_factory=list)
    """Sources expected to speak regularly, and how often (silence is judged only for these)."""
    max_clock_skew: PositiveDuration | None = None
    """The largest difference between when a source says a signal started (or ended) and when
    onduty received it, taken as the median of the source's last five such times. Unset: not
    judged."""
    drift: Drift | None = None
    """Judge drift of each source's signal mix. Unset: not judged."""
    max_rejected_fraction: float | None = Field(default=None, gt=0, le=1)
    """The largest fraction of a source's deliveries in a window refused as malformed."""
    max_duplicate_fraction: float | None = Field(default=None, gt=0, le=1)
    """The largest fraction of a source's deliveries in a window that were redeliveries of a
    notification already received."""
    max_label_values: int | None = Field(default=None, ge=2)
    """The most distinct values one label may take in a source's window (a cardinality
    explosion: an id or a timestamp written into a label)."""
    window: PositiveDuration = timedelta(minutes=10)
    """The window the rates and label values are counted over (drift has its own)."""
    min_deliveries: int = Field(default=20, ge=1)
    """Judge rates only in windows with at least this many deliveries."""
    safe_mode: list[QualityProblem] = Field(default_factory=lambda: list(SAFE_MODE_DEFAULT))
    """The problems that put their scope in safe mode; the others are recorded only."""

    @property
    def judges_windows(self) -> bool:
        """Whether any per-window check is on (the per-signal bookkeeping they need)."""
        return (
            self.drift is not None
            or self.max_rejected_fraction is not None
            or self.max_duplicate_fraction is not None
            or self.max_label_values is not None
        )

    @property
    def enabled(self) -> bool:
        return bool(self.heartbeats) or self.max_clock_skew is not None or self.judges_windows
