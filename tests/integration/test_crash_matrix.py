"""Crash matrix: `onduty serve` is SIGKILLed at every point of a slow, non-idempotent shell
action — before its program starts, early, in the middle, just before the end, after the
end — and restarted at once or after the action would have finished, each twice.

The action appends one line per run to a file, sleeps, and leaves a marker when it is done;
its `check_argv` reports the marker. A restarted onduty must wait for a run still in progress
before it asks the check, so no action ever runs twice, and every action ends reconciled
(succeeded through the check, or run for the first time) or escalated as unknown.

One server run covers the five kill points at once: five instances go down at staggered
moments, so a single SIGKILL finds each action at a different point of its run.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.server import Server

DURATION = 1.5
"""How long one run of the action takes."""

KILL_POINTS = {  # seconds between the program's start and the SIGKILL (None: before it starts)
    "after-end": DURATION + 0.5,
    "just-before-end": DURATION - 0.15,
    "middle": DURATION / 2,
    "early": 0.15,
    "before-start": None,
}
RESTART_DELAYS = {"at-once": 0.0, "after-the-runs": DURATION + 0.5}
REPEATS = 2

ACTION = """\
import os, sys, time
runs, markers, command_id, target, duration, gate = sys.argv[1:7]
with open(runs, "a") as out:
    out.write(f"{command_id} {target} {os.getpid()} {time.time()!r}\\n")
time.sleep(float(duration))
# The last two to start also wait for the test's gate: still running when onduty restarts.
deadline = time.monotonic() + 20
while target in ("early", "before-start") and not os.path.exists(gate):
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.02)
open(os.path.join(markers, command_id), "w").close()
"""

CHECK = """\
import os, sys
markers, command_id = sys.argv[1:3]
sys.exit(0 if os.path.exists(os.path.join(markers, command_id)) else 1)
"""


def write_config(directory: Path) -> Path:
    (directory / "action.py").write_text(ACTION)
    (directory / "check.py").write_text(CHECK)
    (directory / "markers").mkdir()
    python = sys.executable
    document = {
        "services": [{"name": "web", "autonomy": "act", "instances": list(KILL_POINTS)}],
        "correlation": {"group_by": ["service", "alertname", "instance"], "group_wait": "0s"},
        "runbooks": [
            {
                "name": "restart-down-instance",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [
                    {
                        "action": "process.restart",
                        "target": "{{ signal.labels.instance }}",
                        "timeout": "10s",
                    }
                ],
                "verify": {"signal_resolved_within": "10m"},
            }
        ],
        "actuators": [
            {
                "kind": "shell",
                "action": "process.restart",
                "argv": [
                    python,
                    str(directory / "action.py"),
                    str(directory / "runs.log"),
                    str(directory / "markers"),
                    "{{ command_id }}",
                    "{{ target }}",
                    str(DURATION),
                    str(directory / "gate"),
                ],
                "check_argv": [
                    python,
                    str(directory / "check.py"),
                    str(directory / "markers"),
                    "{{ command_id }}",
                ],
                "allow": [python],
                "timeout": "10s",
            }
        ],
    }
    path = directory / "onduty.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def runs(directory: Path) -> list[tuple[str, str, int, float]]:
    """(command id, target, pid, start time) of every run of the action, in order."""
    path = directory / "runs.log"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            found.append((parts[0], parts[1], int(parts[2]), float(parts[3])))
    return found


def started_in_store(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("SELECT count(*) FROM events WHERE type = 'ActionStarted'").fetchone()
            return int(row[0])
    except sqlite3.OperationalError:
        return 0


def post_down(client: httpx.Client, instance: str) -> None:
    response = client.post(
        "/api/v1/signals",
        json={
            "source": "matrix",
            "fingerprint": f"down-{instance}",
            "status": "firing",
            "labels": {"alertname": "InstanceDown", "service": "web", "instance": instance},
        },
    )
    assert response.status_code == 202, response.text


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def started_run(directory: Path, instance: str, timeout: float = 10.0) -> float:
    """The wall-clock start of `instance`'s run, once its program has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, target, _, began in runs(directory):
            if target == instance:
                return began
        time.sleep(0.005)
    raise AssertionError(f"the action on {instance} never started")


def crash_at_staggered_points(directory: Path, config: Path, jitter: float) -> float:
    """Start serve; take each instance down so that, at the SIGKILL, its action is at its kill
    point; SIGKILL. Returns the wall-clock moment of the kill."""
    store = directory / "onduty.db"
    server = Server(store, config=config)
    with server, server.client() as client:
        timed = [(name, point) for name, point in KILL_POINTS.items() if point is not None]
        first, lead = timed[0]
        post_down(client, first)
        kill_at = started_run(directory, first) + lead + jitter  # wall clock
        for name, point in timed[1:]:
            # The program starts a few ms after the signal is posted; aim a little early.
            wait_until(time.monotonic() + (kill_at - point - time.time()) - 0.03)
            post_down(client, name)
        wait_until(time.monotonic() + (kill_at - time.time()))
        before = started_in_store(store)
        post_down(client, "before-start")
        deadline = time.monotonic() + 1.0
        while started_in_store(store) <= before and time.monotonic() < deadline:
            time.sleep(0.001)
        killed = time.time()
        server.kill()
    return killed


def all_events(client: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = client.get("/api/v1/events", params={"limit": 10_000}).json()
    return events


OUTCOMES = ("ActionSucceeded", "ActionFailed", "ActionOutcomeUnknown")


def settled(events: list[dict[str, Any]]) -> bool:
    started = {e["data"]["command_id"] for e in events if e["type"] == "ActionStarted"}
    done = {e["data"]["command_id"] for e in events if e["type"] in OUTCOMES}
    return len(started) == len(KILL_POINTS) and started <= done


def stop_once(
    server: Server,
    client: httpx.Client,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    failure: str,
) -> tuple[list[dict[str, Any]], str]:
    """Wait until `done` holds for the log, and a little longer (a second run would have
    started by then); stop the server cleanly. The log then, and the server's output."""
    deadline = time.monotonic() + timeout
    while not done(events := all_events(client)):
        assert time.monotonic() < deadline, f"{failure}; {events}"
        time.sleep(0.1)
    time.sleep(0.3)
    events = all_events(client)
    assert server.terminate() == 0, server.output()
    return events, server.output()


@pytest.fixture
def cleanup(tmp_path: Path) -> Iterator[None]:
    """Every program the killed servers started runs in a process group of its own (its pid);
    none may outlive the test."""
    yield
    for _, _, pid, _ in runs(tmp_path):
        try:
            if b"action.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.killpg(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass  # it has finished


@pytest.mark.usefixtures("cleanup")
@pytest.mark.parametrize("repeat", range(REPEATS))
@pytest.mark.parametrize("delay", RESTART_DELAYS.values(), ids=RESTART_DELAYS.keys())
def test_no_action_runs_twice_whenever_onduty_is_killed(
    tmp_path: Path, delay: float, repeat: int
) -> None:
    config = write_config(tmp_path)
    killed = crash_at_staggered_points(tmp_path, config, jitter=0.05 * repeat)
    at_kill: dict[str, float] = {}
    for _, target, _, began in runs(tmp_path):
        at_kill.setdefault(target, round(killed - began, 3))
    gate = tmp_path / "gate"
    if delay:
        gate.touch()
        time.sleep(delay)

    with Server(tmp_path / "onduty.db", config=config) as server, server.client() as client:
        if not delay:
            # The restart waits for the gated runs on a worker: the core and the API go on.
            time.sleep(0.2)
            assert not settled(all_events(client)), "the gated runs cannot have ended yet"
            assert client.get("/api/v1/incidents").status_code == 200
        gate.touch()  # let the runs still in progress end
        events, output = stop_once(server, client, settled, 30, "not every action settled")

    ran = Counter(command_id for command_id, _, _, _ in runs(tmp_path))
    started = {
        e["data"]["command_id"]: e["data"]["target"] for e in events if e["type"] == "ActionStarted"
    }
    outcomes = [(e["type"], e["data"]["command_id"]) for e in events if e["type"] in OUTCOMES]
    escalated = {e["data"].get("command_id") for e in events if e["type"] == "Escalated"}
    where = f"kill points (seconds into each run): {at_kill}; runs: {runs(tmp_path)}"

    assert sorted(started.values()) == sorted(KILL_POINTS), where
    assert Counter(kind for kind, _ in outcomes).keys() <= set(OUTCOMES)
    assert sorted(command_id for _, command_id in outcomes) == sorted(started), outcomes
    for command_id, target in started.items():
        assert ran[command_id] <= 1, f"{target}: the action ran {ran[command_id]} times; {where}"
    for kind, command_id in outcomes:
        target = started[command_id]
        marker = (tmp_path / "markers" / command_id).exists()
        if kind == "ActionSucceeded":
            assert ran[command_id] == 1 and marker, f"{target}: succeeded without its run; {where}"
        elif kind == "ActionOutcomeUnknown":
            assert command_id in escalated, f"{target}: unknown but not escalated; {where}"
        else:
            pytest.fail(f"{target}: {kind} — the action cannot fail here; {where}")
    assert list((tmp_path / "onduty.db.runs").iterdir()) == [], "settled: no run lock is left"
    if delay == 0:  # the early run was still going when the restart settled it
        assert "an earlier run is still in progress" in output, output


# ---------------------------------------------------------------------------- undo steps
#
# The same for undo steps: an instant action whose verification fails after a second, so its
# slow, non-idempotent undo runs; onduty is SIGKILLed while three undos are at different points
# (over, in the middle, just begun and held at a gate so it outlives the restart) and restarted
# at once. With the undo's `check_argv`, every undo is settled by the check (or run for its
# first time); without it, an undo cut off is recorded as unknown and escalated. Never twice.

UNDO_DURATION = 1.2
UNDO_POINTS = ("u-over", "u-middle", "u-begun")  # in the order their instances go down
UNDO_STAGGER = 0.5
"""Seconds between two instances going down, and so between their undos starting."""

OK = "import sys; sys.exit(0)\n"

UNDO = """\
import os, sys, time
runs, markers, command_id, target, duration, gate = sys.argv[1:7]
with open(runs, "a") as out:
    out.write(f"{command_id} {target} {os.getpid()} {time.time()!r}\\n")
time.sleep(float(duration))
deadline = time.monotonic() + 20
while target == "u-begun" and not os.path.exists(gate):
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.02)
open(os.path.join(markers, command_id), "w").close()
"""


def write_undo_config(directory: Path, *, checkable: bool) -> Path:
    (directory / "ok.py").write_text(OK)
    (directory / "undo.py").write_text(UNDO)
    (directory / "check.py").write_text(CHECK)
    (directory / "markers").mkdir()
    python = sys.executable
    undo: dict[str, Any] = {
        "kind": "shell",
        "action": "traffic.drain",
        "argv": [
            python,
            str(directory / "undo.py"),
            str(directory / "runs.log"),
            str(directory / "markers"),
            "{{ command_id }}",
            "{{ target }}",
            str(UNDO_DURATION),
            str(directory / "gate"),
        ],
        "allow": [python],
        "timeout": "10s",
    }
    if checkable:
        undo["check_argv"] = [
            python,
            str(directory / "check.py"),
            str(directory / "markers"),
            "{{ command_id }}",
        ]
    document = {
        "services": [{"name": "web", "autonomy": "act", "instances": list(UNDO_POINTS)}],
        "correlation": {"group_by": ["service", "alertname", "instance"], "group_wait": "0s"},
        "runbooks": [
            {
                "name": "restart-down-instance",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
                "verify": {"signal_resolved_within": "1s"},  # never resolves: undone
                "undo": [{"action": "traffic.drain", "target": "{{ signal.labels.instance }}"}],
            }
        ],
        "actuators": [
            {
                "kind": "shell",
                "action": "process.restart",
                "argv": [python, str(directory / "ok.py")],
                "allow": [python],
                "timeout": "10s",
            },
            undo,
        ],
    }
    path = directory / "onduty.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def undos_settled(events: list[dict[str, Any]]) -> bool:
    started = {e["data"]["command_id"] for e in events if e["type"] == "UndoStarted"}
    done = {e["data"]["command_id"] for e in events if e["type"] == "UndoFinished"}
    return len(started) == len(UNDO_POINTS) and started <= done


@pytest.mark.usefixtures("cleanup")
@pytest.mark.parametrize("checkable", [True, False], ids=["with-check", "without-check"])
def test_no_undo_runs_twice_whenever_onduty_is_killed(tmp_path: Path, checkable: bool) -> None:
    config = write_undo_config(tmp_path, checkable=checkable)
    store = tmp_path / "onduty.db"
    with Server(store, config=config) as server, server.client() as client:
        for name in UNDO_POINTS:
            post_down(client, name)
            time.sleep(UNDO_STAGGER)
        first = started_run(tmp_path, UNDO_POINTS[0])
        # The first undo is over (and maybe recorded), the second in its middle, the last begun.
        wait_until(time.monotonic() + (first + UNDO_DURATION + 0.3 - time.time()))
        started_run(tmp_path, UNDO_POINTS[-1])
        time.sleep(0.1)
        killed = time.time()
        server.kill()
    at_kill = {target: round(killed - began, 3) for _, target, _, began in runs(tmp_path)}
    where = f"undos (seconds into each run at the kill): {at_kill}; runs: {runs(tmp_path)}"

    gate = tmp_path / "gate"
    with Server(store, config=config) as server, server.client() as client:
        time.sleep(0.2)  # the restart waits for the gated undo on a worker; the API answers
        assert client.get("/api/v1/incidents").status_code == 200
        gate.touch()
        events, output = stop_once(
            server, client, undos_settled, 20, f"not every undo settled: {where}"
        )

    ran = Counter(command_id for command_id, _, _, _ in runs(tmp_path))
    started = Counter(e["data"]["command_id"] for e in events if e["type"] == "UndoStarted")
    finished = [e["data"] for e in events if e["type"] == "UndoFinished"]
    escalated = {e["data"].get("command_id"): e["data"] for e in events if e["type"] == "Escalated"}
    assert len(started) == len(UNDO_POINTS) and set(started.values()) == {1}, where
    assert sorted(f["command_id"] for f in finished) == sorted(started), "each settled once"
    for undo in finished:
        command_id = undo["command_id"]
        marker = (tmp_path / "markers" / command_id).exists()
        assert ran[command_id] <= 1, f"{command_id}: the undo ran {ran[command_id]} times; {where}"
        if undo["ok"]:
            assert ran[command_id] == 1 and marker, f"{command_id}: ok without its run; {where}"
        else:
            assert not checkable, f"{command_id}: the check could have settled it: {undo}; {where}"
            assert undo["unknown"], f"{command_id}: the undo cannot fail here: {undo}"
            reason = escalated[command_id]["reason"]
            assert "in doubt and was not run again" in reason, reason
    if not checkable:  # the undo just begun was cut off: its outcome cannot be known
        assert any(not undo["ok"] for undo in finished), where
    assert list((tmp_path / "onduty.db.runs").iterdir()) == [], "settled: no run lock is left"
    assert "an earlier run is still in progress" in output, output
