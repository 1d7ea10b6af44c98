"""The benchmarks' realistic history (faults, runbooks, approvals, chronic alerts re-sent),
written to a SQLite log for the tests that need a long, real one."""

from __future__ import annotations

from pathlib import Path

from onduty.bench._workload import HistoryDriver, append_all
from onduty.config import Config
from onduty.log.sqlite import SQLiteEventLog


def write_history(path: Path, events: int, *, seed: int) -> Config:
    """Append about `events` events of the history to a new log at `path`; its config."""
    driver = HistoryDriver(seed=seed)
    log = SQLiteEventLog(str(path), synchronous="NORMAL")
    try:
        append_all(log, driver.groups(), events, ready=lambda: not driver.manager.in_doubt())
    finally:
        log.close()
    return driver.config
