"""Restart to ready with a long log: 1,000,000 events (20,000 with `quick`).

The log is built once in a temporary folder, untimed: the real core produces a realistic history
(see `_workload`), appended in batches of about 1,000 events, with a snapshot saved every 1,000
events as the runtime does (`snapshot_every`). The history stops where no action is in doubt, so
opening the runtime appends nothing and every repetition opens the same file.

Timed (best of 3): opening the log file and `Runtime.open`, i.e. loading the latest snapshot,
folding the tail after it and re-arming the timers. The peer, in the same run, is what a restart
without snapshots costs: folding the whole log from seq 0 (one run at the full size, best of 3
with `quick`).
"""

from __future__ import annotations

import gc
import sqlite3
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson

from onduty.act import ActuatorRegistry
from onduty.bench._workload import (
    HistoryDriver,
    Row,
    append_all,
    file_size,
    fold,
    megabytes,
    per_second,
    rate,
    row,
    seconds,
)
from onduty.config import Config
from onduty.log.base import check_snapshot
from onduty.log.sqlite import SQLiteEventLog
from onduty.manager import Manager
from onduty.runtime import RecoveryReport, Runtime, VirtualClock

FULL_EVENTS = 1_000_000
QUICK_EVENTS = 20_000
SNAPSHOT_EVERY = 1_000
REPEATS = 3


def _build(path: Path, total: int) -> Config:
    driver = HistoryDriver(seed=11)
    log = SQLiteEventLog(str(path), synchronous="NORMAL")
    try:
        append_all(
            log,
            driver.groups(),
            total,
            batch=1_000,
            snapshot=driver.manager.snapshot,
            snapshot_every=SNAPSHOT_EVERY,
            ready=lambda: not driver.manager.in_doubt(),
        )
    finally:
        log.close()
    return driver.config


def _head_time(path: Path) -> datetime:
    """The time of the log's last event: where a restarted runtime's clock stands."""
    log = SQLiteEventLog(str(path))
    try:
        return next(log.read(after=log.head()[0] - 1)).ts
    finally:
        log.close()


def _restart(path: Path, config: Config, now: datetime) -> tuple[float, RecoveryReport, int]:
    """Open the log and the runtime; (seconds to ready, the recovery report, timers armed)."""
    clock = VirtualClock(now)
    gc.collect()
    started = time.perf_counter()
    log = SQLiteEventLog(str(path))
    try:
        runtime, report = Runtime.open(
            log, clock, ActuatorRegistry(), config=config, snapshot_every=SNAPSHOT_EVERY
        )
        elapsed = time.perf_counter() - started
        if log.head()[0] != report.head_seq:
            raise RuntimeError("opening the runtime appended to the log; the benchmark is void")
        return elapsed, report, len(runtime.manager.pending_timers())
    finally:
        log.close()


def _fold_from_zero(path: Path) -> float:
    gc.collect()
    started = time.perf_counter()
    log = SQLiteEventLog(str(path))
    try:
        fold(log.read())
        return time.perf_counter() - started
    finally:
        log.close()


def _snapshot_load(path: Path) -> tuple[float, int]:
    """Seconds to read the latest snapshot, check that it is bound to the chain and rebuild a
    manager from it; its size in bytes."""
    log = SQLiteEventLog(str(path))
    try:
        gc.collect()
        started = time.perf_counter()
        snapshot = log.latest_snapshot()
        assert snapshot is not None and check_snapshot(log, snapshot) is None
        Manager.from_snapshot(snapshot.state)
        elapsed = time.perf_counter() - started
        return elapsed, len(orjson.dumps(snapshot.state))
    finally:
        log.close()


def _stored(path: Path) -> tuple[int, int, float]:
    """(events, bytes of their JSON bodies, seconds to read every row raw and parse its body)."""
    conn = sqlite3.connect(path)
    try:
        count, size = conn.execute("SELECT count(*), sum(length(body)) FROM events").fetchone()
        gc.collect()
        started = time.perf_counter()
        loads = orjson.loads
        for (body,) in conn.execute("SELECT body FROM events ORDER BY seq"):
            loads(body)
        return count, size, time.perf_counter() - started
    finally:
        conn.close()


def run(quick: bool = False) -> list[Row]:
    total = QUICK_EVENTS if quick else FULL_EVENTS
    with tempfile.TemporaryDirectory(prefix="onduty-bench-") as folder:
        path = Path(folder) / "restart.db"
        config = _build(path, total)
        size = file_size(path)
        count, body_bytes, t_raw = _stored(path)

        now = _head_time(path)
        restarts = [_restart(path, config, now) for _ in range(REPEATS)]
        t_restart, report, timers = min(restarts, key=lambda item: item[0])
        t_snapshot, snapshot_bytes = min(
            (_snapshot_load(path) for _ in range(REPEATS)), key=lambda item: item[0]
        )
        # Folding a million events takes a while: once at the full size, best of 3 in quick.
        t_fold = min(_fold_from_zero(path) for _ in range(REPEATS if quick else 1))

    runs = "best of 3" if quick else "1 run"
    restart_peer = f"fold from seq 0 without a snapshot ({runs}): {seconds(t_fold)}"
    fold_rate = rate(count, t_fold)
    raw_rate = rate(count, t_raw)
    return [
        row(
            f"restart to ready, {count:,}-event log: open + Runtime.open (snapshot at seq "
            f"{report.snapshot_seq:,}, {report.folded:,} tail events folded, {timers} timers)",
            seconds(t_restart),
            t_restart,
            "s",
            restart_peer,
            t_fold / t_restart,
        ),
        row(
            f"  of which: load the snapshot ({snapshot_bytes / 1000:,.0f} KB) and "
            "Manager.from_snapshot",
            seconds(t_snapshot),
            t_snapshot,
            "s",
            f"restart to ready: {seconds(t_restart)}",
            t_snapshot / t_restart,
        ),
        row(
            f"fold from seq 0 without a snapshot, {count:,} events ({runs})",
            f"{seconds(t_fold)} ({per_second(fold_rate)})",
            t_fold,
            "s",
            f"sqlite3 rows + orjson.loads: {seconds(t_raw)} ({per_second(raw_rate)})",
            fold_rate / raw_rate,
        ),
        row(
            f"log file size, {count:,} events",
            f"{megabytes(size)} ({size / count:,.0f} B/event)",
            float(size),
            "bytes",
            f"the canonical JSON bodies alone: {megabytes(body_bytes)}",
            size / body_bytes,
        ),
    ]
