"""The supervisor actuator against a real supervisord (Debian's `supervisor` package), run by
the fixture with its own configuration on loopback and a unix socket."""

from __future__ import annotations

import subprocess
import tempfile
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from onduty.act.specs import OutcomeUnknown, SupervisorSpec
from onduty.act.supervisor import STOPPED_STATES, SupervisorActuator
from onduty.events import ActionOutcomeUnknown
from tests.act.helpers import action, free_port
from tests.act.standin import Standins

ROOT = Path(__file__).resolve().parents[2]
SUPERVISORD = Path("/usr/bin/supervisord")
PASSWORD = "sv-pass-7c1d"

CONFIG = """
[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}
loglevel=info

[inet_http_server]
port=127.0.0.1:{port}
username=onduty
password={password}

[unix_http_server]
file={dir}/s.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:web]
command=/bin/sleep 1000
startsecs=1
autostart=true
autorestart=false
stopwaitsecs=2
stopasgroup=true

[program:broken]
command=/bin/sh -c "exit 1"
startsecs=1
startretries=0
autostart=false
autorestart=false

[program:slowstop]
command=/bin/sh -c "trap '' TERM; exec /bin/sleep 1000"
startsecs=1
autostart=true
autorestart=false
stopwaitsecs=1

[group:pool]
programs=worker-a,worker-b

[program:worker-a]
command=/bin/sleep 1000
startsecs=0
autostart=false

[program:worker-b]
command=/bin/sleep 1000
startsecs=0
autostart=false
"""


@dataclass
class Supervisord:
    url: str
    socket: str

    def info(self, name: str) -> dict[str, Any]:
        with xmlrpc.client.ServerProxy(
            self.url.replace("http://", f"http://onduty:{PASSWORD}@")
        ) as proxy:
            result = proxy.supervisor.getProcessInfo(name)
        assert isinstance(result, dict)
        return result


def ensure_supervisord() -> None:
    if not SUPERVISORD.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_supervisor.sh")], check=True)
    assert SUPERVISORD.exists(), "supervisord could not be installed"


@pytest.fixture(scope="module")
def supervisord() -> Iterator[Supervisord]:
    ensure_supervisord()
    # A short directory: a unix socket's path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="sv-") as directory:
        port = free_port()
        config = Path(directory) / "supervisord.conf"
        config.write_text(CONFIG.format(dir=directory, port=port, password=PASSWORD))
        with (Path(directory) / "out.log").open("wb") as out:
            process = subprocess.Popen(
                [str(SUPERVISORD), "-n", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        server = Supervisord(f"http://127.0.0.1:{port}/RPC2", f"{directory}/s.sock")
        try:
            deadline = time.monotonic() + 15
            while True:
                if process.poll() is not None:
                    raise AssertionError(
                        "supervisord exited at start:\n" + (Path(directory) / "out.log").read_text()
                    )
                try:
                    if server.info("web")["statename"] == "RUNNING":
                        break
                except (OSError, xmlrpc.client.Error):
                    pass
                if time.monotonic() > deadline:
                    log = Path(directory) / "supervisord.log"
                    raise AssertionError(
                        "supervisord did not start its program:\n"
                        + (log.read_text() if log.exists() else "(no log)")
                    )
                time.sleep(0.05)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def make(supervisord: Supervisord, **fields: Any) -> SupervisorActuator:
    spec = SupervisorSpec.model_validate(
        {
            "kind": "supervisor",
            "url": supervisord.url,
            "username": "onduty",
            "password": "${ENV:ONDUTY_TEST_SV_PASSWORD}",
            **fields,
        }
    )
    return SupervisorActuator(spec, env={"ONDUTY_TEST_SV_PASSWORD": PASSWORD})


def test_restart_gives_a_new_running_process(supervisord: Supervisord) -> None:
    actuator = make(supervisord)
    assert not actuator.idempotent
    assert not actuator.can_check
    before = supervisord.info("web")
    outcome = actuator.run(action("web", name="process.restart"))
    assert outcome.ok, outcome.error
    after = supervisord.info("web")
    assert after["statename"] == "RUNNING"
    assert after["pid"] != before["pid"]
    assert f"pid {before['pid']} → {after['pid']}" in outcome.output
    with pytest.raises(OutcomeUnknown):
        actuator.check("cmd-1")


def test_stop_and_start_are_idempotent(supervisord: Supervisord) -> None:
    stop = make(supervisord, action="process.stop")
    start = make(supervisord, action="process.start")
    assert stop.idempotent and start.idempotent
    for _ in range(2):
        outcome = stop.run(action("web", name="process.stop"))
        assert outcome.ok, outcome.error
        assert supervisord.info("web")["statename"] == "STOPPED"
    first = None
    for _ in range(2):
        outcome = start.run(action("web", name="process.start"))
        assert outcome.ok, outcome.error
        info = supervisord.info("web")
        assert info["statename"] == "RUNNING"
        first = first or info["pid"]
        assert info["pid"] == first  # the second start found it running and left it alone


def test_restart_of_a_stopped_program_starts_it(supervisord: Supervisord) -> None:
    actuator = make(supervisord)
    assert actuator.run(action("web", name="process.stop")).ok
    outcome = actuator.run(action("web", name="process.restart"))
    assert outcome.ok, outcome.error
    assert supervisord.info("web")["statename"] == "RUNNING"


def test_a_unix_socket_works_too(supervisord: Supervisord) -> None:
    spec = SupervisorSpec.model_validate(
        {"kind": "supervisor", "url": f"unix://{supervisord.socket}"}
    )
    before = supervisord.info("web")["pid"]
    outcome = SupervisorActuator(spec).run(action("web"))
    assert outcome.ok, outcome.error
    assert supervisord.info("web")["pid"] != before


def test_a_group_restarts_as_a_whole(supervisord: Supervisord) -> None:
    actuator = make(supervisord, program="pool:{{ target }}")
    outcome = actuator.run(action("*", name="process.start"))
    assert outcome.ok, outcome.error
    pids = {name: supervisord.info(f"pool:{name}")["pid"] for name in ("worker-a", "worker-b")}
    outcome = actuator.run(action("*", name="process.restart"))
    assert outcome.ok, outcome.error
    for name, pid in pids.items():
        info = supervisord.info(f"pool:{name}")
        assert info["statename"] == "RUNNING"
        assert info["pid"] != pid
    assert actuator.run(action("worker-a", name="process.stop")).ok
    assert supervisord.info("pool:worker-a")["statename"] == "STOPPED"


def test_faults_become_clear_errors(supervisord: Supervisord) -> None:
    actuator = make(supervisord)
    outcome = actuator.run(action("nope"))
    assert outcome == type(outcome)(False, error="supervisor: no such program 'nope'")
    outcome = actuator.run(action("broken", name="process.start"))
    assert not outcome.ok
    assert outcome.error.startswith("supervisor: 'broken' ")
    # `broken` exits at once, racing supervisord's own state machine; both outcomes are a
    # failed start and the error says which one supervisord saw. startProcess answers
    # SPAWN_ERROR when supervisord reaped the too-quick exit before the call returned,
    # ABNORMAL_TERMINATION when it noticed the exit while the call waited for startsecs.
    assert "could not be spawned" in outcome.error or "exited while starting" in outcome.error
    # The state read just after depends on how far supervisord got with the exit: BACKOFF until
    # its next tick gives up (startretries is 0) and makes it FATAL, or EXITED when the exit
    # was counted as an exit rather than a failed start; each is a program that is not running,
    # and the error names the state seen.
    assert any(f"broken is {state}" in outcome.error for state in ("FATAL", "BACKOFF", "EXITED"))
    outcome = actuator.run(action("web", name="process.scale"))
    assert not outcome.ok and "restarts, starts or stops" in outcome.error
    outcome = actuator.run(action("web; reboot"))
    assert outcome.error.startswith("refused: ")


def test_wrong_credentials_are_refused_without_showing_them(supervisord: Supervisord) -> None:
    spec = SupervisorSpec.model_validate(
        {
            "kind": "supervisor",
            "url": supervisord.url,
            "username": "onduty",
            "password": "${ENV:WRONG}",
        }
    )
    actuator = SupervisorActuator(spec, env={"WRONG": "not-the-password"})
    outcome = actuator.run(action("web"))
    assert outcome.error == f"supervisor: {supervisord.url} refused the credentials (401)"
    assert "not-the-password" not in repr(actuator)


def test_an_unreachable_supervisord_is_a_failure() -> None:
    port = free_port()
    spec = SupervisorSpec.model_validate(
        {"kind": "supervisor", "url": f"http://127.0.0.1:{port}/RPC2", "timeout": "2s"}
    )
    outcome = SupervisorActuator(spec).run(action("web"))
    assert outcome.error == (
        f"supervisor: cannot connect to http://127.0.0.1:{port}/RPC2: connection refused"
    )


def crash_spec(supervisord: Supervisord, action: str) -> dict[str, Any]:
    return {
        "spec": {
            "kind": "supervisor",
            "action": action,
            "url": supervisord.url,
            "username": "onduty",
            "password": "${ENV:ONDUTY_TEST_SV_PASSWORD}",
            "timeout": "2s",
        },
        "env": {"ONDUTY_TEST_SV_PASSWORD": PASSWORD},
        "command": {
            "command_id": f"cmd-{action}",
            "incident_id": "inc-1",
            "action": action,
            "target": "slowstop",
        },
    }


def wait_for_state(supervisord: Supervisord, states: set[str] | frozenset[str]) -> str:
    deadline = time.monotonic() + 10
    while (state := supervisord.info("slowstop")["statename"]) not in states:
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    return str(state)


def test_a_restart_cut_off_by_a_crash_is_escalated_saying_what_it_was_doing(
    supervisord: Supervisord, standins: Standins
) -> None:
    wait_for_state(supervisord, {"RUNNING"})
    # The program ignores SIGTERM: supervisord's stop takes a second (then SIGKILL).
    crashed = standins.crash(crash_spec(supervisord, "process.restart"), after=0.4)

    recorded = crashed.reconcile()

    (unknown,) = recorded
    assert isinstance(unknown, ActionOutcomeUnknown)
    assert "not idempotent" in unknown.reason
    assert "stopping slowstop" in unknown.reason, unknown.reason
    # Why it is not re-run blindly, nor reported done: supervisord finished the stop it was
    # asked for, and nobody asked it to start the program again.
    assert wait_for_state(supervisord, STOPPED_STATES) in STOPPED_STATES


def test_a_start_cut_off_by_a_crash_is_run_again_once_its_request_is_over(
    supervisord: Supervisord, standins: Standins
) -> None:
    stop = make(supervisord, action="process.stop")
    assert stop.run(action("slowstop", name="process.stop")).ok
    crashed = standins.crash(crash_spec(supervisord, "process.start"), after=0.3)

    recorded = crashed.reconcile()

    assert [type(body).__name__ for body in recorded] == ["ActionSucceeded"], recorded
    assert time.monotonic() - crashed.killed_at > 1.2, "the start in flight was waited out"
    assert supervisord.info("slowstop")["statename"] == "RUNNING"
