"""The supervisor actuator: restart, start or stop a program that supervisord runs.

It speaks supervisord's XML-RPC interface (`supervisor.startProcess`, `stopProcess`,
`getProcessInfo`) with the standard library's `xmlrpc.client`, over HTTP (`inet_http_server`)
or a unix socket (`unix_http_server`), every call bounded by what is left of the action's
timeout. The target names the program (`name`, `group:name`, or `group:*` for a whole group),
through the spec's `program` template.

- `restart`: stop (a program that is not running is fine), then start; not idempotent.
- `start`: a program already running is fine; idempotent.
- `stop`: a program not running is fine; idempotent.

Afterwards the state is read back with `getProcessInfo`: RUNNING after start and restart, a
stopped state after stop; anything else is a failure. supervisord's faults become plain
errors ("supervisor: no such program 'x'"). Credentials are sent as a Basic authorization
header and never appear in errors or a `repr`. supervisord cannot tell afterwards whether a
given command ran, so `can_check` is False.

Crash semantics (`in_flight = "request"`): supervisord finishes an XML-RPC call whose client
died, so a restart waits until the action's timeout has passed since it began. An idempotent
`start` or `stop` is then run again; a `restart` cut off by the crash may have stopped the
program without starting it again: its outcome is unknown and escalated (the escalation says
whether it was stopping or starting).
"""

from __future__ import annotations

import base64
import http.client
import re
import socket
import time
import xmlrpc.client
from collections.abc import Iterable, Mapping
from typing import Any

from onduty.act.base import Outcome
from onduty.act.runs import InFlight, current_run
from onduty.act.specs import (
    OutcomeUnknown,
    SupervisorSpec,
    effective_timeout,
    format_seconds,
)
from onduty.act.templates import TemplateError, command_context, render_text
from onduty.commands import StartAction, StartUndo
from onduty.secrets import Secrets, resolve_references

# supervisor.xmlrpc.Faults
BAD_NAME = 10
NO_FILE = 20
NOT_EXECUTABLE = 21
FAILED = 30
ABNORMAL_TERMINATION = 40
SPAWN_ERROR = 50
ALREADY_STARTED = 60
NOT_RUNNING = 70
SUCCESS = 80

STOPPED_STATES = frozenset({"STOPPED", "EXITED", "FATAL"})
_PROGRAM = re.compile(r"^[^\s:]+(?::[^\s:]+)?$")


class SupervisorError(Exception):
    """A call that failed; the message is ready to be recorded (and redacted)."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _Transport(xmlrpc.client.Transport):
    """HTTP with a timeout, or HTTP over a unix socket when `unix_path` is given."""

    def __init__(
        self, timeout: float, headers: Iterable[tuple[str, str]], unix_path: str | None = None
    ) -> None:
        super().__init__(headers=list(headers))
        self._timeout = timeout
        self._unix_path = unix_path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        if self._unix_path is None:
            connection = super().make_connection(host)
            connection.timeout = self._timeout
            return connection
        if self._connection[1] is not None and host == self._connection[0]:
            return self._connection[1]
        unix = _UnixHTTPConnection(self._unix_path, self._timeout)
        self._connection = host, unix
        return unix


class _SafeTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float, headers: Iterable[tuple[str, str]]) -> None:
        super().__init__(headers=list(headers))
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


class SupervisorActuator:
    """Runs a `SupervisorSpec`; the password reference is resolved when it is created."""

    can_check = False
    in_flight = InFlight.REQUEST

    def __init__(self, spec: SupervisorSpec, *, env: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        credentials = {}
        if spec.username is not None and spec.password is not None:
            credentials = {"username": spec.username, "password": spec.password}
        resolved, secrets = resolve_references(credentials, what="supervisor", env=env)
        self._headers: list[tuple[str, str]] = []
        values = resolved.as_dict()
        if values:
            token = base64.b64encode(f"{values['username']}:{values['password']}".encode())
            self._headers.append(("Authorization", "Basic " + token.decode("ascii")))
            secrets = secrets | Secrets([values["password"], token.decode("ascii")])
        self._secrets = secrets

    @property
    def idempotent(self) -> bool:
        return self.spec.idempotent

    def __repr__(self) -> str:
        auth = ", basic auth" if self._headers else ""
        return f"SupervisorActuator(action={self.spec.action!r}, {self.spec.url}{auth})"

    # ------------------------------------------------------------------ XML-RPC

    def _proxy(self, timeout: float) -> xmlrpc.client.ServerProxy:
        transport: xmlrpc.client.Transport
        if self.spec.url.startswith("unix://"):
            transport = _Transport(timeout, self._headers, self.spec.url.removeprefix("unix://"))
            return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport)
        if self.spec.url.startswith("https://"):
            transport = _SafeTransport(timeout, self._headers)
        else:
            transport = _Transport(timeout, self._headers)
        return xmlrpc.client.ServerProxy(self.spec.url, transport=transport)

    def _call(self, deadline: float, method: str, *args: Any) -> Any:
        """`supervisor.<method>(*args)`; faults are raised as they are, everything else
        becomes a `SupervisorError`."""
        remaining = deadline - time.monotonic()
        what = f"{method}({', '.join(repr(a) for a in args)})"
        if remaining <= 0:
            raise SupervisorError(f"supervisor: no time left for {what}")
        try:
            with self._proxy(remaining) as proxy:
                return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault:
            raise
        except xmlrpc.client.ProtocolError as error:
            if error.errcode == 401:
                raise SupervisorError(
                    f"supervisor: {self.spec.url} refused the credentials (401)"
                ) from None
            raise SupervisorError(
                f"supervisor: {self.spec.url} answered HTTP {error.errcode} {error.errmsg}"
            ) from None
        except TimeoutError:
            raise SupervisorError(
                f"supervisor: {what} timed out after {format_seconds(remaining)}"
            ) from None
        except ConnectionRefusedError:
            raise SupervisorError(
                f"supervisor: cannot connect to {self.spec.url}: connection refused"
            ) from None
        except OSError as error:
            raise SupervisorError(
                f"supervisor: cannot connect to {self.spec.url}: "
                f"{error.strerror or type(error).__name__}"
            ) from None
        except (http.client.HTTPException, xmlrpc.client.Error) as error:
            raise SupervisorError(
                f"supervisor: {self.spec.url}: {type(error).__name__}: {error}"
            ) from None

    def _fault(self, fault: xmlrpc.client.Fault, program: str, doing: str) -> SupervisorError:
        if fault.faultCode == BAD_NAME:
            return SupervisorError(f"supervisor: no such program {program!r}")
        if fault.faultCode == NO_FILE:
            return SupervisorError(f"supervisor: {program!r}: its command was not found")
        if fault.faultCode == NOT_EXECUTABLE:
            return SupervisorError(f"supervisor: {program!r}: its command is not executable")
        if fault.faultCode == SPAWN_ERROR:
            return SupervisorError(f"supervisor: {program!r} could not be spawned (SPAWN_ERROR)")
        if fault.faultCode == ABNORMAL_TERMINATION:
            return SupervisorError(
                f"supervisor: {program!r} exited while {doing} (ABNORMAL_TERMINATION)"
            )
        return SupervisorError(f"supervisor: {doing} {program!r} failed: {fault.faultString}")

    def _info(self, deadline: float, program: str) -> list[dict[str, Any]]:
        if program.endswith(":*"):
            group = program.removesuffix(":*")
            every = self._call(deadline, "getAllProcessInfo")
            found = [info for info in every if info.get("group") == group]
            if not found:
                raise SupervisorError(f"supervisor: no such group {group!r}")
            return found
        try:
            return [self._call(deadline, "getProcessInfo", program)]
        except xmlrpc.client.Fault as fault:
            raise self._fault(fault, program, "reading") from None

    def _group_results(self, results: Any, program: str, doing: str) -> None:
        if not isinstance(results, list):
            return
        failed = [
            f"{r.get('group')}:{r.get('name')}: {r.get('description')}"
            for r in results
            if isinstance(r, dict) and r.get("status") != SUCCESS
        ]
        if failed:
            raise SupervisorError(f"supervisor: {doing} {program!r} failed: {'; '.join(failed)}")

    def _stop(self, deadline: float, program: str) -> None:
        fault = self._control(deadline, program, "stopProcess", "stopping", NOT_RUNNING)
        if fault is not None:
            raise self._fault(fault, program, "stopping")

    def _start(self, deadline: float, program: str) -> None:
        fault = self._control(deadline, program, "startProcess", "starting", ALREADY_STARTED)
        if fault is not None:
            error = self._fault(fault, program, "starting")
            raise SupervisorError(f"{error}{self._spawn_error(deadline, program)}")

    def _control(
        self, deadline: float, program: str, method: str, doing: str, already: int
    ) -> xmlrpc.client.Fault | None:
        """Call `method` (waiting for the program); return its fault unless that says the
        program is `already` there (stopping a stopped program is done)."""
        try:
            self._group_results(self._call(deadline, method, program, True), program, doing)
        except xmlrpc.client.Fault as fault:
            return None if fault.faultCode == already else fault
        return None

    def _spawn_error(self, deadline: float, program: str) -> str:
        try:
            infos = self._info(deadline, program)
        except SupervisorError:
            return ""
        notes = [
            f"{info.get('name')} is {info.get('statename')}"
            + (f" ({info['spawnerr']})" if info.get("spawnerr") else "")
            for info in infos
        ]
        return ": " + "; ".join(notes) if notes else ""

    # ------------------------------------------------------------------ actuator

    def run(self, command: StartAction | StartUndo) -> Outcome:
        operation = command.action.rsplit(".", 1)[-1]
        if operation not in ("restart", "start", "stop"):
            return Outcome(
                False,
                error=f"supervisor: cannot {command.action!r}; it restarts, starts or stops",
            )
        try:
            program = render_text(self.spec.program, command_context(command), where="program")
        except TemplateError as error:
            return Outcome(False, error=self._secrets.redact(f"refused: {error}"))
        if not _PROGRAM.match(program):
            return Outcome(
                False, error=f"refused: {program!r} is not a program name (name or group:name)"
            )
        timeout = effective_timeout(self.spec.timeout, command.timeout_s)
        deadline = time.monotonic() + timeout
        run = current_run()
        if run is not None:
            run.note(started=time.time(), timeout=timeout, doing=f"reading {program}'s state")
        try:
            before = {info["name"]: info for info in self._info(deadline, program)}
            if operation in ("stop", "restart"):
                if run is not None:
                    run.note(doing=f"stopping {program} (supervisord)")
                self._stop(deadline, program)
            if operation in ("start", "restart"):
                if run is not None:
                    run.note(doing=f"starting {program} (supervisord)")
                self._start(deadline, program)
            after = self._info(deadline, program)
        except SupervisorError as error:
            return Outcome(False, error=self._secrets.redact(str(error)))
        lines = []
        wrong = []
        for info in after:
            state = str(info.get("statename"))
            name = f"{info.get('group')}:{info.get('name')}"
            old = before.get(info["name"], {})
            pid = f"pid {old.get('pid') or '-'} → {info.get('pid') or '-'}"
            lines.append(f"{name}: {old.get('statename', '?')} → {state}, {pid}")
            if operation == "stop" and state not in STOPPED_STATES:
                wrong.append(f"{name} is {state} after stop (expected it stopped)")
            if operation != "stop" and state != "RUNNING":
                spawnerr = f" ({info['spawnerr']})" if info.get("spawnerr") else ""
                wrong.append(f"{name} is {state}{spawnerr} after {operation} (expected RUNNING)")
        output = f"supervisor {operation} {program}\n" + "\n".join(lines)
        if wrong:
            return Outcome(
                False, output=output, error=self._secrets.redact("supervisor: " + "; ".join(wrong))
            )
        return Outcome(True, output=output)

    def check(self, command_id: str) -> Outcome | None:
        raise OutcomeUnknown("supervisord cannot tell whether an earlier command took effect")


def from_spec(spec: Mapping[str, Any]) -> SupervisorActuator:
    """The `onduty.actuators` entry point for kind `supervisor`."""
    return SupervisorActuator(SupervisorSpec.model_validate(dict(spec)))
