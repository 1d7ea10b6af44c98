"""Append and read-back throughput of the PostgreSQL event log beside the SQLite one, in the same
run, in process, through the `EventLog` API.

`PostgresEventLog(url, partition)` writes one partition of a private schema on the machine's
PostgreSQL (over loopback TCP; its settings, fsync and synchronous_commit, are in the row names:
on, each commit is durable), `SQLiteEventLog(path)` a fresh file on local disk
(synchronous=FULL, WAL). Events are log_append's ~500-byte `SignalReceived` envelopes. Every
figure is the best of 3 runs (1 with `quick`), each on a fresh schema or file:

- append: 4 threads each appending batches of 1, 10 and 100 events (both logs group-commit what
  the threads queued meanwhile); events/s, PostgreSQL over SQLite;
- read-back: every event of the batch-100 log read in order through `read()` and decoded;
- partitions: the same 4 threads with batches of 10, each on a partition of its own (4 logs, so
  4 writer threads and connections, each locking only its partition's head), against all 4 on
  one partition (whose writer commits what they queued together), and against 1 thread alone
  on one partition (a commit per batch, as each of the 4 partitions makes): 4x that would be
  partitions that never wait for each other.

    python -m onduty.bench.pg_log [--quick]
"""

from __future__ import annotations

import gc
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import psycopg

from onduty.bench._fleet import DATABASE, not_measured, private
from onduty.bench._workload import Row, per_second, row
from onduty.bench.log_append import make_pool
from onduty.events import Event
from onduty.log import EventLog
from onduty.log.postgres import PostgresEventLog
from onduty.log.sqlite import SQLiteEventLog

THREADS = 4
BATCHES = (1, 10, 100)
PARTITIONED_BATCH = 10
# events each thread appends, by batch size: enough for a few hundred commits at least
PER_THREAD = {False: {1: 1_000, 10: 5_000, 100: 10_000}, True: {1: 50, 10: 200, 100: 1_000}}
NAME = "PostgreSQL log"

Opener = Callable[[int], EventLog]
"""Opens partition N of a fresh store (a SQLite store has only one)."""


def appends(
    logs: Sequence[EventLog], pool: list[Event], batch: int, per_thread: int, threads: int = THREADS
) -> float:
    """`threads` threads, thread t appending `per_thread` events in batches of `batch` to
    `logs[t % len(logs)]`, all released at once; events/s from the release to the last commit."""
    start = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        log = logs[t % len(logs)]
        first = t * per_thread
        mine = [pool[(first + i) % len(pool)] for i in range(per_thread)]
        batches = [mine[k : k + batch] for k in range(0, per_thread, batch)]
        start.wait()
        for events in batches:
            log.append(events)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    gc.collect()
    start.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return threads * per_thread / (time.perf_counter() - started)


def read_back(log: EventLog) -> float:
    """Every event of `log` read in order and decoded, events/s."""
    gc.collect()
    started = time.perf_counter()
    count = sum(1 for _ in log.read())
    return count / (time.perf_counter() - started)


def _best(runs: int, measure: Callable[[], float]) -> float:
    return max(measure() for _ in range(runs))


def _pair(runs: int, one: Callable[[], float], other: Callable[[], float]) -> tuple[float, float]:
    """The best of `runs` of each, taken in turns, so that a slow spell of the machine falls on
    both rather than on whichever ran then."""
    best = (0.0, 0.0)
    for _ in range(runs):
        best = (max(best[0], one()), max(best[1], other()))
    return best


def postgres_appends(
    pool: list[Event], batch: int, per_thread: int, partitions: int, threads: int = THREADS
) -> float:
    """Appends to `partitions` partitions of a fresh schema (dropped afterwards)."""
    with private(bus=False) as where:
        logs = [PostgresEventLog(where.store, p) for p in range(partitions)]
        try:
            return appends(logs, pool, batch, per_thread, threads)
        finally:
            for log in logs:
                log.close()


def postgres_read_back(pool: list[Event], per_thread: int, runs: int) -> float:
    with private(bus=False) as where, PostgresEventLog(where.store, 0) as log:
        appends([log], pool, BATCHES[-1], per_thread)
        return _best(runs, lambda: read_back(log))


def sqlite_appends(folder: Path, pool: list[Event], batch: int, per_thread: int) -> float:
    with (
        tempfile.TemporaryDirectory(dir=folder) as name,
        SQLiteEventLog(str(Path(name) / "log.db")) as log,
    ):
        return appends([log], pool, batch, per_thread)


def sqlite_read_back(folder: Path, pool: list[Event], per_thread: int, runs: int) -> float:
    with (
        tempfile.TemporaryDirectory(dir=folder) as name,
        SQLiteEventLog(str(Path(name) / "log.db")) as log,
    ):
        appends([log], pool, BATCHES[-1], per_thread)
        return _best(runs, lambda: read_back(log))


def settings() -> str:
    """The server's settings that decide what a commit costs."""
    names = ("server_version", "fsync", "synchronous_commit")
    with psycopg.connect(DATABASE, autocommit=True, connect_timeout=5) as conn:
        found = {name: str(conn.execute(f"SELECT current_setting('{name}')").fetchall()[0][0])
                 for name in names}  # fmt: skip
    return (
        f"PostgreSQL {found['server_version'].split()[0]}, fsync={found['fsync']}, "
        f"synchronous_commit={found['synchronous_commit']}"
    )


def run(quick: bool = False) -> list[Row]:
    try:
        server = settings()
    except psycopg.Error as error:
        return [not_measured(NAME, f"PostgreSQL at {DATABASE}: {str(error).strip()[:120]}")]
    runs = 1 if quick else 3
    sizes = PER_THREAD[quick]
    pool = make_pool(THREADS * max(sizes.values()))
    peer = "SQLiteEventLog, same threads and events (synchronous=FULL)"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="onduty-bench-pg-log-") as name:
        folder = Path(name)
        for batch in BATCHES:
            per_thread = sizes[batch]
            pg, lite = _pair(
                runs,
                partial(postgres_appends, pool, batch, per_thread, 1),
                partial(sqlite_appends, folder, pool, batch, per_thread),
            )
            rows.append(row(
                f"{NAME}: append, {THREADS} threads x batches of {batch} to one partition, "
                f"{THREADS * per_thread:,} events ({server})",
                per_second(pg), pg, "events/s", f"{peer}: {per_second(lite)}", pg / lite,
            ))  # fmt: skip
        per_thread = sizes[BATCHES[-1]]
        pg = postgres_read_back(pool, per_thread, runs)
        lite = sqlite_read_back(folder, pool, per_thread, runs)
        rows.append(row(
            f"{NAME}: read-back, {THREADS * per_thread:,} events in order (log.read(), decoded)",
            per_second(pg), pg, "events/s", f"SQLiteEventLog, the same events: {per_second(lite)}",
            pg / lite,
        ))  # fmt: skip
    per_thread = sizes[PARTITIONED_BATCH]
    apart, together = _pair(
        runs,
        partial(postgres_appends, pool, PARTITIONED_BATCH, per_thread, THREADS),
        partial(postgres_appends, pool, PARTITIONED_BATCH, per_thread, 1),
    )
    alone = _best(runs, partial(postgres_appends, pool, PARTITIONED_BATCH, per_thread, 1, 1))
    label = (
        f"{NAME}: append, {THREADS} threads x batches of {PARTITIONED_BATCH}, each thread on a "
        f"partition of its own ({THREADS} partitions, {THREADS} writers and connections)"
    )
    rows.append(row(
        label, per_second(apart), apart, "events/s",
        f"the same {THREADS} threads on one partition (their batches group-committed together): "
        f"{per_second(together)}", apart / together,
    ))  # fmt: skip
    rows.append(row(
        f"{label}, against one partition's own pace", per_second(apart), apart, "events/s",
        f"1 thread on one partition (a commit per batch, as each of the {THREADS} makes): "
        f"{per_second(alone)}; {THREADS}.00x would be no waiting on each other at all",
        apart / alone,
    ))  # fmt: skip
    return rows


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv[1:]):
        print(result["name"], result["figure"], result["peer"], result["ratio"])
