"""Run locks, and what a restarted onduty does about a run a crash cut off, for each kind of
actuator. The crashed onduty is a real process (`tests.act.standin`) killed with SIGKILL while
its action runs."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from onduty.act.base import Outcome
from onduty.act.runs import (
    Earlier,
    EarlierState,
    InFlight,
    RunLocks,
    current_run,
    in_flight_of,
    process_alive,
)
from onduty.commands import StartAction, StartUndo
from onduty.events import ActionOutcomeUnknown, Payload
from tests.act.standin import Crashed, Standins

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

# A non-idempotent action: one line per run, then (after it has slept) a marker saying it is done.
APPEND = """\
import os, sys, time
log, markers, command_id, seconds = sys.argv[1:5]
with open(log, "a") as out:
    out.write(f"{command_id} {os.getpid()}\\n")
time.sleep(float(seconds))
open(os.path.join(markers, command_id), "w").close()
"""
CHECK = """\
import os, sys
sys.exit(0 if os.path.exists(os.path.join(sys.argv[1], sys.argv[2])) else 1)
"""


def command(
    command_id: str = "cmd-1", *, name: str = "process.restart", **extra: Any
) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "incident_id": "inc-1",
        "action": name,
        "target": "web-1",
        "timeout_s": 30.0,
        **extra,
    }


def shell_spec(
    directory: Path, seconds: float, *, check: bool = True, **extra: Any
) -> dict[str, Any]:
    (directory / "append.py").write_text(APPEND)
    (directory / "check.py").write_text(CHECK)
    (directory / "markers").mkdir(exist_ok=True)
    spec: dict[str, Any] = {
        "kind": "shell",
        "action": "process.restart",
        "argv": [
            PYTHON,
            str(directory / "append.py"),
            str(directory / "runs.log"),
            str(directory / "markers"),
            "{{ command_id }}",
            str(seconds),
        ],
        "allow": [PYTHON],
        "timeout": "30s",
        **extra,
    }
    if check:
        spec["check_argv"] = [
            PYTHON,
            str(directory / "check.py"),
            str(directory / "markers"),
            "{{ command_id }}",
        ]
    return spec


def runs_of(directory: Path) -> list[str]:
    path = directory / "runs.log"
    return path.read_text().splitlines() if path.exists() else []


def kinds(recorded: list[Payload]) -> list[str]:
    return [type(body).__name__ for body in recorded]


# ---------------------------------------------------------------------- the lock itself


def test_a_run_holds_its_lock_while_it_lasts_and_removes_it_afterwards(tmp_path: Path) -> None:
    locks = RunLocks(tmp_path / "runs")
    with locks.hold("cmd-1", timeout_s=5) as handle:
        assert current_run() is handle
        assert locks.held("cmd-1")  # another open file: the lock conflicts
        handle.note(doing="restarting web-1")
        assert locks.record("cmd-1")["doing"] == "restarting web-1"
    assert current_run() is None
    assert not locks.held("cmd-1")
    assert list((tmp_path / "runs").iterdir()) == []
    assert locks.wait("cmd-1", in_flight=InFlight.PROCESS).state is EarlierState.NONE


def test_a_command_id_never_names_a_file_outside_the_directory(tmp_path: Path) -> None:
    locks = RunLocks(tmp_path / "runs")
    for hostile in ("../../etc/passwd", "a/b", ".hidden", "x" * 500, ""):
        assert locks.path(hostile).parent == tmp_path / "runs"
    assert locks.path("cmd-0a1b") != locks.path("cmd-0a1c")


def test_the_program_holds_the_lock_after_onduty_dies_until_it_exits(
    standins: Standins, tmp_path: Path
) -> None:
    crashed = standins.crash(
        {"spec": shell_spec(tmp_path, 1.2, check=False), "command": command()}, after=0.3
    )
    record = crashed.locks.record("cmd-1")
    assert crashed.locks.held("cmd-1"), "the orphaned program holds the run's lock"
    assert process_alive(record["pid"], record["pid_start"])

    earlier = crashed.locks.wait("cmd-1", in_flight=InFlight.PROCESS)
    waited = time.monotonic() - crashed.killed_at

    assert earlier.state is EarlierState.OVER, earlier
    assert 0.5 < waited < 5, waited  # until the program ended (1.2 s in), not its 30 s timeout
    assert not process_alive(record["pid"], record["pid_start"])
    assert not crashed.locks.held("cmd-1")
    assert len(runs_of(tmp_path)) == 1


def test_a_program_past_its_timeout_is_stopped_and_its_outcome_is_unknown(
    standins: Standins, tmp_path: Path
) -> None:
    spec = shell_spec(tmp_path, 60, check=True, timeout="1s")
    crashed = standins.crash({"spec": spec, "command": command(), "kill_grace": 0.2}, after=0.2)
    record = crashed.locks.record("cmd-1")
    assert record["timeout"] == pytest.approx(1.7)  # timeout + kill grace + output drain

    recorded = crashed.reconcile()
    waited = time.monotonic() - crashed.killed_at

    assert kinds(recorded) == ["ActionOutcomeUnknown"]
    (unknown,) = recorded
    assert isinstance(unknown, ActionOutcomeUnknown)
    assert "still in progress" in unknown.reason and "stopped" in unknown.reason
    assert waited < 1.7 + 3, waited  # bounded by its timeout (plus the stop's grace)
    assert not process_alive(record["pid"], record["pid_start"]), "its process group is stopped"
    assert len(runs_of(tmp_path)) == 1, "never run again"
    assert not crashed.locks.path("cmd-1").exists(), "the settled command's lock is removed"


def test_a_program_that_exited_is_over_though_what_it_left_behind_holds_the_lock(
    standins: Standins, tmp_path: Path
) -> None:
    spec = {
        "kind": "shell",
        "action": "process.restart",
        "argv": ["/bin/sh", "-c", "sleep 30 & sleep 0.8"],
        "allow": ["/bin/sh"],
        "timeout": "30s",
    }
    crashed = standins.crash({"spec": spec, "command": command()}, after=0.2)

    earlier = crashed.locks.wait("cmd-1", in_flight=InFlight.PROCESS)

    assert earlier.state is EarlierState.OVER and "left behind" in earlier.detail, earlier
    assert time.monotonic() - crashed.killed_at < 5
    assert crashed.locks.held("cmd-1")  # the background sleep still has it


def test_a_request_cut_off_by_a_crash_is_waited_out_until_its_timeout(tmp_path: Path) -> None:
    locks = RunLocks(tmp_path / "runs")
    # What a dead onduty leaves of a request it was sending: the record, and no lock.
    locks.path("cmd-1").write_bytes(orjson.dumps({"started": time.time(), "timeout": 0.6}))
    begun = time.monotonic()
    assert locks.wait("cmd-1", in_flight=InFlight.PROCESS).state is EarlierState.OVER
    assert time.monotonic() - begun < 0.3, "a free lock of a program is over at once"

    earlier = locks.wait("cmd-1", in_flight=InFlight.REQUEST)

    assert earlier.state is EarlierState.OVER and "timeout" in earlier.detail
    assert 0.4 < time.monotonic() - begun < 2


def test_a_wait_is_cancelled_at_shutdown(tmp_path: Path) -> None:
    holder, waiter = RunLocks(tmp_path / "runs"), RunLocks(tmp_path / "runs")
    result: list[Earlier] = []
    with holder.hold("cmd-1", timeout_s=30):
        thread = threading.Thread(
            target=lambda: result.append(waiter.wait("cmd-1", in_flight=InFlight.PROCESS))
        )
        thread.start()
        time.sleep(0.2)
        waiter.close()
        thread.join(2)
    assert [r.state for r in result] == [EarlierState.CANCELLED]


def test_a_sweep_keeps_only_the_commands_in_doubt(tmp_path: Path) -> None:
    locks = RunLocks(tmp_path / "runs")
    for command_id in ("cmd-1", "cmd-2", "undo-3"):
        locks.path(command_id).write_bytes(b"{}")
    assert locks.sweep(["cmd-2"]) == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["cmd-2.lock"]


# ---------------------------------------------------------------------- each kind after a crash


def test_shell_a_restart_waits_for_the_running_program_before_it_checks(
    standins: Standins, tmp_path: Path
) -> None:
    crashed = standins.crash({"spec": shell_spec(tmp_path, 1.0), "command": command()}, after=0.2)

    recorded = crashed.reconcile()

    assert kinds(recorded) == ["ActionSucceeded"], recorded  # the check, after the program ended
    assert len(runs_of(tmp_path)) == 1, runs_of(tmp_path)
    assert not crashed.locks.path("cmd-1").exists()


def test_shell_a_program_killed_before_it_started_runs_once_after_the_restart(
    tmp_path: Path,
) -> None:
    locks = RunLocks(tmp_path / "runs")
    # onduty took the lock and died before it could start the program: the lock is free.
    locks.path("cmd-1").write_bytes(orjson.dumps({"started": time.time(), "timeout": 30}))
    options = {
        "runs": str(tmp_path / "runs"),
        "spec": shell_spec(tmp_path, 0),
        "command": command(),
    }

    recorded = Crashed(locks, options, time.monotonic()).reconcile()

    assert kinds(recorded) == ["ActionSucceeded"]
    assert len(runs_of(tmp_path)) == 1  # its first run


@dataclass
class Remote:
    """A server that applies a request slowly and goes on when its client has gone."""

    url: str = ""
    applied: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    silences: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def remote() -> Iterator[Remote]:
    state = Remote()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes = b"{}") -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.received.append(self.path)
            time.sleep(0.8)  # applying it; the client may be gone by now
            if self.path == "/api/v2/silences":
                silence = {**orjson.loads(body), "id": f"s{len(state.silences)}"}
                silence["status"] = {"state": "active"}
                state.silences.append(silence)
                self._answer(200, orjson.dumps({"silenceID": silence["id"]}))
                return
            state.applied.append(self.path.rsplit("/", 1)[-1])
            self._answer(200)

        def do_GET(self) -> None:
            if self.path.startswith("/check/"):
                self._answer(200 if self.path.removeprefix("/check/") in state.applied else 404)
            elif self.path == "/api/v2/silences":
                self._answer(200, orjson.dumps(state.silences))
            else:
                self._answer(404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def test_http_a_restart_waits_out_the_request_before_it_checks(
    standins: Standins, remote: Remote
) -> None:
    spec = {
        "kind": "http",
        "action": "service.flush",
        "method": "POST",
        "url": remote.url + "/apply/{{ command_id }}",
        "check_url": remote.url + "/check/{{ command_id }}",
        "timeout": "1500ms",
    }
    crashed = standins.crash({"spec": spec, "command": command(name="service.flush")}, after=0.2)
    assert remote.applied == [], "the server is still applying the request"

    recorded = crashed.reconcile()

    # Checked only after the request's timeout: the server had applied it by then.
    assert kinds(recorded) == ["ActionSucceeded"], recorded
    assert time.monotonic() - crashed.killed_at > 1.0
    assert remote.received == ["/apply/cmd-1"], "the request was not sent again"


def test_alertmanager_a_restart_finds_the_silence_the_cut_off_request_created(
    standins: Standins, remote: Remote
) -> None:
    spec = {
        "kind": "alertmanager.silence",
        "action": "alert.silence",
        "url": remote.url,
        "timeout": "1500ms",
    }
    params = {"matchers": ['instance="web-1"'], "duration": "1h"}
    crashed = standins.crash(
        {"spec": spec, "command": command(name="alert.silence", params=params)}, after=0.3
    )

    recorded = crashed.reconcile()

    assert kinds(recorded) == ["ActionSucceeded"], recorded
    assert len(remote.silences) == 1, "one silence, never two"


class SlowPlugin:
    """A plugin actuator that says nothing about crashes: its work is taken to be a request."""

    idempotent = True
    can_check = False

    def __init__(self, spec: dict[str, Any]) -> None:
        self.runs: list[str] = []

    def run(self, command: StartAction | StartUndo) -> Outcome:
        self.runs.append(command.command_id)
        return Outcome(True, output="done")

    def check(self, command_id: str) -> Outcome | None:
        return None


class ProcessPlugin(SlowPlugin):
    """A plugin whose work is a program that outlives onduty: it passes the run's lock on."""

    in_flight = "process"
    idempotent = False

    def run(self, command: StartAction | StartUndo) -> Outcome:
        run = current_run()
        assert run is not None
        child = subprocess.Popen(
            ["/bin/sleep", "1"], pass_fds=(run.fd,), start_new_session=True, close_fds=True
        )
        run.note(pid=child.pid, pgid=child.pid, timeout=10)
        child.wait()
        return Outcome(True)


def test_plugins_are_requests_unless_they_say_they_start_processes(
    standins: Standins, tmp_path: Path
) -> None:
    assert in_flight_of(SlowPlugin({})) is InFlight.REQUEST
    assert in_flight_of(ProcessPlugin({})) is InFlight.PROCESS

    # An idempotent plugin cut off mid-request runs again, once its request's timeout is past.
    locks = RunLocks(tmp_path / "runs")
    locks.path("cmd-1").write_bytes(orjson.dumps({"started": time.time(), "timeout": 0.5}))
    options = {
        "runs": str(tmp_path / "runs"),
        "factory": "tests.act.test_runs:SlowPlugin",
        "spec": {"action": "plugin.do"},
        "command": command(name="plugin.do"),
    }
    begun = time.monotonic()
    assert kinds(Crashed(locks, options, begun).reconcile()) == ["ActionSucceeded"]
    assert time.monotonic() - begun > 0.4

    # A plugin whose program outlives onduty is waited for, then escalated (it cannot check).
    crashed = standins.crash(
        {
            "factory": "tests.act.test_runs:ProcessPlugin",
            "spec": {"action": "plugin.do"},
            "command": command(name="plugin.do"),
        },
        after=0.2,
    )
    assert crashed.locks.held("cmd-1")
    recorded = crashed.reconcile()
    assert kinds(recorded) == ["ActionOutcomeUnknown"]
    assert 0.5 < time.monotonic() - crashed.killed_at < 5
