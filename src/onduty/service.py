"""`onduty serve`: the runtime on the wall clock, its core loop, read models and metrics."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from onduty.act import ActuatorRegistry
from onduty.commands import Notify
from onduty.config import Config
from onduty.events import Event
from onduty.log import EventLog, open_log
from onduty.loop import CoreLoop
from onduty.obs import Metrics
from onduty.readmodel import IncidentProjection, SilenceProjection
from onduty.runtime import RecoveryReport, Runtime, SystemClock

logger = logging.getLogger("onduty")


@dataclass
class ReadModels:
    """Projections the API reads while the core thread writes them."""

    incidents: IncidentProjection = field(
        default_factory=lambda: IncidentProjection(keep_timeline=True)
    )
    silences: SilenceProjection = field(default_factory=SilenceProjection)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def feed(self, event: Event) -> None:
        with self.lock:
            self.incidents.feed(event)
            self.silences.feed(event)


class Service:
    def __init__(
        self,
        config: Config,
        store: str,
        *,
        actuators: ActuatorRegistry | None = None,
        max_body: int = 1 << 20,
        max_pending: int = 20_000,
    ) -> None:
        self.config = config
        self.store = store
        self.max_body = max_body
        self.max_pending = max_pending
        self.metrics = Metrics()
        self.read = ReadModels()
        self._actuators = actuators or ActuatorRegistry()
        self.log: EventLog | None = None
        self.runtime: Runtime | None = None
        self.loop: CoreLoop | None = None
        self.recovery: RecoveryReport | None = None

    def start(self) -> None:
        log = open_log(self.store)
        self.log = log
        for event in log.read():
            self.read.feed(event)
        runtime, self.recovery = Runtime.open(
            log,
            SystemClock(),
            self._actuators,
            config=self.config,
            notifier=self._notify,
            snapshot_every=self.config.snapshot_every,
            on_event=self._on_event,
        )
        self.runtime = runtime
        self.metrics.log_head.set(log.head()[0])
        self.loop = CoreLoop(runtime, max_pending=self.max_pending)
        self.loop.start()
        logger.info(
            "ready: %s events in %s (snapshot at %s, %s folded), policy %s",
            self.recovery.head_seq,
            self.store,
            self.recovery.snapshot_seq,
            self.recovery.folded,
            self.config.version,
        )

    def stop(self) -> None:
        """Drain queued inputs, snapshot, and close the log."""
        if self.loop is not None:
            self.loop.stop()
        if self.runtime is not None and self.loop is not None and self.loop.failure is None:
            self.runtime.snapshot_now()
        if self.log is not None:
            self.log.close()
            self.log = None
        logger.info("stopped")

    @property
    def ready(self) -> bool:
        return self.loop is not None and self.loop.running

    def _on_event(self, event: Event) -> None:
        self.read.feed(event)
        self.metrics.events.labels(event.type).inc()
        self.metrics.log_head.set(event.seq)

    def _notify(self, command: Notify) -> None:
        # Channels arrive with escalation tiers; until then a page is a log line.
        logger.warning(
            "%s for %s → %s: %s", command.kind, command.incident_id, ",".join(command.channels),
            command.message,
        )  # fmt: skip
