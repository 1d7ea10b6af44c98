"""A minimal HTTP/1.1 keep-alive client on asyncio streams (uvloop when installed), and the
load shapes built on it, on loopback only, bounded in count or time:

- `open_loop`: requests at a fixed rate, each timed from the moment it was *scheduled* to be
  sent, not from when it was sent: a stall of the server (or of the generator) shows in every
  request scheduled during it, so coordinated omission cannot hide it;
- `send_each`: every body once, closed loop.

Not httpx: on two cores shared with the server, httpx's per-request cost (its connection pool
scans its queue and re-detects the async library on every request) saturated the generator
below 500 requests/s, and the latencies measured were the generator's own.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from onduty.bench._procs import LOAD_CPUS, pinned_thread

T = TypeVar("T")
UNIQUE = "@U@"
"""In a body sent with `unique=PREFIX`, replaced per request by PREFIX and a counter."""


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
    answered: list[float] = field(default_factory=list)  # when each `ok` answer came, monotonic
    start: float = 0.0  # when the first request was scheduled, monotonic

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


class Requests:
    """The requests to send, by position, round-robin over `bodies`; with `unique`, each built
    when it is sent, its UNIQUE marks replaced by `unique` and the position."""

    def __init__(
        self, url: str, path: str, bodies: Sequence[bytes], unique: str | None = None
    ) -> None:
        self._url, self._path, self._unique = url, path, unique
        self._bodies = list(bodies)
        self._ready = None if unique else [post(url, path, body) for body in bodies]

    def __getitem__(self, position: int) -> bytes:
        body = position % len(self._bodies)
        if self._ready is not None:
            return self._ready[body]
        mark = f"{self._unique}{position}".encode()
        return post(self._url, self._path, self._bodies[body].replace(UNIQUE.encode(), mark))


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


async def attempt(client: Connection, url: str, request: bytes) -> tuple[Connection, int | None]:
    """Send `request` on `client`: the connection to go on with and the answer's status, or
    None when the connection broke (a fresh one is opened in its place)."""
    try:
        return client, await client.send(request)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        client.close()
        return await Connection.open(url), None


def open_loop(
    url: str,
    path: str,
    bodies: Sequence[bytes],
    *,
    ok_status: int,
    rate: float,
    seconds: float,
    connections: int,
    unique: str | None = None,
) -> Latencies:
    """POST `rate` requests per second for `seconds`, each timed from its scheduled send.

    Requests wait in a queue for the first free one of `connections` keep-alive connections;
    that wait counts in their latency, as it would for any sender with that many connections.
    The generator runs in this process, its thread kept on LOAD_CPUS meanwhile.
    """
    requests = Requests(url, path, bodies, unique)
    with pinned_thread(LOAD_CPUS):
        return run_async(_open_loop(url, requests, ok_status, rate, seconds, connections))


def send_each(
    url: str, path: str, bodies: Sequence[bytes], *, ok_status: int, connections: int
) -> Burst:
    """POST every body once (closed loop, `connections` at once, from this process on
    LOAD_CPUS): a bounded count, where `burst` is bounded in time."""
    with pinned_thread(LOAD_CPUS):
        return run_async(_send_each(url, path, list(bodies), ok_status, connections))


async def _send_each(
    url: str, path: str, bodies: list[bytes], ok_status: int, connections: int
) -> Burst:
    result = Burst("asyncio HTTP/1.1 client (1 process)", connections, 0, 0, 0.0)
    pending = iter(bodies)
    started = time.monotonic()

    async def connection() -> None:
        client = await Connection.open(url)
        try:
            for body in pending:
                result.sent += 1
                client, status = await attempt(client, url, post(url, path, body))
                if status is None:
                    result.errors += 1
                elif status == ok_status:
                    result.ok += 1
                else:
                    result.statuses[status] += 1
        finally:
            client.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    result.seconds = time.monotonic() - started
    return result


async def _open_loop(
    url: str, requests: Requests, ok_status: int, rate: float, seconds: float, connections: int
) -> Latencies:
    count = round(rate * seconds)
    plan = [(index / rate, requests[index]) for index in range(count)]
    result = await _scheduled(url, plan, ok_status, connections)
    result.rate, result.seconds = rate, seconds
    return result


def scheduled(
    url: str, plan: Sequence[tuple[float, bytes]], *, ok_status: int, connections: int
) -> Latencies:
    """Send each complete request of `plan` (see `post`) that many seconds after the start,
    each timed from its scheduled send (from this process, its thread on LOAD_CPUS)."""
    with pinned_thread(LOAD_CPUS):
        return run_async(_scheduled(url, plan, ok_status, connections))


async def _scheduled(
    url: str, plan: Sequence[tuple[float, bytes]], ok_status: int, connections: int
) -> Latencies:
    span = plan[-1][0] if plan else 0.0
    result = Latencies(scheduled=len(plan), rate=len(plan) / max(span, 1e-9), seconds=span,
                       latencies=[])  # fmt: skip
    queue: asyncio.Queue[tuple[bytes, float] | None] = asyncio.Queue()
    clients = [await Connection.open(url) for _ in range(connections)]

    async def worker(client: Connection) -> None:
        try:
            while (item := await queue.get()) is not None:
                request, at = item
                client, status = await attempt(client, url, request)
                if status is None:
                    result.errors += 1
                elif status == ok_status:
                    answered = time.monotonic()
                    result.latencies.append(answered - at)
                    result.answered.append(answered)
                else:
                    result.statuses[status] += 1
        finally:
            client.close()

    workers = [asyncio.create_task(worker(client)) for client in clients]
    start = result.start = time.monotonic() + 0.05
    for offset, request in plan:
        at = start + offset
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        result.max_send_lag = max(result.max_send_lag, time.monotonic() - at)
        queue.put_nowait((request, at))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return result


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed (less generator overhead), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)
