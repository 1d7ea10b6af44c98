"""Self-observation: Prometheus metrics of the service, and structured logs."""

from __future__ import annotations

import logging
import sys
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from onduty.textsafe import visible


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
        self.partitions_held = Gauge(
            "onduty_partitions_held",
            "Partitions whose lease this manager holds and whose cells it runs (in a fleet).",
            registry=self.registry,
        )


class SafeFormatter(logging.Formatter):
    """Log lines that carry untrusted text (source names, labels, error messages) as data: each
    message is one line with its control characters, bidi overrides and newlines written as
    escapes (`\\x1b`, `\\u202e`, `\\n`), so it can neither steer the reader's terminal nor
    forge a line. A traceback keeps its line breaks, escapes everything else and is indented, so
    that no line of it (an exception's message may hold newlines) passes for a log line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = visible(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return indented(super().formatStack(stack_info))


def indented(block: str) -> str:
    """A multi-line block (a traceback) made visible, each of its lines indented."""
    return "\n".join(f"    {line}" for line in visible(block, single_line=False).split("\n"))


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging set-up, with its messages and tracebacks escaped as ours are (an
    error in a request handler carries the request's text)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG
    from uvicorn.logging import DefaultFormatter

    class SafeUvicornFormatter(SafeFormatter, DefaultFormatter):
        """uvicorn's formatter (its colours and level padding) behind `SafeFormatter`."""

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["default"]["()"] = SafeUvicornFormatter
    return config


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "info") -> logging.Logger:
    logger = logging.getLogger("onduty")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter(LOG_FORMAT))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    return logger
