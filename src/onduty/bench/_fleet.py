"""Shared helpers of the fleet workloads: `onduty serve` nodes on a PostgreSQL store and a NATS
JetStream bus of their own, and what the workloads watch while they run.

Every run gets a private schema and stream (named with a random tag) and drops both when done,
so runs never see each other's events or leases, nor those of a test suite running meanwhile.
The servers are the machine's own (loopback, trust authentication); `ONDUTY_BENCH_POSTGRES`
and `ONDUTY_BENCH_NATS` name others. A workload that cannot reach them says so in a row
instead of measuring.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import psycopg
from nats.js.errors import NotFoundError
from psycopg import sql

from onduty.bench._http import Burst, Connection, Requests, attempt, run_async
from onduty.bench._procs import stop
from onduty.bench._serve import Started, free_port, wait_ready
from onduty.bench._workload import Row

DATABASE = os.environ.get("ONDUTY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
NATS = os.environ.get("ONDUTY_BENCH_NATS", "nats://127.0.0.1:4222")


def unavailable() -> str | None:
    """Why the fleet workloads cannot run here (a server that does not answer), or None."""
    try:
        psycopg.connect(DATABASE, connect_timeout=3).close()
    except psycopg.Error as error:
        return f"PostgreSQL at {DATABASE} does not answer ({str(error).strip()[:120]})"

    async def jetstream() -> None:
        client = await nats.connect(NATS, connect_timeout=3, max_reconnect_attempts=0)
        try:
            await client.jetstream().account_info()
        finally:
            await client.close()

    try:
        asyncio.run(jetstream())
    except Exception as error:  # nats-py raises many kinds; any of them means "not here"
        return f"NATS JetStream at {NATS} does not answer ({type(error).__name__})"
    return None


def not_measured(name: str, why: str) -> Row:
    """The row of a workload that could not run here, and why."""
    return {"name": name, "figure": f"not measured: {why}", "value": 0.0, "unit": "",
            "peer": "PostgreSQL and NATS JetStream on loopback", "ratio": "n/a"}  # fmt: skip


# --------------------------------------------------------------------------- a private fleet


@dataclass(frozen=True)
class Private:
    """A schema and a stream (with its subjects) that only this run uses."""

    schema: str
    stream: str

    @property
    def store(self) -> str:
        return f"{DATABASE}?schema={self.schema}"

    @property
    def subjects(self) -> str:
        return f"bench.{self.stream.lower()}"

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))


async def _delete_stream(name: str) -> None:
    client = await nats.connect(NATS, connect_timeout=3, max_reconnect_attempts=0)
    try:
        await client.jetstream().delete_stream(name)
    except NotFoundError:
        pass
    finally:
        await client.close()


@contextmanager
def private(*, bus: bool = True) -> Iterator[Private]:
    """A fresh schema and stream name; both dropped afterwards, whatever happened (the stream
    only with `bus`: a workload of the log alone never reaches NATS)."""
    tag = uuid.uuid4().hex[:10]
    made = Private(f"bench_{tag}", f"BENCH_{tag.upper()}")
    try:
        yield made
    finally:
        with psycopg.connect(DATABASE, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(made.schema))
            )
        if bus:
            asyncio.run(_delete_stream(made.stream))


def fleet_document(
    where: Private, base: dict[str, Any], *, partitions: int, lease_ttl: float
) -> dict[str, Any]:
    """`base` (a config document) run as a fleet on `where`."""
    fleet = {"partitions": partitions, "lease_ttl": f"{lease_ttl:g}s", "stream": where.stream,
             "subjects": where.subjects}  # fmt: skip
    return {**base, "store": where.store, "bus": NATS, "fleet": fleet}


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document))  # JSON is YAML
    return path


# --------------------------------------------------------------------------- nodes


class Node(Started):
    """`onduty serve --store STORE ARGS… -c CONFIG` on a free port, unpinned (a fleet's several
    processes share the machine's cores with its database and bus); output to `log_path`."""

    name = "onduty serve"

    def __init__(self, store: str, config: Path, log_path: Path, *args: str) -> None:
        self.store, self.config, self.log_path, self.args = store, config, log_path, list(args)
        self.label = log_path.stem  # what checks and profiles call it
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout: float = 60.0) -> Node:
        command = [
            sys.executable, "-m", "onduty", "serve", "--port", str(self.port),
            "--store", self.store, "-c", str(self.config), "--log-level", "warning", *self.args,
        ]  # fmt: skip
        with self.log_path.open("ab") as output:  # the child keeps its own copy of the file
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        if not wait_ready(f"{self.url}/readyz", self.process, timeout):
            self.kill()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"onduty serve did not become ready:\n{tail}")
        return self

    def held(self) -> int:
        """How many partitions it runs, from its /metrics (0 when it does not answer)."""
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0
        for line in text.splitlines():
            if line.startswith("onduty_partitions_held "):
                return int(float(line.split()[1]))
        return 0

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM (onduty drains and exits 0), or SIGKILL when it does not stop in time."""
        return None if self.process is None else stop(self.process, timeout=60)


@contextmanager
def running(nodes: list[Node]) -> Iterator[list[Node]]:
    """The nodes started that are not yet; every one still running stopped on the way out."""
    try:
        for node in nodes:
            if node.process is None:
                node.start()
        yield nodes
    finally:
        for node in reversed(nodes):
            if node.process is not None and node.process.poll() is None:
                node.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.05) -> float | None:
    """Poll `predicate()` until it holds: the seconds it took, or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(every)
    return None


def balanced(managers: list[Node], partitions: int) -> bool:
    """Every partition runs, each manager holding its even share (give or take one)."""
    held = [manager.held() for manager in managers]
    return sum(held) == partitions and max(held) - min(held) <= 1


# --------------------------------------------------------------------------- load


def closed_loop(
    url: str, path: str, bodies: Sequence[bytes], *, connections: int, seconds: float,
    unique: str | None = None, answer_within: float = 30.0,
) -> Burst:  # fmt: skip
    """POST `bodies` round-robin from `connections` keep-alive connections, each sending its
    next request when the last is answered, for `seconds`; then wait for the answers in flight.

    In the calling thread's own event loop: at the rate a fleet takes these webhooks (a few
    hundred requests a second) that costs a few percent of a core, and unlike wrk it sends
    nothing after its deadline, so the drain that follows is the managers' alone. An answer
    slower than `answer_within` counts as a timeout."""
    return run_async(_closed_loop(url, path, bodies, connections, seconds, unique, answer_within))


async def _closed_loop(
    url: str, path: str, bodies: Sequence[bytes], connections: int, seconds: float,
    unique: str | None, answer_within: float,
) -> Burst:  # fmt: skip
    requests = Requests(url, path, bodies, unique)
    done = Burst("asyncio HTTP/1.1 client, in the bench's process", connections, 0, 0, 0.0)
    first, last = math.inf, 0.0
    deadline = time.monotonic() + seconds
    position = 0

    async def connection() -> None:
        nonlocal position, first, last
        client = await Connection.open(url)
        try:
            while (now := time.monotonic()) < deadline:
                request = requests[position]
                position += 1
                done.sent += 1
                first = min(first, now)
                try:
                    client, status = await asyncio.wait_for(
                        attempt(client, url, request), answer_within
                    )
                except TimeoutError:
                    done.timeouts += 1
                    client.close()
                    client = await Connection.open(url)
                    continue
                if status is None:
                    done.errors += 1
                elif status == 202:
                    done.ok += 1
                    last = time.monotonic()
                else:
                    done.statuses[status] += 1
        finally:
            client.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    done.seconds = max(0.0, last - first) if done.ok else 0.0
    return done


# --------------------------------------------------------------------------- the store


def signals_logged(where: Private) -> int:
    """`SignalReceived` events committed in every partition's log."""
    query = sql.SQL("SELECT count(*) FROM {} WHERE type = 'SignalReceived'")
    with psycopg.connect(DATABASE, autocommit=True) as conn:
        row = conn.execute(query.format(where.table("events"))).fetchone()
    return int(row[0]) if row else 0


def audit_verify(store: str, folder: Path) -> tuple[bool, str]:
    """`onduty audit verify` on the store: whether it exited 0, and its last words."""
    verify = subprocess.run(
        [sys.executable, "-m", "onduty", "audit", "verify", "--store", store],
        capture_output=True, text=True, timeout=600, check=False, cwd=folder,
    )  # fmt: skip
    return verify.returncode == 0, (verify.stdout + verify.stderr).strip()[-300:]


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    backlog: int  # messages the stream holds: stored by ingest, not yet committed and acked


class Watch:
    """Samples the bus's backlog every `every` s, on a thread of its own.

    The stream keeps a message until a manager acknowledges it, which it does only once the
    partition's log committed it: an empty stream means every signal acknowledged by ingest is
    in a log. `failure` says why the last sample failed; `gave_up`, that none ever will come."""

    def __init__(self, where: Private, every: float = 0.05) -> None:
        self.where, self.every = where, every
        self.samples: list[Sample] = []
        self.failure: str | None = None
        self.gave_up = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        try:
            client = await nats.connect(NATS, connect_timeout=3)
        except Exception as error:  # whatever nats-py raised: the run cannot be timed
            self.failure = f"cannot watch the stream: {type(error).__name__}: {error}"
            self.gave_up = True
            return
        js = client.jetstream()
        try:
            while not self._stop.is_set():
                try:
                    info = await js.stream_info(self.where.stream)
                except Exception as error:  # a slow answer: the next sample will do
                    self.failure = f"the stream did not answer: {type(error).__name__}"
                else:
                    self.failure = None
                    self.samples.append(Sample(time.monotonic(), info.state.messages))
                await asyncio.sleep(self.every)
        finally:
            await client.close()

    def done_after(self, moment: float) -> bool:
        """Drained since `moment`, or no sample will ever tell: nothing to wait for."""
        return self.gave_up or self.drained_after(moment) is not None

    def drained_after(self, moment: float) -> Sample | None:
        """The first sample taken after `moment` with nothing left on the bus."""
        return next((s for s in self.samples if s.at > moment and s.backlog == 0), None)

    def at(self, moment: float) -> Sample | None:
        """The last sample taken at or before `moment`."""
        before = [s for s in self.samples if s.at <= moment]
        return before[-1] if before else None


# --------------------------------------------------------------------------- where the CPU went


def _ticks(pid: int) -> int:
    """CPU ticks process `pid` used, with those of the children it reaped (a node forks a child
    to encode each snapshot); 0 once it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return sum(int(v) for v in stat[11:15])  # utime, stime, cutime, cstime
    except (OSError, ValueError, IndexError):
        return 0


def pids_named(*names: str) -> list[int]:
    """The processes whose command name is one of `names` (read from /proc, for accounting)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@dataclass
class CpuUse:
    """Cores used over a block by named groups of processes, by this process (the bench, its
    load generator included), and by the whole machine; the rest is "other processes".

    A group is a callable giving its pids, asked at the start and at the end (the database's
    backends come and go); a process counts from when it was first seen."""

    groups: dict[str, Callable[[], Iterable[int]]]
    cores: dict[str, float] = field(default_factory=dict)
    machine: float = 0.0  # busy cores, of all there are
    wall: float = 0.0  # seconds the block lasted
    _start: dict[str, dict[int, int]] = field(default_factory=dict)
    _clock: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __enter__(self) -> CpuUse:
        self._start = {name: {p: _ticks(p) for p in pids()} for name, pids in self.groups.items()}
        self._clock = (time.monotonic(), _machine_busy(), _own())
        return self

    def __exit__(self, *_: object) -> None:
        started, busy, own = self._clock
        self.wall = wall = time.monotonic() - started
        if wall <= 0:
            return
        tick = os.sysconf("SC_CLK_TCK")
        for name, pids in self.groups.items():
            before = self._start[name]
            # a process gone meanwhile reads 0: what it used is lost rather than negative
            used = sum(max(0, _ticks(p) - before.get(p, 0)) for p in {*pids(), *before})
            self.cores[name] = used / tick / wall
        self.cores["the bench and its load generator"] = (_own() - own) / wall
        self.machine = (_machine_busy() - busy) / wall
        self.cores["other processes"] = max(0.0, self.machine - sum(self.cores.values()))

    def seconds(self, name: str) -> float:
        """CPU seconds group `name` used over the block."""
        return self.cores.get(name, 0.0) * self.wall

    def text(self) -> str:
        shares = ", ".join(f"{name} {cores:.2f}" for name, cores in self.cores.items())
        return f"cores: {shares}; machine {self.machine:.2f} of {os.cpu_count()} busy"


def _own() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_busy() -> float:
    """Busy seconds of every core since boot: user + nice + system + steal."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (fields[0] + fields[1] + fields[2] + fields[7]) / os.sysconf("SC_CLK_TCK")
