"""Closed-loop load for the HTTP benchmarks, on loopback only, bounded in time.

- `burst`: closed loop, as fast as `connections` keep-alive connections go, POSTing pre-built
  bodies round-robin. It drives `wrk` (a C load generator, with the Lua script below) when it
  is installed or `scripts/ensure_wrk.sh` can install it, else several processes of the asyncio
  client below. Either way every request is accounted for: at the deadline the generator stops
  sending bodies and waits for the answers to the ones in flight (wrk keeps its connections
  busy with empty POSTs to a path that answers 404 until its own duration ends), so
  "acknowledged" is exact.

The generator runs on LOAD_CPUS (see `_procs`); the open-loop shapes are in `_http`.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onduty.bench._http import UNIQUE, Burst, Connection, Requests, attempt, run_async
from onduty.bench._procs import LOAD_CPUS, SCRIPTS, pinned

# Answered 404 by both onduty and Alertmanager. POST, not GET: Alertmanager answers 503 to GETs
# beyond its --web.get-concurrency.
IDLE_PATH = "/bench-idle-not-a-route"
RESULT_MARK = "BENCH-RESULT "

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
  local nthreads = tonumber(args[5])
  path, expected, deadline = args[2], tonumber(args[3]), tonumber(args[4])
  unique = args[6] ~= "-" and (args[6] .. id .. "x") or nil
  bodies = {}
  local file = assert(io.open(args[1], "rb"))
  for line in file:lines() do
    if unique then
      bodies[#bodies + 1] = line
    else
      bodies[#bodies + 1] = wrk.format("POST", path, {["Content-Type"] = "application/json"}, line)
    end
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
    if unique then
      local body = string.gsub(bodies[position], "@UNIQUE_MARK@", unique .. sent)
      return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
    end
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
    unique: str | None = None,
) -> Burst:
    """POST `bodies` round-robin to `url + path` for `seconds`, with `connections` at once.

    With `unique`, every UNIQUE mark in a body is replaced per request (see WRK_SCRIPT). The
    generator runs on LOAD_CPUS.
    """
    load = Load(url, path, bodies, ok_status, connections, seconds, folder, unique)
    if prefer_wrk and wrk_available():
        try:
            return wrk_burst(load)
        except RuntimeError:
            pass  # e.g. a wrk without LuaJIT's FFI: use the Python generator
    return python_burst(load)


@dataclass(frozen=True)
class Load:
    """What a burst sends: `bodies` round-robin to `url + path`, `connections` at once, for
    `seconds`; `ok_status` is the answer that counts; files go to `folder`."""

    url: str
    path: str
    bodies: Sequence[bytes]
    ok_status: int
    connections: int
    seconds: float
    folder: Path
    unique: str | None = None


def _bodies_file(path: Path, bodies: Sequence[bytes]) -> Path:
    """Write `bodies` one per line to `path` (creating its folder) for a generator to read."""
    if any(b"\n" in body for body in bodies):
        raise ValueError("bodies are passed one per line: a body may not contain a newline")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(bodies) + b"\n")
    return path


def wrk_burst(load: Load, *, threads: int = 1, tail: float = 1.5) -> Burst:
    url, path, ok_status, connections, seconds = (
        load.url, load.path, load.ok_status, load.connections, load.seconds
    )  # fmt: skip
    bodies_file = _bodies_file(load.folder / "wrk-bodies.ndjson", load.bodies)
    script = load.folder / "wrk-bench.lua"
    script.write_text(
        WRK_SCRIPT.replace("@IDLE_PATH@", IDLE_PATH)
        .replace("@RESULT_MARK@", RESULT_MARK)
        .replace("@UNIQUE_MARK@", UNIQUE)
    )
    deadline = time.monotonic() + 0.1 + seconds
    duration = math.ceil(seconds + 0.1 + tail)
    command = pinned([
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
        "-s", str(script), url,
        "--", str(bodies_file), path, str(ok_status), f"{deadline:.6f}", str(threads),
        load.unique or "-",
    ], LOAD_CPUS)  # fmt: skip
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


def python_burst(load: Load, *, processes: int = 2) -> Burst:
    """The fallback: `processes` processes of the asyncio client, sharing the connections.

    Plain subprocesses (`python -c`), not multiprocessing: its spawn method re-imports the
    parent's main module, which for `python -m onduty bench` would run the command again.
    """
    url, path, bodies, unique = load.url, load.path, load.bodies, load.unique
    connections, seconds = load.connections, load.seconds
    processes = max(1, min(processes, connections))
    bodies_file = _bodies_file(load.folder / "python-bodies.ndjson", bodies)
    deadline = time.monotonic() + 1.5 + seconds  # interpreters need a moment to start
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    workers = [
        subprocess.Popen(
            pinned([
                sys.executable, "-c", "from onduty.bench._loadgen import worker; worker()",
                json.dumps([url, path, str(bodies_file), i * len(bodies) // processes,
                            load.ok_status, share, deadline, f"{unique}p{i}x" if unique else None]),
            ], LOAD_CPUS),
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
    url, path, bodies_file, start, ok_status, connections, deadline, unique = json.loads(
        sys.argv[1]
    )
    bodies = Path(bodies_file).read_bytes().splitlines()
    bodies = bodies[start:] + bodies[:start]
    result = run_async(_closed_loop(url, path, bodies, ok_status, connections, deadline, unique))
    sys.stdout.write(json.dumps(result))


async def _closed_loop(
    url: str,
    path: str,
    bodies: list[bytes],
    ok_status: int,
    connections: int,
    deadline: float,
    unique: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {"sent": 0, "ok": 0, "errors": 0, "first": 0.0, "last": 0.0}
    statuses: Counter[int] = Counter()
    requests = Requests(url, path, bodies, unique)
    position = 0

    async def connection() -> None:
        nonlocal position
        client = await Connection.open(url)
        try:
            while (now := time.monotonic()) < deadline:
                request = requests[position]
                position += 1
                state["sent"] += 1
                state["first"] = state["first"] or now
                client, status = await attempt(client, url, request)
                if status is None:
                    state["errors"] += 1
                elif status == ok_status:
                    state["ok"] += 1
                    state["last"] = time.monotonic()
                else:
                    statuses[status] += 1
        finally:
            client.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    state["statuses"] = dict(statuses)
    return state
