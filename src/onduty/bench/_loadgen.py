"""Load generators for the HTTP benchmarks, on loopback only, bounded in time.

- `burst`: closed loop, as fast as `connections` keep-alive connections go, POSTing pre-built
  bodies round-robin. It drives `wrk` (a C load generator, with the Lua script below) when it
  is installed or `scripts/ensure_wrk.sh` can install it, else several processes of the asyncio
  client below. Either way every request is accounted for: at the deadline the generator stops
  sending bodies and waits for the answers to the ones in flight (wrk keeps its connections
  busy with empty POSTs to a path that answers 404 until its own duration ends), so
  "acknowledged" is exact.
- `open_loop`: requests at a fixed rate, each timed from the moment it was *scheduled* to be
  sent, not from when it was sent: a stall of the server (or of the generator) shows in every
  request scheduled during it, so coordinated omission cannot hide it.

The Python side uses a minimal HTTP/1.1 keep-alive client on asyncio streams (uvloop when
installed), not httpx: on two cores shared with the server, httpx's per-request cost (its
connection pool scans its queue and re-detects the async library on every request) saturated
the generator below 500 requests/s, and the latencies measured were the generator's own.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# The checkout's scripts/ (installers of the peers' tools), when running from a checkout; an
# installed onduty has none and uses what is already on PATH.
SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"
# Answered 404 by both onduty and Alertmanager. POST, not GET: Alertmanager answers 503 to GETs
# beyond its --web.get-concurrency.
IDLE_PATH = "/bench-idle-not-a-route"
RESULT_MARK = "BENCH-RESULT "
T = TypeVar("T")

# The Lua script wrk runs. Arguments: bodies file (one body per line), ingest path, expected
# status, deadline (CLOCK_MONOTONIC seconds, the clock of Python's time.monotonic), threads.
WRK_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[2], tonumber(args[5])
  expected, deadline = tonumber(args[3]), tonumber(args[4])
  bodies = {}
  local file = assert(io.open(args[1], "rb"))
  for line in file:lines() do
    bodies[#bodies + 1] = wrk.format("POST", path, {["Content-Type"] = "application/json"}, line)
  end
  file:close()
  idle = wrk.format("POST", "@IDLE_PATH@", nil, "")
  position = (id * math.floor(#bodies / nthreads)) % #bodies
  sent, ok, idle_sent, idle_answered, first, last = 0, 0, 0, 0, 0, 0
  other = {}
  -- wrk calls request() once on its first thread, before any connection, to check the script
  checking = id == 0
end

function request()
  if checking then
    checking = false
    return idle
  end
  local t = now()
  if t < deadline then
    if first == 0 then first = t end
    sent = sent + 1
    position = position % #bodies + 1
    return bodies[position]
  end
  idle_sent = idle_sent + 1
  return idle
end

function response(status, headers, body)
  if status == expected then
    ok = ok + 1
    last = now()
  elseif status == 404 then
    idle_answered = idle_answered + 1
  else
    other[status] = (other[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local s = {sent = 0, ok = 0, idle_sent = 0, idle_answered = 0, first = math.huge, last = 0}
  local statuses = {}
  for _, thread in ipairs(threads) do
    for _, key in ipairs({"sent", "ok", "idle_sent", "idle_answered"}) do
      s[key] = s[key] + thread:get(key)
    end
    local first = thread:get("first")
    if first > 0 and first < s.first then s.first = first end
    local last = thread:get("last")
    if last > s.last then s.last = last end
    for status, count in pairs(thread:get("other")) do
      statuses[#statuses + 1] = string.format('"%d": %d', status, count)
    end
  end
  local e = summary.errors
  io.write(string.format(
    '%s{"sent": %d, "ok": %d, "idle_sent": %d, "idle_answered": %d, "first": %.6f, ' ..
    '"last": %.6f, "errors": %d, "timeouts": %d, "other": [{%s}]}\n',
    "@RESULT_MARK@", s.sent, s.ok, s.idle_sent, s.idle_answered,
    s.first == math.huge and 0 or s.first, s.last,
    e.connect + e.read + e.write, e.timeout, table.concat(statuses, "}, {")))
end
"""


@dataclass
class Burst:
    """What a closed-loop run did: requests sent, answered as expected, and everything else."""

    generator: str
    connections: int
    sent: int
    ok: int
    seconds: float  # first request sent to last expected answer received
    statuses: Counter[int] = field(default_factory=Counter)  # unexpected statuses
    errors: int = 0  # connect/read/write errors
    timeouts: int = 0

    @property
    def unexpected(self) -> int:
        return sum(self.statuses.values())

    @property
    def unanswered(self) -> int:
        return self.sent - self.ok - self.unexpected

    def requests_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Latencies:
    """An open-loop run: one latency per request answered as expected, in seconds."""

    scheduled: int
    rate: float
    seconds: float
    latencies: list[float]
    statuses: Counter[int] = field(default_factory=Counter)  # unexpected statuses
    errors: int = 0
    max_send_lag: float = 0.0  # how late the generator itself sent its most delayed request

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def percentile(self, fraction: float) -> float:
        """Nearest-rank percentile (0 < fraction <= 1) of the latencies."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]

    def max(self) -> float:
        return max(self.latencies) if self.latencies else math.nan


# --------------------------------------------------------------------------- closed loop


def wrk_available() -> bool:
    """wrk on PATH, installing it with scripts/ensure_wrk.sh when it is missing."""
    if shutil.which("wrk"):
        return True
    script = SCRIPTS / "ensure_wrk.sh"
    if script.exists():
        subprocess.run(
            ["bash", str(script)],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
        )
    return shutil.which("wrk") is not None


def burst(
    url: str,
    path: str,
    bodies: Sequence[bytes],
    *,
    ok_status: int,
    connections: int,
    seconds: float,
    folder: Path,
    prefer_wrk: bool = True,
) -> Burst:
    """POST `bodies` round-robin to `url + path` for `seconds`, with `connections` at once."""
    if prefer_wrk and wrk_available():
        try:
            return wrk_burst(
                url,
                path,
                bodies,
                ok_status=ok_status,
                connections=connections,
                seconds=seconds,
                folder=folder,
            )
        except RuntimeError:
            pass  # e.g. a wrk without LuaJIT's FFI: use the Python generator
    return python_burst(
        url,
        path,
        bodies,
        ok_status=ok_status,
        connections=connections,
        seconds=seconds,
        folder=folder,
    )


def _bodies_file(path: Path, bodies: Sequence[bytes]) -> Path:
    """Write `bodies` one per line to `path` (creating its folder) for a generator to read."""
    if any(b"\n" in body for body in bodies):
        raise ValueError("bodies are passed one per line: a body may not contain a newline")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(bodies) + b"\n")
    return path


def wrk_burst(
    url: str,
    path: str,
    bodies: Sequence[bytes],
    *,
    ok_status: int,
    connections: int,
    seconds: float,
    folder: Path,
    threads: int = 1,
    tail: float = 1.5,
) -> Burst:
    bodies_file = _bodies_file(folder / "wrk-bodies.ndjson", bodies)
    script = folder / "wrk-bench.lua"
    script.write_text(
        WRK_SCRIPT.replace("@IDLE_PATH@", IDLE_PATH).replace("@RESULT_MARK@", RESULT_MARK)
    )
    deadline = time.monotonic() + 0.1 + seconds
    duration = math.ceil(seconds + 0.1 + tail)
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
        "-s", str(script), url,
        "--", str(bodies_file), path, str(ok_status), f"{deadline:.6f}", str(threads),
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 30, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(RESULT_MARK))
    statuses: Counter[int] = Counter()
    for entry in result["other"]:
        for status, count in entry.items():
            statuses[int(status)] += int(count)
    return Burst(
        generator=f"wrk ({threads} thread, Lua: pre-built bodies round-robin)",
        connections=connections,
        sent=int(result["sent"]),
        ok=int(result["ok"]),
        seconds=max(0.0, float(result["last"]) - float(result["first"])),
        statuses=statuses,
        errors=int(result["errors"]),
        timeouts=int(result["timeouts"]),
    )


def python_burst(
    url: str,
    path: str,
    bodies: Sequence[bytes],
    *,
    ok_status: int,
    connections: int,
    seconds: float,
    folder: Path,
    processes: int = 2,
) -> Burst:
    """The fallback: `processes` processes of the asyncio client, sharing the connections.

    Plain subprocesses (`python -c`), not multiprocessing: its spawn method re-imports the
    parent's main module, which for `python -m onduty bench` would run the command again.
    """
    processes = max(1, min(processes, connections))
    bodies_file = _bodies_file(folder / "python-bodies.ndjson", bodies)
    deadline = time.monotonic() + 1.5 + seconds  # interpreters need a moment to start
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    workers = [
        subprocess.Popen(
            [
                sys.executable, "-c", "from onduty.bench._loadgen import worker; worker()",
                json.dumps([url, path, str(bodies_file), i * len(bodies) // processes,
                            ok_status, share, deadline]),
            ],
            stdout=subprocess.PIPE,
        )
        for i, share in enumerate(shares)
    ]  # fmt: skip
    results: list[dict[str, Any]] = []
    for process in workers:
        output, _ = process.communicate(timeout=seconds + 60)
        if process.returncode != 0:
            raise RuntimeError(f"a load generator process exited {process.returncode}")
        results.append(json.loads(output))
    statuses: Counter[int] = Counter()
    for result in results:
        statuses.update({int(k): v for k, v in result["statuses"].items()})
    firsts = [r["first"] for r in results if r["first"]]
    lasts = [r["last"] for r in results if r["last"]]
    return Burst(
        generator=f"asyncio HTTP/1.1 client ({processes} processes)",
        connections=connections,
        sent=sum(r["sent"] for r in results),
        ok=sum(r["ok"] for r in results),
        seconds=max(lasts) - min(firsts) if firsts and lasts else 0.0,
        statuses=statuses,
        errors=sum(r["errors"] for r in results),
    )


def worker() -> None:
    """A closed-loop generator process: arguments as JSON in argv[1], result as JSON out."""
    url, path, bodies_file, start, ok_status, connections, deadline = json.loads(sys.argv[1])
    bodies = Path(bodies_file).read_bytes().splitlines()
    bodies = bodies[start:] + bodies[:start]
    result = _run(_closed_loop(url, path, bodies, ok_status, connections, deadline))
    sys.stdout.write(json.dumps(result))


async def _closed_loop(
    url: str, path: str, bodies: list[bytes], ok_status: int, connections: int, deadline: float
) -> dict[str, Any]:
    state: dict[str, Any] = {"sent": 0, "ok": 0, "errors": 0, "first": 0.0, "last": 0.0}
    statuses: Counter[int] = Counter()
    requests = [post(url, path, body) for body in bodies]
    position = 0

    async def connection() -> None:
        nonlocal position
        client = await Connection.open(url)
        try:
            while (now := time.monotonic()) < deadline:
                request = requests[position % len(requests)]
                position += 1
                state["sent"] += 1
                state["first"] = state["first"] or now
                try:
                    status = await client.send(request)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    state["errors"] += 1
                    client.close()
                    client = await Connection.open(url)
                    continue
                if status == ok_status:
                    state["ok"] += 1
                    state["last"] = time.monotonic()
                else:
                    statuses[status] += 1
        finally:
            client.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    state["statuses"] = dict(statuses)
    return state


# --------------------------------------------------------------------------- other load


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


# --------------------------------------------------------------------------- HTTP/1.1


def post(url: str, path: str, body: bytes) -> bytes:
    """A complete keep-alive POST of a JSON body, ready to write."""
    host = url.removeprefix("http://").rstrip("/")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: write a request, read the answer's status and body.

    Deliberately minimal (answers must carry Content-Length, as onduty's and Alertmanager's do):
    a general-purpose client costs more CPU per request than the server being measured, on a
    machine where both share two cores.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port or 80))
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        """Send one request; the answer's status once it has been read in full."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        if length is None:
            raise ValueError("an answer without Content-Length")
        if length:
            await self._reader.readexactly(length)
        return status

    def close(self) -> None:
        self._writer.close()


# --------------------------------------------------------------------------- open loop


def open_loop(
    url: str,
    path: str,
    bodies: Sequence[bytes],
    *,
    ok_status: int,
    rate: float,
    seconds: float,
    connections: int,
) -> Latencies:
    """POST `rate` requests per second for `seconds`, each timed from its scheduled send.

    Requests wait in a queue for the first free one of `connections` keep-alive connections;
    that wait counts in their latency, as it would for any sender with that many connections.
    """
    return _run(_open_loop(url, path, list(bodies), ok_status, rate, seconds, connections))


async def _open_loop(
    url: str,
    path: str,
    bodies: list[bytes],
    ok_status: int,
    rate: float,
    seconds: float,
    connections: int,
) -> Latencies:
    count = round(rate * seconds)
    result = Latencies(scheduled=count, rate=rate, seconds=seconds, latencies=[])
    requests = [post(url, path, body) for body in bodies]
    queue: asyncio.Queue[tuple[bytes, float] | None] = asyncio.Queue()
    clients = [await Connection.open(url) for _ in range(connections)]

    async def worker(client: Connection) -> None:
        try:
            while (item := await queue.get()) is not None:
                request, at = item
                try:
                    status = await client.send(request)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    result.errors += 1
                    client.close()
                    client = await Connection.open(url)
                    continue
                if status == ok_status:
                    result.latencies.append(time.monotonic() - at)
                else:
                    result.statuses[status] += 1
        finally:
            client.close()

    workers = [asyncio.create_task(worker(client)) for client in clients]
    start = time.monotonic() + 0.05
    for index in range(count):
        at = start + index / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        result.max_send_lag = max(result.max_send_lag, time.monotonic() - at)
        queue.put_nowait((requests[index % len(requests)], at))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return result


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed (less generator overhead), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)
