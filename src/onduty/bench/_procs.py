"""The processes of the HTTP benchmarks: which core each runs on, how much memory it holds,
and how much CPU the rest of the machine took meanwhile.

On a machine with two cores or more, the server under test runs on one (SERVER_CPUS) and the
load generator on another (LOAD_CPUS), so that neither takes the other's CPU and a peer
measured the same way gets the same share.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

# The checkout's scripts/ (installers of the peers' tools), when running from a checkout; an
# installed onduty has none and uses what is already on PATH.
SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


def _cpus() -> tuple[set[int] | None, set[int] | None]:
    """One core for the server, another for the load generator, when there are two or more."""
    try:
        available = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(available) < 2:
        return None, None
    return {available[0]}, {available[1]}


SERVER_CPUS, LOAD_CPUS = _cpus()


def pinned(command: list[str], cpus: set[int] | None) -> list[str]:
    """`command`, run by taskset on `cpus` (every thread it starts stays there too)."""
    if cpus is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", ",".join(map(str, sorted(cpus))), *command]


def where(cpus: set[int] | None) -> str:
    return f"on core {min(cpus)}" if cpus else "unpinned"


@contextlib.contextmanager
def pinned_thread(cpus: set[int] | None) -> Iterator[None]:
    """Keep the calling thread (an in-process generator's event loop) on `cpus` meanwhile."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)  # 0: this thread only
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# The Lua script wrk runs. Arguments: bodies file (one body per line), ingest path, expected
# status, deadline (CLOCK_MONOTONIC seconds, the clock of Python's time.monotonic), threads.


class CpuWatch:
    """How much CPU the rest of the machine used during a run, in cores.

    Busy time of the whole machine (/proc/stat) minus that of the processes taking part: the
    watched ones (e.g. the server), this one, and the children it reaped meanwhile (wrk). On a
    shared machine, anything left is load from elsewhere that the figures competed with.
    """

    def __init__(self, *pids: int) -> None:
        self._pids = pids
        self._tick = os.sysconf("SC_CLK_TCK")
        self._start = self._sample()
        self.others = math.nan  # cores, once the block has ended

    def __enter__(self) -> CpuWatch:
        self._start = self._sample()
        return self

    def __exit__(self, *_: object) -> None:
        end = self._sample()
        wall, busy, ours = (b - a for a, b in zip(self._start, end, strict=True))
        self.others = max(0.0, busy - ours) / wall if wall > 0 else math.nan

    def _sample(self) -> tuple[float, float, float]:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            return time.monotonic(), 0.0, 0.0
        # user + nice + system + steal; interrupts are left out (they serve our own sockets)
        busy = (fields[0] + fields[1] + fields[2] + fields[7]) / self._tick
        ours = 0.0
        for pid in self._pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                ours += (int(stat[11]) + int(stat[12])) / self._tick  # utime, stime
            except (OSError, ValueError, IndexError):
                pass
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            ours += usage.ru_utime + usage.ru_stime
        return time.monotonic(), busy, ours


def rss(pid: int) -> int:
    """The resident memory of process `pid`, in bytes (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """SIGTERM the process we started, SIGKILL when it does not exit in time; its exit code
    (None when it had to be killed)."""
    if process.poll() is not None:
        return process.returncode
    process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        return None
