"""Stepping back when onduty's own dependencies fail: the readiness checks of the log, the bus
and the core (`health.py`) are polled; one failing for longer than `server.readiness.
safe_mode_after` is recorded as `DependencyDegraded`, and once it has passed again for as long,
`DependencyRecovered`. The core puts every service in safe mode in between (autonomy lowered to
`suggest`, one page), so replay reproduces what onduty did while it could not trust itself."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from onduty.events import DependencyDegraded, DependencyRecovered, Payload
from onduty.health import CheckResult

logger = logging.getLogger("onduty")

WATCHED = frozenset({"log", "bus", "core"})
"""The checks that say onduty itself cannot be trusted to act (a policy always exists)."""


@dataclass
class DependencyWatch:
    """Hysteresis over the checks' results: what to record, given when each was seen."""

    after: float
    """Seconds a check must fail (or pass again) before it is recorded."""
    degraded: set[str] = field(default_factory=set)
    """Components recorded as degraded and not recovered (restored from the log at start)."""
    _passing_since: dict[str, float] = field(default_factory=dict)

    def observe(
        self, results: Sequence[CheckResult], now: float
    ) -> list[DependencyDegraded | DependencyRecovered]:
        changes: list[DependencyDegraded | DependencyRecovered] = []
        for result in results:
            name = result.name
            if name not in WATCHED:
                continue
            if not result.ok:
                self._passing_since.pop(name, None)
                if name not in self.degraded and result.failing_for >= self.after:
                    self.degraded.add(name)
                    reason = f"failing for {result.failing_for:.0f}s: {result.reason}"
                    changes.append(DependencyDegraded(component=name, reason=reason))
                continue
            if name not in self.degraded:
                continue
            since = self._passing_since.setdefault(name, now)
            if now - since >= self.after:
                self.degraded.discard(name)
                del self._passing_since[name]
                changes.append(
                    DependencyRecovered(
                        component=name, detail=f"its check has passed for {now - since:.0f}s"
                    )
                )
        return changes


class DependencyWatcher:
    """Polls `check_all` every `every` seconds on a thread of its own and records what the watch
    finds through `record` (the service's input path, which never drops an input)."""

    def __init__(
        self,
        check_all: Callable[[], list[CheckResult]],
        record: Callable[[Payload, str], None],
        watch: DependencyWatch,
        *,
        every: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check_all = check_all
        self._record = record
        self.watch = watch
        self._every = every
        self._now = now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="onduty-stepback", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def poll(self) -> None:
        for change in self.watch.observe(self._check_all(), self._now()):
            if isinstance(change, DependencyDegraded):
                logger.warning("safe mode: %s is degraded (%s)", change.component, change.reason)
            elif isinstance(change, DependencyRecovered):
                logger.info("%s is healthy again (%s)", change.component, change.detail)
            self._record(change, "onduty")

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.poll()
            except Exception:  # the watch must outlive any one failure of its checks
                logger.exception("the dependency watch failed; trying again")
