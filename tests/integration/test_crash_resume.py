"""Crash test: a scenario process is killed with SIGKILL part-way, at several points, and each
time resumes from its log. No action is started twice, the chain verifies, replay reproduces
every decision, and the scenario still meets its expectations."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

ONDUTY = [sys.executable, "-m", "onduty"]
KILL_POINTS = 3


def run_onduty(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ONDUTY, *args], capture_output=True, text=True, timeout=120, check=False
    )


def event_count(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the schema is not there yet


def kill_after(store: Path, events: int, *extra: str) -> int:
    """Start the demo scenario, SIGKILL it once the log holds `events` events."""
    process = subprocess.Popen(
        [*ONDUTY, "sim", "demo", "--store", str(store), "--pace", "6", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if event_count(store) >= events:
                break
            time.sleep(0.005)
        assert process.poll() is None, "the run finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    return event_count(store)


def read_types(store: Path) -> list[tuple[str, dict[str, object]]]:
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT type, body FROM events ORDER BY seq").fetchall()
    return [(kind, orjson.loads(body)["data"]) for kind, body in rows]


def test_sigkill_at_random_points_resumes_without_repeating_actions(tmp_path: Path) -> None:
    store = tmp_path / "crash.db"
    rng = random.Random(20260105)
    points = sorted(rng.sample(range(10, 150), KILL_POINTS))
    killed_at = [kill_after(store, points[0], "--fresh")]
    for point in points[1:]:
        killed_at.append(kill_after(store, point))
    assert killed_at == sorted(killed_at) and killed_at[0] >= points[0]

    finished = run_onduty("sim", "demo", "--store", str(store))
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "resumed from its log" in finished.stdout

    events = read_types(store)
    started = Counter(data["command_id"] for kind, data in events if kind == "ActionStarted")
    assert started and all(count == 1 for count in started.values()), started
    outcomes = Counter(
        data["command_id"]
        for kind, data in events
        if kind in ("ActionSucceeded", "ActionFailed", "ActionOutcomeUnknown")
    )
    assert all(count == 1 for count in outcomes.values()), outcomes
    assert set(outcomes) == set(started), "every started action has exactly one outcome"

    verified = run_onduty("audit", "verify", "--store", str(store))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    replayed = run_onduty("replay", "--store", str(store))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr


def test_a_finished_run_resumed_again_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "done.db"
    first = run_onduty("sim", "demo", "--store", str(store), "--fresh")
    assert first.returncode == 0, first.stdout + first.stderr
    before = event_count(store)
    again = run_onduty("sim", "demo", "--store", str(store))
    assert again.returncode == 0, again.stdout + again.stderr
    assert event_count(store) == before
