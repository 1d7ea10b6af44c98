"""What every bus promises, as a suite a backend's test class inherits.

A backend's tests subclass `BusContract` and implement `open` (a bus with the given settings)
and, when the backend keeps something outside the process, `discard` (remove what a test
made): tests/bus/test_memory.py and tests/bus/test_nats.py do. Each test gets settings with a
stream and subject prefix of its own, so tests never see each other's signals.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from onduty.bus import Bus, BusBusy, BusSettings, Consumer, Delivery

Scenario = Callable[[Bus], Awaitable[None]]


def unique_settings(**changes: Any) -> BusSettings:
    tag = uuid.uuid4().hex[:12]
    defaults: dict[str, Any] = {
        "partitions": 8,
        "stream": f"TEST_{tag}",
        "prefix": f"test_{tag}.signals",
        "consumer_prefix": f"test-{tag}",
    }
    return BusSettings(**{**defaults, **changes})


async def drain(consumer: Consumer, count: int, timeout: float = 5.0) -> list[Delivery]:
    """Fetch until `count` deliveries came (or `timeout` passed), without settling them."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += await consumer.fetch(count - len(got), timeout=deadline - time.monotonic())
    return got


async def consume(consumer: Consumer, count: int, timeout: float = 10.0) -> list[Delivery]:
    """Fetch and ack until `count` deliveries came (or `timeout` passed)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        batch = await consumer.fetch(count - len(got), timeout=deadline - time.monotonic())
        await ack_all(batch)
        got += batch
    return got


async def ack_all(deliveries: list[Delivery]) -> None:
    for delivery in deliveries:
        await delivery.ack()


class BusContract:
    """The behaviour every bus must show. Collected only through a subclass."""

    async def open(self, settings: BusSettings) -> Bus:
        raise NotImplementedError

    async def discard(self, settings: BusSettings) -> None:
        """Remove what a test made outside the process (nothing, for most backends)."""

    def run(self, scenario: Scenario, **changes: Any) -> None:
        settings = unique_settings(**changes)

        async def main() -> None:
            bus = await self.open(settings)
            try:
                await scenario(bus)
            finally:
                await bus.close()
                await self.discard(settings)

        asyncio.run(main())

    def test_each_partition_is_consumed_in_publish_order(self) -> None:
        async def scenario(bus: Bus) -> None:
            sent: dict[tuple[str, int], list[str]] = {}
            pending = []
            for i in range(30):
                region, partition = ("eu", i % 3) if i % 5 else ("us", 1)
                msg_id = f"sig-{i}"
                sent.setdefault((region, partition), []).append(msg_id)
                if i % 2:  # both ways of publishing keep the order
                    pending.append(await bus.send(region, partition, msg_id, msg_id.encode()))
                else:
                    ack = await bus.publish(region, partition, msg_id, msg_id.encode())
                    assert not ack.duplicate
            acks = [await ack for ack in pending]
            assert len({ack.seq for ack in acks}) == len(acks)
            for (region, partition), msg_ids in sent.items():
                consumer = await bus.consumer(region, partition)
                got = await drain(consumer, len(msg_ids))
                assert [d.msg_id for d in got] == msg_ids
                assert [d.payload for d in got] == [m.encode() for m in msg_ids]
                assert {(d.region, d.partition) for d in got} == {(region, partition)}
                assert [d.stream_seq for d in got] == sorted(d.stream_seq for d in got)
                assert all(d.deliveries == 1 and not d.redelivered for d in got)
                await ack_all(got)
                assert consumer.in_flight == 0
                await consumer.close()

        self.run(scenario)

    def test_a_retried_msg_id_is_stored_once(self) -> None:
        async def scenario(bus: Bus) -> None:
            first = await bus.publish("eu", 4, "alert-1", b"first")
            again = await bus.publish("eu", 4, "alert-1", b"retried")
            assert not first.duplicate
            assert again.duplicate
            assert again.seq == first.seq
            consumer = await bus.consumer("eu", 4)
            got = await drain(consumer, 1)
            assert [(d.msg_id, d.payload) for d in got] == [("alert-1", b"first")]
            await got[0].ack()
            # Still within the duplicate window after it was consumed: a late retry is a dup.
            assert (await bus.publish("eu", 4, "alert-1", b"late")).duplicate
            assert await consumer.fetch(10, timeout=0.3) == []
            await consumer.close()

        self.run(scenario)

    def test_an_unacked_delivery_comes_again_when_the_consumer_reopens(self) -> None:
        async def scenario(bus: Bus) -> None:
            for i in range(3):
                await bus.publish("eu", 0, f"m{i}", b"x")
            consumer = await bus.consumer("eu", 0, ack_wait=30)
            first = await drain(consumer, 3)
            await first[0].ack()
            await consumer.close()  # a manager stops with two signals unprocessed
            reopened = await bus.consumer("eu", 0, ack_wait=30)
            again = await drain(reopened, 2)
            assert [d.msg_id for d in again] == ["m1", "m2"]
            assert [d.stream_seq for d in again] == [d.stream_seq for d in first[1:]]
            assert all(d.redelivered and d.deliveries == 2 for d in again)
            await ack_all(again)
            await reopened.close()
            last = await bus.consumer("eu", 0)
            assert await last.fetch(10, timeout=0.3) == []
            await last.close()

        self.run(scenario)

    def test_an_unacked_delivery_comes_again_after_ack_wait(self) -> None:
        async def scenario(bus: Bus) -> None:
            await bus.publish("eu", 1, "slow", b"x")
            consumer = await bus.consumer("eu", 1, ack_wait=1.0)
            (first,) = await drain(consumer, 1)
            assert await consumer.fetch(1, timeout=0.3) == []  # out with this consumer
            (again,) = await drain(consumer, 1, timeout=5)
            assert again.msg_id == "slow"
            assert again.redelivered and again.deliveries == 2
            assert again.stream_seq == first.stream_seq
            assert consumer.in_flight == 1  # the same signal, held once
            await again.ack()
            await first.ack()  # settling a signal twice is harmless
            assert consumer.in_flight == 0
            await consumer.close()

        self.run(scenario)

    def test_a_nak_hands_a_delivery_back_after_its_delay(self) -> None:
        async def scenario(bus: Bus) -> None:
            await bus.publish("eu", 2, "retry-me", b"x")
            consumer = await bus.consumer("eu", 2)
            (first,) = await drain(consumer, 1)
            await first.nak()
            (second,) = await drain(consumer, 1, timeout=2)
            assert second.redelivered and second.deliveries == 2
            await second.nak(delay=1.0)
            assert await consumer.fetch(1, timeout=0.3) == []
            (third,) = await drain(consumer, 1, timeout=5)
            assert third.deliveries == 3
            await third.ack()
            await consumer.close()

        self.run(scenario)

    def test_a_consumer_never_holds_more_than_its_bound(self) -> None:
        async def scenario(bus: Bus) -> None:
            for i in range(10):
                await bus.publish("eu", 5, f"m{i}", b"x")
            consumer = await bus.consumer("eu", 5, max_in_flight=3)
            held = await drain(consumer, 10, timeout=1.0)
            assert [d.msg_id for d in held] == ["m0", "m1", "m2"]
            assert consumer.in_flight == 3
            assert await consumer.fetch(10, timeout=0.3) == []
            # The bound is the partition's: another consumer of it gets nothing either.
            other = await bus.consumer("eu", 5, max_in_flight=3)
            assert await other.fetch(10, timeout=0.3) == []
            await other.close()
            await held[0].ack()
            more = await drain(consumer, 1)
            assert [d.msg_id for d in more] == ["m3"]
            assert consumer.in_flight == 3
            await ack_all(held[1:] + more)
            rest = await drain(consumer, 3)
            assert [d.msg_id for d in rest] == ["m4", "m5", "m6"]
            await ack_all(rest)
            await consumer.close()

        self.run(scenario)

    def test_partitions_and_regions_are_isolated(self) -> None:
        async def scenario(bus: Bus) -> None:
            await bus.publish("eu", 3, "eu-3", b"x")
            await bus.publish("us", 2, "us-2", b"x")
            await bus.publish("eu", 2, "eu-2", b"x")
            consumer = await bus.consumer("eu", 2)
            got = await drain(consumer, 1)
            assert [d.msg_id for d in got] == ["eu-2"]
            assert await consumer.fetch(10, timeout=0.3) == []
            await ack_all(got)
            await consumer.close()

        self.run(scenario)

    def test_a_full_backlog_refuses_publishes_until_a_signal_is_acked(self) -> None:
        async def scenario(bus: Bus) -> None:
            for i in range(3):
                await bus.publish("eu", 6, f"m{i}", b"x")
            with pytest.raises(BusBusy):
                await bus.publish("eu", 7, "one-too-many", b"x")
            consumer = await bus.consumer("eu", 6)
            (first, *_) = await drain(consumer, 3)
            await first.ack()
            deadline = time.monotonic() + 3
            while True:  # the server removes an acked signal from the backlog by itself
                try:
                    await bus.publish("eu", 7, "one-too-many", b"x")
                    break
                except BusBusy:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            await consumer.close()

        self.run(scenario, max_backlog=3)

    def test_what_a_subject_cannot_carry_is_refused_by_name(self) -> None:
        async def scenario(bus: Bus) -> None:
            with pytest.raises(ValueError, match=r"region 'eu\.west'"):
                await bus.publish("eu.west", 0, "m", b"x")
            with pytest.raises(ValueError, match="region"):
                await bus.publish("eu *", 0, "m", b"x")
            with pytest.raises(ValueError, match="partition 8"):
                await bus.publish("eu", 8, "m", b"x")
            with pytest.raises(ValueError, match="msg_id"):
                await bus.publish("eu", 0, "", b"x")
            with pytest.raises(ValueError, match="msg_id"):
                await bus.publish("eu", 0, "two\r\nlines", b"x")
            with pytest.raises(ValueError, match="region"):
                await bus.consumer("e>", 0)
            with pytest.raises(ValueError, match="max_in_flight"):
                await bus.consumer("eu", 0, max_in_flight=0)

        self.run(scenario)
