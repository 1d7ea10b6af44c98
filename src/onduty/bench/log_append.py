"""Append throughput of the SQLite event log, against raw sqlite3 doing the same writes.

Events are ~500-byte `SignalReceived` envelopes from a pool of distinct events (10,000; reused
round robin so the benchmark's own heap stays modest). Every figure is the best of a few runs on
a fresh file; each log figure has a peer measured in the same run:

- `append batch=1000`: one caller appending batches of 1,000 events (hashed, chained, durable),
  against raw `sqlite3` `executemany` of the same rows (the very bytes the log stored) in
  1,000-row transactions, same schema and pragmas;
- `append 8 threads x 1 event`: eight threads each appending single events (group commit),
  against raw `sqlite3` committing one event per transaction;

both with `synchronous=FULL` and again with `synchronous=NORMAL`. `ratio` is the log's
throughput over the peer's.

    python -m onduty.bench.log_append [--quick]
"""

from __future__ import annotations

import gc
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any

from onduty.bench._workload import per_second, row
from onduty.events import Event, SignalReceived, canonical_body, make_event, seal
from onduty.log.sqlite import SQLiteEventLog

BODY_BYTES = 500
POOL = 10_000
BATCH = 1_000
THREADS = 8

Row = tuple[int, str, str, str, str, bytes, str]


def make_pool(size: int) -> list[Event]:
    """`size` distinct unplaced events whose stored body is about `BODY_BYTES` long."""
    t0 = datetime(2024, 5, 1, tzinfo=UTC)

    def event(i: int, pad: int) -> Event:
        body = SignalReceived(
            source="alertmanager",
            fingerprint=f"{i:016x}",
            status="firing",
            labels={"alertname": "HighLatency", "service": f"svc-{i % 20}", "instance": f"h{i}"},
            annotations={"summary": "p99 latency above the objective " + "x" * pad},
        )
        stream = f"svc:svc-{i % 20}"
        return make_event(body, id=f"ev-{i:08d}", ts=t0 + timedelta(seconds=i), stream=stream)

    probe = len(canonical_body(seal(event(0, 0), 1_000_000, "0" * 64)[0]))
    pad = max(0, BODY_BYTES - probe)
    return [event(i, pad) for i in range(size)]


def _stored_rows(path: Path) -> list[Row]:
    db = sqlite3.connect(path)
    try:
        query = "SELECT seq, id, type, stream, ts, body, hash FROM events ORDER BY seq"
        return list(db.execute(query))
    finally:
        db.close()


def _raw_db(path: Path, synchronous: str) -> sqlite3.Connection:
    """An empty database with the log's schema and pragmas, created by the log itself."""
    SQLiteEventLog(str(path), synchronous=synchronous).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


_INSERT = "INSERT INTO events(seq, id, type, stream, ts, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"


def _raw_batches(path: Path, rows: list[Row], synchronous: str) -> float:
    db = _raw_db(path, synchronous)
    try:
        gc.collect()
        started = time.perf_counter()
        for k in range(0, len(rows), BATCH):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_INSERT, rows[k : k + BATCH])
            db.execute("COMMIT")
        return len(rows) / (time.perf_counter() - started)
    finally:
        db.close()


def _raw_one_per_commit(path: Path, rows: list[Row], synchronous: str) -> float:
    db = _raw_db(path, synchronous)
    try:
        gc.collect()
        started = time.perf_counter()
        for r in rows:
            db.execute("BEGIN IMMEDIATE")
            db.execute(_INSERT, r)
            db.execute("COMMIT")
        return len(rows) / (time.perf_counter() - started)
    finally:
        db.close()


def _log_batches(path: Path, pool: list[Event], total: int, synchronous: str) -> float:
    batches = [pool[k % len(pool) : k % len(pool) + BATCH] for k in range(0, total, BATCH)]
    with SQLiteEventLog(str(path), synchronous=synchronous) as log:
        gc.collect()
        started = time.perf_counter()
        for batch in batches:
            log.append(batch)
        elapsed = time.perf_counter() - started
    return sum(len(b) for b in batches) / elapsed


def _log_threads(path: Path, pool: list[Event], per_thread: int, synchronous: str) -> float:
    with SQLiteEventLog(str(path), synchronous=synchronous) as log:
        start = threading.Barrier(THREADS + 1)

        def work(t: int) -> None:
            mine = [pool[(t * per_thread + i) % len(pool)] for i in range(per_thread)]
            start.wait()
            for event in mine:
                log.append([event])

        workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for w in workers:
            w.start()
        gc.collect()
        start.wait()
        started = time.perf_counter()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - started
    return THREADS * per_thread / elapsed


def _best(runs: int, measure: Callable[[Path], float], folder: Path) -> float:
    """The best of `runs` measurements, each on a fresh file in `folder`."""
    files = count()
    best = 0.0
    for _ in range(runs):
        path = folder / f"run-{next(files)}.db"
        best = max(best, measure(path))
        for leftover in folder.glob(f"{path.name}*"):
            leftover.unlink()
    return best


def _row(name: str, value: float, peer: str, peer_value: float) -> dict[str, Any]:
    return row(
        name,
        per_second(value),
        value,
        "events/s",
        f"{peer}: {per_second(peer_value)}",
        value / peer_value,
    )


def run(quick: bool = False) -> list[dict[str, Any]]:
    batch_total = 3 * BATCH if quick else 100_000
    per_thread = 40 if quick else 1_000
    single_commits = 200 if quick else 2_000
    runs = 1 if quick else 3
    pool = make_pool(min(POOL, batch_total))
    folder = Path(tempfile.mkdtemp(prefix="onduty-log-append-"))
    results = []
    try:
        for sync in ("FULL", "NORMAL"):
            sample = folder / f"sample-{sync}.db"  # the exact rows the log writes, for the peers
            _log_batches(sample, pool, batch_total, sync)
            rows = _stored_rows(sample)
            batches = _best(
                runs, partial(_log_batches, pool=pool, total=batch_total, synchronous=sync), folder
            )
            raw_batches = _best(runs, partial(_raw_batches, rows=rows, synchronous=sync), folder)
            results.append(
                _row(
                    f"append batch={BATCH} ({sync})",
                    batches,
                    f"raw sqlite executemany {BATCH}-row tx ({sync})",
                    raw_batches,
                )
            )
            threads = _best(
                runs,
                partial(_log_threads, pool=pool, per_thread=per_thread, synchronous=sync),
                folder,
            )
            one_each = _best(
                runs,
                partial(_raw_one_per_commit, rows=rows[:single_commits], synchronous=sync),
                folder,
            )
            results.append(
                _row(
                    f"append {THREADS} threads x 1 event ({sync})",
                    threads,
                    f"raw sqlite one commit per event ({sync})",
                    one_each,
                )
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv[1:]):
        print(result["name"], result["figure"], result["peer"], result["ratio"])
