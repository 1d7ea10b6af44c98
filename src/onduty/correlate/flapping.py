"""Flap detection: too many state changes of one key within a sliding window.

A key (a signal's fingerprint, say) *flaps* when it changed state at least `threshold` times
within the last `window`. The window is half-open on the left: at time `at` it holds the
changes with `at - window < t <= at`, so a change exactly one window old has left it. A set of
keys is *calm* at `at` when none of them changed within the window (`last + window <= at`),
including when nothing is remembered for them at all.

The state is plain data in the shape the manager already snapshots,
`dict[str, list[datetime]]` (`State.transitions`): `FlapDetector` works on a dict it is given,
so adopting it changes no snapshot. Unlike trimming on each change alone, `prune` also forgets
keys that have been calm for a window, so the state stays bounded by the keys that changed
recently rather than growing with every key ever seen; since a forgotten key counts as calm,
pruning changes no answer. Pruning costs what it forgets, not the number of keys: a queue of
each key's last change by time (with stale entries, dropped when taken out) finds the keys to
forget.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from onduty.correlate.timequeue import TimeQueue

_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass
class FlapDetector:
    window: timedelta
    threshold: int
    changes: dict[str, list[datetime]] = field(default_factory=dict)
    _last: TimeQueue = field(default_factory=TimeQueue, init=False, repr=False, compare=False)
    """Every key's last change (and older ones not popped yet): what `prune` pops from."""

    def __post_init__(self) -> None:
        if self.window <= timedelta(0):
            raise ValueError("the flap window must be positive")
        if self.threshold < 1:
            raise ValueError("the flap threshold must be at least 1")
        self._reindex()

    def _reindex(self) -> None:
        self._last = TimeQueue(
            (times[-1] if times else _NEVER, key) for key, times in self.changes.items()
        )

    def record(self, key: str, at: datetime) -> int:
        """Note a state change of `key` at `at` (changes arrive in time order); return how
        many changes the window now holds for it."""
        times = self.changes.setdefault(key, [])
        times.append(at)
        horizon = at - self.window
        if times[0] <= horizon:
            times[:] = [t for t in times if t > horizon]
        self._last.push(at, key)
        if len(self._last) > 2 * len(self.changes) + 64:
            self._reindex()  # mostly superseded entries: keep the queue in proportion
        return len(times)

    def count(self, key: str, at: datetime) -> int:
        """Changes of `key` within the window ending at `at`."""
        horizon = at - self.window
        return sum(1 for t in self.changes.get(key, ()) if horizon < t <= at)

    def is_flapping(self, key: str, at: datetime) -> bool:
        return self.count(key, at) >= self.threshold

    def last_change(self, keys: Iterable[str]) -> datetime | None:
        """The latest remembered change of any of `keys`."""
        times = [self.changes[key][-1] for key in keys if self.changes.get(key)]
        return max(times) if times else None

    def calm_at(self, keys: Iterable[str]) -> datetime | None:
        """When `keys` become calm (last change + window), or None if nothing is remembered
        for them (they are calm already): the time to ask a timer for."""
        last = self.last_change(keys)
        return last + self.window if last is not None else None

    def is_calm(self, keys: Iterable[str], at: datetime) -> bool:
        calm = self.calm_at(keys)
        return calm is None or calm <= at

    def prune(self, at: datetime) -> list[str]:
        """Forget keys whose every change has left the window; return them, sorted."""
        horizon = at - self.window
        stale = []
        for _, key in self._last.pop_until(horizon):
            times = self.changes.get(key)
            if times is not None and (not times or times[-1] <= horizon):
                del self.changes[key]
                stale.append(key)
        return sorted(stale)
