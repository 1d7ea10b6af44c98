"""The shell actuator: run an allow-listed program, never a shell.

Safe by construction:

- every element of `argv` renders to exactly one argument (see `onduty.act.templates`) and the
  list goes to `subprocess` with `shell=False`, so a target like `x; rm -rf /` or `$(reboot)`
  or `--force` is one inert argument;
- the rendered `argv[0]` must be one of the spec's `allow` paths, compared as written;
- the program starts with a clean environment (`PATH`, `LANG` and the spec's variables only),
  no standard input, in a session (and process group) of its own;
- on timeout the whole process group is sent SIGTERM, then SIGKILL after a grace period, so
  nothing it started in that group outlives it;
- its output (stdout and stderr together) is kept up to `max_output` bytes (the beginning and
  the end), and every resolved secret is replaced with `[redacted]` in output and errors.

Once the program has exited, its output is read for at most half a second more: a process it
left running in the background (a daemon that kept its stdout) is neither waited for nor
killed.

`run` blocks for up to the timeout plus the kill grace: call it from a worker thread.

Crash semantics (`in_flight = "process"`): the program outlives onduty when onduty dies, so it
inherits the run's lock (`onduty.act.runs`) — one extra open file descriptor — and its pid is
recorded beside it. A restarted onduty waits for the lock (the program, or the last process
holding it, has exited) before it runs `check_argv`; past the timeout it stops the program's
process group and records the outcome as unknown. `check_argv` runs never hold the lock.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from onduty.act.base import Outcome
from onduty.act.runs import InFlight, RunHandle, current_run
from onduty.act.specs import (
    OutcomeUnknown,
    ShellSpec,
    effective_timeout,
    format_seconds,
)
from onduty.act.templates import TemplateError, check_context, command_context, render_argv
from onduty.commands import StartAction, StartUndo
from onduty.secrets import Secrets, resolve_references

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
KILL_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL for a process group that outlived its timeout."""
DRAIN = 0.5
"""Seconds to keep reading after the program exited while something it started still holds
its output open."""
_ERROR_LINES = 5
_ERROR_CHARS = 500


@dataclass(frozen=True)
class Completed:
    """What became of one program run."""

    returncode: int | None
    """The exit status; negative: killed by that signal; None: it never started."""
    output: str
    timed_out: bool = False
    start_error: str = ""


def last_lines(text: str, lines: int = _ERROR_LINES, chars: int = _ERROR_CHARS) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    tail = "\n".join(kept)
    return tail if len(tail) <= chars else "…" + tail[-chars:]


class _Capture:
    """Keeps the first and the last bytes of a stream, at most `limit` in all."""

    _MARKER_ROOM = 64

    def __init__(self, limit: int) -> None:
        room = max(limit - self._MARKER_ROOM, 2)
        self.limit = limit
        self.head_limit = room // 2
        self.tail_limit = room - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if len(self.head) < self.head_limit:
            take = self.head_limit - len(self.head)
            self.head += chunk[:take]
            chunk = chunk[take:]
        if chunk:
            self.tail += chunk
            excess = len(self.tail) - self.tail_limit
            if excess > 0 and self.total > self.limit:
                del self.tail[:excess]

    def text(self, secrets: Secrets) -> str:
        data_len = len(self.head) + len(self.tail)
        if self.total == data_len and data_len <= self.limit:
            return _clamp(
                secrets.redact((self.head + self.tail).decode(errors="replace")), self.limit
            )
        head, tail = bytes(self.head), bytes(self.tail)
        # A secret cut in two by the truncation would escape redaction: drop what could be
        # part of one at both edges of the gap.
        edge = max(secrets.longest - 1, 0)
        if edge:
            head, tail = head[: max(len(head) - edge, 0)], tail[edge:]
        omitted = self.total - len(head) - len(tail)
        head_text = secrets.redact(head.decode(errors="replace"))
        tail_text = secrets.redact(tail.decode(errors="replace"))
        marker = f"\n[… {omitted} bytes omitted …]\n"
        room = self.limit - len(marker.encode()) - len(tail_text.encode())
        return _clamp(head_text, max(room, 0)) + marker + tail_text


def _clamp(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies, which are only waiting to be
    reaped, do not count)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _wait_group_gone(process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        process.poll()
        if not _group_alive(process.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def kill_group(process: subprocess.Popen[bytes], grace: float = KILL_GRACE) -> None:
    """SIGTERM to the whole process group, SIGKILL after `grace` to whatever is left; returns
    once the group is gone (or after a last bounded wait) and the leader is reaped."""
    pgid = process.pid  # start_new_session: the leader's pid is the group's id
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        process.wait()
        return
    if not _wait_group_gone(process, grace):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        _wait_group_gone(process, 2.0)
    process.wait()


def run_program(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    timeout: float,
    max_output: int,
    secrets: Secrets,
    kill_grace: float = KILL_GRACE,
    hold: RunHandle | None = None,
) -> Completed:
    """Run `argv` without a shell, in a new session, with exactly `env`; collect its output
    (bounded) until it exits or `timeout` seconds pass (then kill its process group).

    With `hold`, the program inherits that run lock and its pid and deadline are noted in it."""
    if hold is not None:
        hold.note(started=time.time(), timeout=timeout + kill_grace + DRAIN)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            shell=False,
            start_new_session=True,
            close_fds=True,
            pass_fds=() if hold is None else (hold.fd,),
        )
    except OSError as error:
        reason = error.strerror or type(error).__name__
        if error.filename is not None and error.filename != argv[0]:
            reason += f" ({error.filename})"  # e.g. the working directory
        return Completed(None, "", start_error=secrets.redact(f"cannot run {argv[0]}: {reason}"))
    if hold is not None:
        hold.note(pid=process.pid, pgid=process.pid)  # a session leader: its pid is the group's
    assert process.stdout is not None
    capture = _Capture(max_output)
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        fd = process.stdout.fileno()
        os.set_blocking(fd, False)
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            exited_at: float | None = None
            eof = False
            while not eof:
                now = time.monotonic()
                if now >= deadline:
                    timed_out = True
                    break
                if exited_at is None and process.poll() is not None:
                    exited_at = now
                if exited_at is not None and now - exited_at >= DRAIN:
                    break  # something the program left behind holds the pipe open
                for _ in selector.select(min(deadline - now, 0.1)):
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        eof = True
                        break
                    capture.add(chunk)
        if not timed_out:
            try:
                process.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                timed_out = True  # it closed its output but kept running
        if timed_out:
            kill_group(process, kill_grace)
    finally:
        if process.returncode is None:
            kill_group(process, kill_grace)
        process.stdout.close()
    return Completed(process.returncode, capture.text(secrets), timed_out=timed_out)


def describe_failure(result: Completed, timeout: float) -> str:
    """`exit 3: <last lines>`, `killed by SIGSEGV: ...`, `timed out after 30s: ...`."""
    tail = last_lines(result.output)
    if result.start_error:
        return result.start_error
    if result.timed_out:
        head = f"timed out after {format_seconds(timeout)} (process group killed)"
    elif result.returncode is not None and result.returncode < 0:
        try:
            name = signal.Signals(-result.returncode).name
        except ValueError:
            name = f"signal {-result.returncode}"
        head = f"killed by {name}"
    else:
        head = f"exit {result.returncode}"
    return f"{head}: {tail}" if tail else head


class ShellActuator:
    """Runs a `ShellSpec`. Secrets in its `env` are resolved when it is created (a missing
    one raises `SecretError` then, not at the first action)."""

    in_flight = InFlight.PROCESS

    def __init__(
        self,
        spec: ShellSpec,
        *,
        env: Mapping[str, str] | None = None,
        kill_grace: float = KILL_GRACE,
    ) -> None:
        self.spec = spec
        resolved, self._secrets = resolve_references(spec.env, what="env", env=env)
        self._environment = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", **resolved.as_dict()}
        self._kill_grace = kill_grace

    @property
    def idempotent(self) -> bool:
        return self.spec.idempotent

    @property
    def can_check(self) -> bool:
        return self.spec.check_argv is not None

    def __repr__(self) -> str:
        return (
            f"ShellActuator(action={self.spec.action!r}, program={self.spec.argv[0]!r}, "
            f"env={sorted(self.spec.env)!r})"
        )

    def _refused(self, reason: str) -> Outcome:
        return Outcome(False, error=self._secrets.redact(f"refused: {reason}"))

    def _render(self, templates: list[str], context: dict[str, Any], where: str) -> list[str]:
        argv = render_argv(templates, context, where=where)
        if argv[0] not in self.spec.allow:
            raise TemplateError(
                f"{argv[0]!r} is not an allowed program ({', '.join(self.spec.allow)})"
            )
        return argv

    def _execute(self, argv: list[str], timeout: float, *, hold: bool = False) -> Completed:
        return run_program(
            argv,
            env=self._environment,
            cwd=self.spec.cwd,
            timeout=timeout,
            max_output=self.spec.max_output,
            secrets=self._secrets,
            kill_grace=self._kill_grace,
            hold=current_run() if hold else None,
        )

    def run(self, command: StartAction | StartUndo) -> Outcome:
        try:
            argv = self._render(self.spec.argv, command_context(command), "argv")
        except TemplateError as error:
            return self._refused(str(error))
        timeout = effective_timeout(self.spec.timeout, command.timeout_s)
        result = self._execute(argv, timeout, hold=True)
        if result.returncode == 0 and not result.timed_out:
            return Outcome(True, output=result.output)
        return Outcome(
            False,
            output=result.output,
            error=self._secrets.redact(describe_failure(result, timeout)),
        )

    def check(self, command_id: str) -> Outcome | None:
        """Run `check_argv`: exit 0 → it took effect, 1 → it never ran (None); anything else
        raises `OutcomeUnknown`."""
        if self.spec.check_argv is None:
            raise OutcomeUnknown("this shell actuator has no check_argv to check outcomes with")
        try:
            argv = self._render(self.spec.check_argv, check_context(command_id), "check_argv")
        except TemplateError as error:
            raise OutcomeUnknown(self._secrets.redact(f"check refused: {error}")) from None
        timeout = self.spec.timeout.total_seconds()
        result = self._execute(argv, timeout)
        if result.returncode == 0 and not result.timed_out:
            return Outcome(True, output=result.output)
        if result.returncode == 1 and not result.timed_out:
            return None
        raise OutcomeUnknown(self._secrets.redact("check " + describe_failure(result, timeout)))


def from_spec(spec: Mapping[str, Any]) -> ShellActuator:
    """The `onduty.actuators` entry point for kind `shell`."""
    return ShellActuator(ShellSpec.model_validate(dict(spec)))
