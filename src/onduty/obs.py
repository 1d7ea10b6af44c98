"""Self-observation: Prometheus metrics of the service, and structured logs."""

from __future__ import annotations

import logging
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The service's own metrics, on a registry of its own (several apps may share a process
    in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.signals = Counter(
            "onduty_signals_ingested_total",
            "Signals durably accepted, by wire format.",
            ["format"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "onduty_signals_rejected_total",
            "Ingest requests refused, by wire format and HTTP status.",
            ["format", "status"],
            registry=self.registry,
        )
        self.ingest_seconds = Histogram(
            "onduty_ingest_seconds",
            "Time from a request's arrival to its signals being durable.",
            ["format"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.pending = Gauge(
            "onduty_ingest_pending", "Inputs queued for the core.", registry=self.registry
        )
        self.log_head = Gauge(
            "onduty_log_head_seq", "Sequence number of the newest event.", registry=self.registry
        )
        self.events = Counter(
            "onduty_events_total", "Events appended, by type.", ["type"], registry=self.registry
        )


def configure_logging(level: str = "info") -> logging.Logger:
    logger = logging.getLogger("onduty")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    return logger
