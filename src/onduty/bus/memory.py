"""The bus in process: the embedded default for one node, and the reference for tests.

It keeps the promises the NATS bus keeps, so code written against one runs on the other: a
`msg_id` seen within the duplicate window is stored once; each region's partition has one
durable consumer whose place survives its consumers being closed and opened again; a
delivery not acked within `ack_wait` (or handed back) comes again, flagged as redelivered;
the partition's durable never has more than `max_in_flight` deliveries outstanding; an acked
signal leaves the backlog, and a full backlog refuses publishes with `BusBusy`. Nothing
survives the process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from onduty.bus.base import (
    BusBusy,
    BusError,
    BusSettings,
    Consumer,
    Delivery,
    PublishAck,
    check_consumer_limits,
    check_msg_id,
)
from onduty.bus.partitions import check_partition, check_token


@dataclass
class _Stored:
    seq: int
    region: str
    partition: int
    msg_id: str
    payload: bytes
    deliveries: int = 0
    leased_until: float = 0.0
    """While in the future, the signal is out with a consumer (or waits out a nak's delay)."""


@dataclass
class _Lane:
    """One region's partition: its backlog in stream order and its durable consumer's state."""

    messages: dict[int, _Stored] = field(default_factory=dict)
    leased: dict[int, _Stored] = field(default_factory=dict)
    max_in_flight: int = 1
    ack_wait: float = 30.0
    waiters: set[asyncio.Future[None]] = field(default_factory=set)

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)

    def take(self, limit: int, now: float) -> list[_Stored]:
        """Lease up to `limit` signals, oldest first (so an expired lease goes out again before
        anything newer), keeping the durable within its `max_in_flight`."""
        for seq, stored in list(self.leased.items()):
            if stored.leased_until <= now:
                del self.leased[seq]
        limit = min(limit, self.max_in_flight - len(self.leased))
        taken: list[_Stored] = []
        # Only leased signals are skipped, and there are at most max_in_flight of those.
        for seq, stored in self.messages.items():
            if len(taken) >= limit:
                break
            if seq in self.leased:
                continue
            stored.deliveries += 1
            stored.leased_until = now + self.ack_wait
            self.leased[seq] = stored
            taken.append(stored)
        return taken

    def next_expiry(self) -> float | None:
        return min((stored.leased_until for stored in self.leased.values()), default=None)


class MemoryBus:
    """A `Bus` in this process."""

    def __init__(self, settings: BusSettings | None = None) -> None:
        self.settings = settings or BusSettings()
        self._last_seq = 0
        self._backlog = 0
        self._seen: dict[str, tuple[int, float]] = {}  # msg_id -> (seq, when): oldest first
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _lane(self, region: str, partition: int) -> _Lane:
        check_token("region", region)
        check_partition(partition, self.settings.partitions)
        return self._lanes.setdefault((region, partition), _Lane())

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the memory bus is closed")

    async def send(
        self, region: str, partition: int, msg_id: str, payload: bytes
    ) -> Awaitable[PublishAck]:
        ack = await self.publish(region, partition, msg_id, payload)
        done: asyncio.Future[PublishAck] = asyncio.get_running_loop().create_future()
        done.set_result(ack)
        return done

    async def publish(self, region: str, partition: int, msg_id: str, payload: bytes) -> PublishAck:
        self._check_open()
        lane = self._lane(region, partition)
        check_msg_id(msg_id)
        now = time.monotonic()
        self._forget_seen_before(now - self.settings.duplicate_window)
        if msg_id in self._seen:
            return PublishAck(self.settings.stream, self._seen[msg_id][0], duplicate=True)
        if self._backlog >= self.settings.max_backlog:
            raise BusBusy(
                f"the bus holds its maximum backlog of {self.settings.max_backlog} signals"
            )
        self._last_seq += 1
        self._backlog += 1
        lane.messages[self._last_seq] = _Stored(
            self._last_seq, region, partition, msg_id, bytes(payload)
        )
        self._seen[msg_id] = (self._last_seq, now)
        lane.wake()
        return PublishAck(self.settings.stream, self._last_seq)

    def _forget_seen_before(self, horizon: float) -> None:
        while self._seen:
            msg_id, (_, when) = next(iter(self._seen.items()))
            if when > horizon:
                return
            del self._seen[msg_id]

    async def consumer(
        self,
        region: str,
        partition: int,
        *,
        max_in_flight: int = 256,
        ack_wait: float = 30.0,
    ) -> Consumer:
        self._check_open()
        check_consumer_limits(max_in_flight, ack_wait)
        lane = self._lane(region, partition)
        # As on a JetStream durable, the last opener's limits are the durable's limits.
        lane.max_in_flight, lane.ack_wait = max_in_flight, ack_wait
        return MemoryConsumer(self, lane, region, partition, max_in_flight)

    def acknowledge(self, lane: _Lane, seq: int) -> None:
        lane.leased.pop(seq, None)
        if lane.messages.pop(seq, None) is not None:
            self._backlog -= 1
        lane.wake()

    async def close(self) -> None:
        self._closed = True
        for lane in self._lanes.values():
            lane.wake()


class MemoryConsumer:
    """A `Consumer` of one lane of a `MemoryBus`."""

    def __init__(
        self, bus: MemoryBus, lane: _Lane, region: str, partition: int, max_in_flight: int
    ) -> None:
        self.region = region
        self.partition = partition
        self.max_in_flight = max_in_flight
        self._bus = bus
        self._lane = lane
        self._held: dict[int, Delivery] = {}
        self._closed = False

    @property
    def in_flight(self) -> int:
        return len(self._held)

    async def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Delivery]:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._closed or self._bus.closed:
                raise BusError("the consumer is closed")
            room = min(max_messages, self.max_in_flight - len(self._held))
            wait = deadline - loop.time()
            if room > 0:
                taken = self._lane.take(room, time.monotonic())
                if taken:
                    return [self._deliver(stored) for stored in taken]
                # A lease running out makes a signal deliverable again without a wake-up.
                expiry = self._lane.next_expiry()
                if expiry is not None:
                    wait = min(wait, expiry - time.monotonic())
            if deadline <= loop.time():
                return []
            await self._wait(max(wait, 0.001))

    async def _wait(self, seconds: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lane.waiters.add(waiter)
        try:
            async with asyncio.timeout(seconds):
                await waiter
        except TimeoutError:
            pass
        finally:
            self._lane.waiters.discard(waiter)

    def _deliver(self, stored: _Stored) -> Delivery:
        delivery = Delivery(
            region=stored.region,
            partition=stored.partition,
            msg_id=stored.msg_id,
            payload=stored.payload,
            stream_seq=stored.seq,
            deliveries=stored.deliveries,
            settler=self,
        )
        self._held[stored.seq] = delivery
        return delivery

    async def settle(self, delivery: Delivery, delay: float | None) -> None:
        if self._held.pop(delivery.stream_seq, None) is None:
            return  # settled already, or handed back when this consumer closed
        if delay is None:
            self._bus.acknowledge(self._lane, delivery.stream_seq)
            return
        stored = self._lane.leased.get(delivery.stream_seq)
        # Only the latest delivery of a signal hands it back: an older one's lease ran out.
        if stored is not None and stored.deliveries == delivery.deliveries:
            if delay > 0:
                stored.leased_until = time.monotonic() + delay
            else:
                del self._lane.leased[delivery.stream_seq]
        self._lane.wake()

    async def close(self) -> None:
        if self._closed:
            return
        for delivery in list(self._held.values()):
            await delivery.nak()
        self._closed = True
        self._lane.wake()
