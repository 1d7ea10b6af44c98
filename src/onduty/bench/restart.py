"""Restart to ready with a long log: 1,000,000 events (20,000 with `quick`).

The log is built untimed: the real core produces a realistic history (see `_workload`),
appended through the real `SQLiteEventLog.append` in batches of about 1,000 events, with a
snapshot saved every 1,000 events as the runtime does (`snapshot_every`). The history stops
where no action is in doubt. It is kept in a cache folder ($ONDUTY_BENCH_CACHE, else
~/.cache/onduty-bench), under a name keyed by onduty's version and a hash of the sources that
decide what the log holds (events, log, core, this workload), so a later run on the same code
reuses it and a run on changed code builds a new one.

Timed:

1. the service: `onduty serve` started on a copy of the log (it may append to it), from the
   moment the process is started until `/readyz` answers 200 and then the API
   (`GET /api/v1/incidents`) and the console (`GET /`) both answer 200: what an operator waits
   for after a restart. Twice: the first start on the log (written without the service, so
   the read models have no saved state to start from), then again after that one was stopped
   with SIGTERM (a clean stop, which saves what the next start needs); the target (< 2 s) is
   for the second. Their peer, in the same run: a fresh `sqlite3` process reading every
   event's body of the same file (`SELECT sum(length(body)) FROM events`, and the compact
   rows of repeated signals where the log keeps them apart): the least any process that reads
   its log on start-up has to do.
2. in-process (best of 3): opening the log and `Runtime.open`, i.e. loading the latest
   snapshot, folding the tail after it and re-arming the timers. Its peer is what a restart
   without snapshots costs: folding the whole log from seq 0 (one run at the full size, best
   of 3 with `quick`).
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import orjson

import onduty
from onduty.act import ActuatorRegistry
from onduty.bench._procs import SERVER_CPUS, pinned, stop
from onduty.bench._serve import free_port, wait_ready
from onduty.bench._workload import (
    HistoryDriver,
    Row,
    append_all,
    bench_config_document,
    file_size,
    fold,
    megabytes,
    per_second,
    progress,
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
TARGET = 2.0
SERVE_TIMEOUT = 120.0
# What decides the log's bytes: a change to any of these builds a new cached log.
KEYED = ("events", "log", "lifecycle", "correlate", "think", "govern", "state.py", "manager.py",
         "config.py", "commands.py", "bench/_workload.py", "bench/restart.py")  # fmt: skip


def _cache_key() -> str:
    package = Path(onduty.__file__).parent
    digest = hashlib.sha256(onduty.__version__.encode())
    for name in KEYED:
        where = package / name
        for source in sorted(where.rglob("*.py")) if where.is_dir() else [where]:
            digest.update(source.relative_to(package).as_posix().encode())
            digest.update(source.read_bytes())
    return f"{onduty.__version__}-{digest.hexdigest()[:12]}"


def _cache_folder() -> Path:
    folder = os.environ.get("ONDUTY_BENCH_CACHE")
    return Path(folder) if folder else Path.home() / ".cache" / "onduty-bench"


def _build(path: Path, total: int) -> None:
    driver = HistoryDriver(seed=11)
    log = SQLiteEventLog(str(path), synchronous="NORMAL")
    started, step = time.monotonic(), max(total // 10, 1)
    shown = [0]

    def appended(seq: int) -> None:
        if seq - shown[0] >= step:
            shown[0] = seq
            elapsed = time.monotonic() - started
            progress(f"restart: log {seq:,} of {total:,} events ({rate(seq, elapsed):,.0f}/s)")

    try:
        append_all(
            log,
            driver.groups(),
            total,
            batch=1_000,
            snapshot=driver.manager.snapshot,
            snapshot_every=SNAPSHOT_EVERY,
            ready=lambda: not driver.manager.in_doubt(),
            appended=appended,
        )
    finally:
        log.close()


def _cached_log(total: int) -> Path:
    """The log of `total` events for this code, built now unless the cache has it."""
    folder = _cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"restart-{total}-{_cache_key()}.db"
    if path.exists():
        progress(f"restart: reusing the cached {total:,}-event log {path}")
        return path
    for stale in folder.glob(f"restart-{total}-*.db*"):  # built by other code: never reused
        stale.unlink()
    progress(f"restart: building a {total:,}-event log (cached in {folder})")
    building = path.with_name(path.name + ".building")
    building.unlink(missing_ok=True)
    _build(building, total)
    # Everything into the main file, so that the file alone is the whole log.
    conn = sqlite3.connect(building)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    building.rename(path)
    return path


@dataclass
class Started:
    """One start of `onduty serve` on the log."""

    ready: float = 0.0  # seconds from the process start to /readyz 200
    answering: float = 0.0  # … until the API and the console answered 200 too
    failed: str = ""
    stopped: int | None = None  # its exit code on SIGTERM (None: it had to be killed)


def _serve_restart(path: Path, folder: Path) -> Started:
    """Start `onduty serve` on the log, wait for it to answer, and stop it with SIGTERM."""
    config = folder / "bench.yaml"
    config.write_bytes(orjson.dumps(bench_config_document()))  # JSON is YAML
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "onduty", "serve", "--port", str(port), "--store",
               str(path), "-c", str(config), "--log-level", "warning"]  # fmt: skip
    result = Started()
    with (folder / "serve.log").open("ab") as output:
        started = time.monotonic()
        process = subprocess.Popen(pinned(command, SERVER_CPUS), stdout=output, stderr=output)
    try:
        if not wait_ready(f"{url}/readyz", process, SERVE_TIMEOUT):
            result.failed = f"not ready within {SERVE_TIMEOUT:.0f} s (exit {process.poll()})"
            return result
        result.ready = time.monotonic() - started
        for page in ("/api/v1/incidents", "/"):
            answer = httpx.get(url + page, timeout=SERVE_TIMEOUT)
            if answer.status_code != 200:
                result.failed = f"GET {page} answered {answer.status_code}"
                return result
        result.answering = time.monotonic() - started
        return result
    finally:
        result.stopped = stop(process, timeout=60)


def _sqlite_read(path: Path) -> float:
    """Seconds for a fresh sqlite3 process to read every event's body of the log."""
    sqlite = shutil.which("sqlite3")
    query = " UNION ALL ".join(
        f"SELECT count(*), sum(length({column})) FROM {table}" for table, column in _tables(path)
    )
    started = time.monotonic()
    if sqlite is not None:
        command = [sqlite, "-readonly", str(path), query]
    else:  # Python's own SQLite: the same query, in a fresh interpreter
        code = f"import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute({query!r}).fetchone()"
        command = [sys.executable, "-c", code, str(path)]
    subprocess.run(pinned(command, SERVER_CPUS), check=True, capture_output=True, timeout=600)
    return time.monotonic() - started


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


def _tables(path: Path) -> list[tuple[str, str]]:
    """(table, column) of what the log stores per event: every event's body, and, when the
    log keeps them apart, the compact rows of repeated signals."""
    conn = sqlite3.connect(path)
    try:
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    return [("events", "body")] + ([("repeats", "delta")] if "repeats" in names else [])


def _stored(path: Path) -> tuple[int, int, float]:
    """(events, bytes of their stored bodies, seconds to read every row raw and parse the
    bodies that are JSON)."""
    conn = sqlite3.connect(path)
    count = size = 0
    try:
        gc.collect()
        started = time.perf_counter()
        loads = orjson.loads
        for table, column in _tables(path):
            rows, stored = conn.execute(
                f"SELECT count(*), coalesce(sum(length({column})), 0) FROM {table}"
            ).fetchone()
            count, size = count + rows, size + stored
            for (body,) in conn.execute(f"SELECT {column} FROM {table} ORDER BY seq"):
                if table == "events":
                    loads(body)
        return count, size, time.perf_counter() - started
    finally:
        conn.close()


def run(quick: bool = False) -> list[Row]:
    total = QUICK_EVENTS if quick else FULL_EVENTS
    cached = _cached_log(total)
    config = HistoryDriver(seed=11).config
    with tempfile.TemporaryDirectory(prefix="onduty-bench-restart-") as folder:
        path = Path(folder) / "restart.db"  # a copy: restarting may append to it
        shutil.copyfile(cached, path)
        size = file_size(path)
        progress("restart: Runtime.open in-process, and a fold from seq 0")
        count, body_bytes, t_raw = _stored(path)

        now = _head_time(path)
        restarts = [_restart(path, config, now) for _ in range(REPEATS)]
        t_restart, report, timers = min(restarts, key=lambda item: item[0])
        t_snapshot, snapshot_bytes = min(
            (_snapshot_load(path) for _ in range(REPEATS)), key=lambda item: item[0]
        )
        # Folding a million events takes a while: once at the full size, best of 3 in quick.
        t_fold = min(_fold_from_zero(path) for _ in range(REPEATS if quick else 1))
        progress("restart: onduty serve on the log, and sqlite3 reading it")
        first = _serve_restart(path, Path(folder))
        second = _serve_restart(path, Path(folder))
        t_sqlite = min(_sqlite_read(path) for _ in range(REPEATS))

    runs = "best of 3" if quick else "1 run"
    restart_peer = f"fold from seq 0 without a snapshot ({runs}): {seconds(t_fold)}"
    fold_rate = rate(count, t_fold)
    raw_rate = rate(count, t_raw)
    serve_name = (
        f"restart to ready, {count:,}-event log: `onduty serve` process start → /readyz 200, "
        "then GET /api/v1/incidents and the console (/) 200"
    )
    peer_read = (
        f"a fresh sqlite3 process reading every event's body (best of 3): {seconds(t_sqlite)}"
    )
    serve_rows = []
    for started, when in (
        (first, "first start on a log the service never ran on (read models built from it)"),
        (second, f"after a clean stop of the first (SIGTERM, exit {first.stopped})"),
    ):
        name = f"{serve_name}, {when}"
        if started.failed:
            serve_rows.append(row(f"FAILED: {name}: {started.failed}", "failed", 0.0, "s",
                                  peer_read, 0.0) | {"ratio": "FAILED"})  # fmt: skip
            continue
        serve_rows.append(
            row(
                name,
                f"{seconds(started.answering)} (ready after {seconds(started.ready)})",
                started.answering,
                "s",
                peer_read,
                started.answering / t_sqlite,
            )
        )
    if not second.failed:
        serve_rows.append(
            row(
                f"{serve_name}, after a clean stop: against the target",
                seconds(second.answering),
                second.answering,
                "s",
                f"target < {TARGET:g} s",
                second.answering / TARGET,
            )
        )
    return [
        *serve_rows,
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
