"""Fold and replay throughput of the core, over a realistic history.

A history of ~200,000 events (5,000 with `quick`) is produced once by the real core and appended
to a temporary SQLite log; the events are then read back, so every measurement sees events
exactly as a restart or a replay sees them. Measured (best of 3):

- fold: `Manager.apply` over the already-decoded `Event` objects;
- replay: `onduty.replay.replay`, which re-derives every decision and compares it with the log;
- read + decode + fold: `log.read()` from the SQLite file into `Manager.apply`;
- read + decode: `log.read()` alone, to separate decoding from folding.

The peer, measured in the same run, is the floor of any decoder: `orjson.loads` of the same
stored bodies (for the in-memory rows), and that plus reading the rows with `sqlite3` directly
(for the rows that read the file). Ratios are throughput over the peer's throughput.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import orjson

from onduty.bench._workload import (
    HistoryDriver,
    Row,
    append_all,
    best_of,
    fold,
    per_second,
    rate,
    row,
)
from onduty.log.sqlite import SQLiteEventLog
from onduty.replay import replay

FULL_EVENTS = 200_000
QUICK_EVENTS = 5_000
REPEATS = 3


def _raw_bodies(path: Path) -> list[bytes]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT body FROM events ORDER BY seq")]
    finally:
        conn.close()


def _loads_all(bodies: list[bytes]) -> int:
    loads = orjson.loads
    for body in bodies:
        loads(body)
    return len(bodies)


def _raw_read_and_loads(path: Path) -> int:
    """Read (body, hash) rows page by page as the log does, and parse each body: the floor."""
    conn = sqlite3.connect(path)
    count, after, loads = 0, 0, orjson.loads
    try:
        while True:
            rows = conn.execute(
                "SELECT seq, body, hash FROM events WHERE seq > ? ORDER BY seq LIMIT 2000",
                (after,),
            ).fetchall()
            for _seq, body, _hash in rows:
                loads(body)
            count += len(rows)
            if len(rows) < 2000:
                return count
            after = rows[-1][0]
    finally:
        conn.close()


def run(quick: bool = False) -> list[Row]:
    total = QUICK_EVENTS if quick else FULL_EVENTS
    with tempfile.TemporaryDirectory(prefix="onduty-bench-") as folder:
        path = Path(folder) / "fold.db"
        log = SQLiteEventLog(str(path), synchronous="NORMAL")
        try:
            append_all(log, HistoryDriver(seed=7).groups(), total)
        finally:
            log.close()

        log = SQLiteEventLog(str(path))
        try:
            events = list(log.read())
            count = len(events)
            bodies = _raw_bodies(path)

            t_loads = best_of(REPEATS, lambda: _loads_all(bodies))
            t_raw = best_of(REPEATS, lambda: _raw_read_and_loads(path))
            t_fold = best_of(REPEATS, lambda: fold(events))
            reports = []
            t_replay = best_of(REPEATS, lambda: reports.append(replay(events)))
            t_read_fold = best_of(REPEATS, lambda: fold(log.read()))
            t_read = best_of(REPEATS, lambda: sum(1 for _ in log.read()))
        finally:
            log.close()

    report = reports[-1]
    loads_rate = rate(count, t_loads)
    raw_rate = rate(count, t_raw)
    loads_peer = f"orjson.loads of the same bodies: {per_second(loads_rate)}"
    raw_peer = f"sqlite3 rows + orjson.loads: {per_second(raw_rate)}"
    fold_rate = rate(count, t_fold)
    replay_rate = rate(report.inputs + report.decisions, t_replay)
    read_fold_rate = rate(count, t_read_fold)
    read_rate = rate(count, t_read)
    same = "" if report.same else f", {len(report.differences)} DIFFERENCES"
    return [
        row(
            f"fold: Manager.apply, {count:,} decoded events",
            per_second(fold_rate),
            fold_rate,
            "events/s",
            loads_peer,
            fold_rate / loads_rate,
        ),
        row(
            f"replay: decisions re-derived, {report.inputs:,} inputs"
            f" + {report.decisions:,} decisions{same}",
            per_second(replay_rate),
            replay_rate,
            "events/s",
            loads_peer,
            replay_rate / loads_rate,
        ),
        row(
            f"read + decode + fold from SQLite, {count:,} events",
            per_second(read_fold_rate),
            read_fold_rate,
            "events/s",
            raw_peer,
            read_fold_rate / raw_rate,
        ),
        row(
            f"read + decode from SQLite (log.read, no fold), {count:,} events",
            per_second(read_rate),
            read_rate,
            "events/s",
            raw_peer,
            read_rate / raw_rate,
        ),
    ]
