"""Run locks: after a crash, whether an earlier run of a command may still be in progress.

Every run of an action holds a lock named by its command id: a file in a state directory,
locked with `flock` for as long as the run lasts. The lock belongs to the open file, not to
the process that opened it, so it is held by every process that has the file open:

- onduty itself, while an actuator's `run` is on the stack — a request to another system
  (HTTP, XML-RPC) dies with onduty, and so does this hold;
- a program the run started, when the actuator lets it inherit the file (the shell actuator
  does): it keeps the lock held while it lives, even after onduty died, and the lock is
  released when it exits (the kernel closes its files).

The file also records what the restart needs to wait on the run: when it began, how long it
may take (its timeout), the program's pid (with its start time, so a reused pid is not
mistaken for it) and what it was doing. A run that finishes normally removes its file, so a
file that remains belongs to a run that onduty did not see to the end.

After a restart, `wait` tells what became of such a run, without blocking more than its
timeout: no file (it never reached its actuator, or it finished), over (the lock is free, or
the program exited and only something it left behind still holds the lock), or still running
when its timeout had passed (its process group is then stopped, as a live onduty would have
done, and its outcome is unknown). An actuator whose work is a request to another system says
so (`in_flight = "request"`): its lock died with onduty, but the other side may still be
applying the request, so the restart waits until the request's timeout has passed since it
began before it asks whether it took effect.

`wait` sleeps on the calling thread (a worker's, never the core's) and returns early, as
cancelled, when `close` is called (shutdown).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import os
import re
import signal
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

SUFFIX = ".lock"
POLL_S = 0.05
"""How often a waiting restart looks at the lock again."""
KILL_GRACE_S = 2.0
"""Seconds between SIGTERM and SIGKILL for an earlier run that outlived its timeout."""
DEFAULT_TIMEOUT_S = 30.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")


class InFlight(StrEnum):
    """What of a run outlives onduty's process (an actuator's `in_flight` attribute)."""

    PROCESS = "process"
    """Processes the run started, which inherit its lock: a free lock means the run is over."""
    REQUEST = "request"
    """A request to another system: it dies with onduty, but the other side may still apply it
    until the request's timeout has passed."""


def in_flight_of(actuator: object) -> InFlight:
    """An actuator's crash semantics; `request` unless it says otherwise."""
    value = getattr(actuator, "in_flight", InFlight.REQUEST)
    try:
        return InFlight(value)
    except ValueError:
        return InFlight.REQUEST


class EarlierState(StrEnum):
    NONE = "none"
    """No run of the command left a lock: it never reached its actuator, or it finished."""
    OVER = "over"
    """A run was cut off by the crash and is over now."""
    RUNNING = "running"
    """A run was still in progress when its timeout had passed."""
    CANCELLED = "cancelled"
    """onduty is shutting down; nothing is known yet."""


@dataclass(frozen=True)
class Earlier:
    """What became of an earlier run of a command."""

    state: EarlierState
    detail: str = ""
    record: dict[str, Any] = field(default_factory=dict)


_current: contextvars.ContextVar[RunHandle | None] = contextvars.ContextVar(
    "onduty_run", default=None
)


def current_run() -> RunHandle | None:
    """The run lock of the action the calling thread is running, if the executor holds one.

    An actuator that starts processes passes `handle.fd` to them (`pass_fds`) so they hold the
    lock while they live, and records their pid with `handle.note(pid=..., pgid=...)`."""
    return _current.get()


class RunHandle:
    """The held lock of one run; its record is rewritten by `note`."""

    def __init__(self, fd: int, record: dict[str, Any]) -> None:
        self.fd = fd
        self._record = record
        self._lock = threading.Lock()
        self._write()

    @property
    def record(self) -> dict[str, Any]:
        return dict(self._record)

    def note(self, **fields: Any) -> None:
        """Add to the run's record: `started` (wall-clock seconds), `timeout` (seconds after
        `started` by which the run is over at the latest), `pid`/`pgid` of a program it
        started, `doing` (a short text)."""
        with self._lock:
            self._record.update(fields)
            if "pid" in fields and "pid_start" not in fields:
                self._record["pid_start"] = process_start(int(fields["pid"]))
            self._write()

    def _write(self) -> None:
        data = orjson.dumps(self._record)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot, from /proc), or None when unknown."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def _stat(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_alive(pid: int, start: int | None) -> bool:
    """Whether the process `pid` that started at `start` still runs (a zombie does not)."""
    fields = _stat(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc: the pid alone
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in (b"Z", b"X"):
        return False
    return start is None or (len(fields) > 19 and int(fields[19]) == start)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class RunLocks:
    """The run locks of one onduty, in `directory` (created, private to the user)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        poll_s: float = POLL_S,
        kill_grace_s: float = KILL_GRACE_S,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._poll_s = poll_s
        self._kill_grace_s = kill_grace_s
        self._closed = threading.Event()

    def __repr__(self) -> str:
        return f"RunLocks({str(self.directory)!r})"

    def path(self, command_id: str) -> Path:
        name = command_id
        if not _SAFE_NAME.match(name):
            name = "h-" + hashlib.sha256(command_id.encode()).hexdigest()[:40]
        return self.directory / (name + SUFFIX)

    def close(self) -> None:
        """Cancel every `wait` in progress (shutdown)."""
        self._closed.set()

    # ------------------------------------------------------------------ a run

    @contextlib.contextmanager
    def hold(self, command_id: str, *, timeout_s: float) -> Iterator[RunHandle]:
        """Hold the lock of `command_id` while the body runs; the file is removed afterwards.
        Raises `OSError` when the lock cannot be taken."""
        path = self.path(command_id)
        # A file left by an earlier run (settled since, or held by a process it left behind)
        # is replaced: this run's lock is a file of its own.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if not _try_lock(fd):  # a new file nobody else has opened
                raise OSError(f"cannot lock {path}")
            handle = RunHandle(
                fd,
                {
                    "command_id": command_id,
                    "onduty_pid": os.getpid(),
                    "started": time.time(),
                    "timeout": timeout_s if timeout_s > 0 else DEFAULT_TIMEOUT_S,
                },
            )
            token = _current.set(handle)
            try:
                yield handle
            finally:
                _current.reset(token)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ after a restart

    def held(self, command_id: str) -> bool:
        """Whether a process holds the lock of `command_id` now (a look, no wait)."""
        try:
            fd = os.open(self.path(command_id), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            return not _try_lock(fd)
        finally:
            os.close(fd)

    def record(self, command_id: str) -> dict[str, Any]:
        """What the earlier run of `command_id` recorded (empty when there is no lock file)."""
        try:
            fd = os.open(self.path(command_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        try:
            return self._read(fd)
        finally:
            os.close(fd)

    def wait(
        self, command_id: str, *, in_flight: InFlight, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> Earlier:
        """Wait (bounded by the run's timeout) until an earlier run of `command_id` is over.

        `timeout_s` bounds the wait when the run's record does not say how long it may take."""
        path = self.path(command_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return Earlier(EarlierState.NONE)
        try:
            record = self._read(fd)
            now = time.time()
            started = _number(record.get("started")) or now
            bound = _number(record.get("timeout")) or timeout_s
            # Never past `now + bound`, even when the clock moved back since the run began.
            deadline = time.monotonic() + min(max(started + bound - now, 0.0), bound)
            leader = _number(record.get("pid"))
            leader_start = record.get("pid_start")
            while True:
                if _try_lock(fd):
                    if in_flight is InFlight.PROCESS:
                        return Earlier(EarlierState.OVER, "its program had exited", record)
                    # The request died with onduty; the other side may still be applying it.
                    if self._closed.wait(max(deadline - time.monotonic(), 0.0)):
                        return Earlier(EarlierState.CANCELLED, record=record)
                    return Earlier(EarlierState.OVER, "its request's timeout has passed", record)
                if leader is not None and not process_alive(int(leader), _int(leader_start)):
                    return Earlier(
                        EarlierState.OVER,
                        "its program had exited (processes it left behind still hold its lock)",
                        record,
                    )
                if time.monotonic() >= deadline:
                    return self._overran(record, bound)
                if self._closed.wait(self._poll_s):
                    return Earlier(EarlierState.CANCELLED, record=record)
        finally:
            os.close(fd)

    def _overran(self, record: dict[str, Any], bound: float) -> Earlier:
        detail = f"an earlier run was still in progress {bound:g}s after it began (its timeout)"
        pid, pgid = _number(record.get("pid")), _number(record.get("pgid"))
        if (
            pid is not None
            and pgid is not None
            and process_alive(int(pid), _int(record.get("pid_start")))
        ):
            self._kill_group(int(pid), int(pgid), _int(record.get("pid_start")))
            detail += "; its process group was stopped"
        return Earlier(EarlierState.RUNNING, detail, record)

    def _kill_group(self, pid: int, pgid: int, start: int | None) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self._kill_grace_s
        while time.monotonic() < deadline and process_alive(pid, start):
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            data = os.pread(fd, 64 * 1024, 0)
            record = orjson.loads(data) if data else {}
        except (OSError, orjson.JSONDecodeError):
            return {}
        return record if isinstance(record, dict) else {}

    def forget(self, command_id: str) -> None:
        """Remove the lock file of a settled command."""
        with contextlib.suppress(FileNotFoundError):
            self.path(command_id).unlink()

    def sweep(self, keep: Collection[str]) -> int:
        """Remove the lock files of every command but `keep` (those still in doubt); returns how
        many went. Their outcomes are recorded: nothing will wait on them again."""
        kept = {self.path(command_id).name for command_id in keep}
        removed = 0
        for path in self.directory.glob("*" + SUFFIX):
            if path.name not in kept:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
