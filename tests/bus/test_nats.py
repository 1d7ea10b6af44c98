"""The bus on NATS JetStream: the shared contract on the real server, then what is its own.

The contract runs against the server scripts/services.sh starts on 127.0.0.1:4222; a test that
cannot reach it fails. The tests that stall or restart a server start a private one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType
from nats.js.errors import NotFoundError

from onduty.bus import Bus, BusBusy, BusError, BusSettings, BusUnavailable, open_bus
from onduty.bus.nats import NatsBus
from tests.bus.contract import BusContract, ack_all, consume, drain, unique_settings
from tests.bus.nats_server import SHARED_URL, PrivateNatsServer, free_port


async def delete_stream(name: str, url: str = SHARED_URL) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().delete_stream(name)
    except NotFoundError:
        pass
    finally:
        await client.close()


class TestNatsBus(BusContract):
    async def open(self, settings: BusSettings) -> Bus:
        return await open_bus(SHARED_URL, settings)

    async def discard(self, settings: BusSettings) -> None:
        await delete_stream(settings.stream)


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[PrivateNatsServer]:
    server = PrivateNatsServer(tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_the_stream_and_consumers_are_made_as_configured_and_reused() -> None:
    settings = unique_settings(duplicate_window=60, max_backlog=1000)

    async def main() -> None:
        first = await open_bus(SHARED_URL, settings)
        second = await open_bus(SHARED_URL, settings)  # finds the stream the first one made
        client = await nats.connect(SHARED_URL)
        try:
            await first.publish("eu", 3, "m", b"x")
            assert (await second.publish("eu", 3, "m", b"x")).duplicate
            consumer = await second.consumer("eu", 3, max_in_flight=7, ack_wait=9)
            js = client.jetstream()
            stream = await js.stream_info(settings.stream)
            assert stream.config.subjects == [f"{settings.prefix}.>"]
            assert stream.config.retention == RetentionPolicy.WORK_QUEUE
            assert stream.config.storage == StorageType.FILE
            assert stream.config.discard == DiscardPolicy.NEW
            assert (stream.config.duplicate_window, stream.config.max_msgs) == (60, 1000)
            assert stream.state.messages == 1
            durable = await js.consumer_info(settings.stream, f"{settings.consumer_prefix}-eu-3")
            assert durable.config.filter_subject == f"{settings.prefix}.eu.3"
            assert (durable.config.max_ack_pending, durable.config.ack_wait) == (7, 9)
            await consumer.close()
        finally:
            await client.close()
            await first.close()
            await second.close()
            await delete_stream(settings.stream)

    asyncio.run(main())


def test_a_stream_that_takes_other_subjects_is_not_used() -> None:
    settings = unique_settings()

    async def main() -> None:
        client = await nats.connect(SHARED_URL)
        try:
            elsewhere = f"elsewhere_{settings.stream}.>"
            await client.jetstream().add_stream(name=settings.stream, subjects=[elsewhere])
            with pytest.raises(BusError, match=rf"do not include {settings.prefix}\.>"):
                await open_bus(SHARED_URL, settings)
        finally:
            await client.close()
            await delete_stream(settings.stream)

    asyncio.run(main())


def test_the_window_pipelines_publishes() -> None:
    settings = unique_settings(partitions=4, publish_window=512, window_wait=5.0)
    count = 5000

    async def main() -> None:
        bus = await open_bus(SHARED_URL, settings)
        assert isinstance(bus, NatsBus)
        try:
            started = time.perf_counter()
            pending, peak = [], 0
            for i in range(count):
                pending.append(await bus.send("eu", i % 4, f"m{i}", b"x" * 200))
                peak = max(peak, bus.pending_acks)
            acks = [await ack for ack in pending]
            elapsed = time.perf_counter() - started
            # A measurement for the reader, not an assertion: benchmarks are not tests.
            print(f"{count} publishes, window {settings.publish_window}: {count / elapsed:,.0f}/s")
            assert 1 < peak <= settings.publish_window
            assert [ack.seq for ack in acks] == sorted({ack.seq for ack in acks})
            for partition in range(4):
                consumer = await bus.consumer("eu", partition, max_in_flight=500)
                got = await consume(consumer, count // 4)
                assert [d.msg_id for d in got] == [f"m{i}" for i in range(partition, count, 4)]
                await consumer.close()
        finally:
            await bus.close()
            await delete_stream(settings.stream)

    asyncio.run(main())


def test_a_server_that_does_not_listen_is_unavailable_at_once() -> None:
    url = f"nats://127.0.0.1:{free_port()}"

    async def main() -> None:
        started = time.monotonic()
        reach = r"cannot reach NATS at nats://127\.0\.0\.1"
        with pytest.raises(BusUnavailable, match=reach) as info:
            await open_bus(url, BusSettings(connect_timeout=0.5))
        assert time.monotonic() - started < 3
        assert info.value.retry_after >= 1

    asyncio.run(main())


def test_a_server_without_jetstream_is_named_as_such(tmp_path: Path) -> None:
    server = PrivateNatsServer(tmp_path, jetstream=False)
    server.start()
    try:
        with pytest.raises(BusUnavailable, match=r"JetStream enabled, -js\?"):
            asyncio.run(open_bus(server.url, BusSettings(ack_timeout=1.0)))
    finally:
        server.kill()


def test_a_stalled_server_fills_the_window_and_its_acks_time_out(
    private_server: PrivateNatsServer,
) -> None:
    settings = unique_settings(publish_window=4, window_wait=0.1, ack_timeout=1.0)

    async def main() -> None:
        bus = await open_bus(private_server.url, settings)
        assert isinstance(bus, NatsBus)
        try:
            await bus.publish("eu", 0, "before", b"x")
            private_server.pause()
            try:
                pending = [await bus.send("eu", 0, f"m{i}", b"x") for i in range(4)]
                assert bus.pending_acks == 4
                started = time.monotonic()
                with pytest.raises(BusBusy, match="4 publishes already await their acks"):
                    await bus.send("eu", 0, "m4", b"x")
                assert time.monotonic() - started < 1
                for ack in pending:
                    with pytest.raises(BusUnavailable, match="did not ack within 1 s"):
                        await ack
                assert bus.pending_acks == 0
            finally:
                private_server.resume()
            # The senders retry with the same ids: each signal is stored once.
            for i in range(5):
                await bus.publish("eu", 0, f"m{i}", b"x")
            consumer = await bus.consumer("eu", 0)
            got = await drain(consumer, 6)
            assert [d.msg_id for d in got] == ["before", "m0", "m1", "m2", "m3", "m4"]
            assert await consumer.fetch(10, timeout=0.3) == []
            await ack_all(got)
        finally:
            await bus.close()

    asyncio.run(main())


def test_publishing_under_load_survives_a_server_restart(
    private_server: PrivateNatsServer,
) -> None:
    settings = unique_settings(partitions=4, ack_timeout=2.0, reconnect_wait=0.2)
    total, workers = 3000, 8

    async def main() -> None:
        bus = await open_bus(private_server.url, settings)
        acked: list[str] = []
        refusals: list[BusUnavailable] = []

        async def publish_until_acked(i: int) -> None:
            # What ingest's client does: retry a 503 with the same id until it is a 202.
            while True:
                try:
                    await bus.publish("eu", i % 4, f"sig-{i}", b"x" * 100)
                    acked.append(f"sig-{i}")
                    return
                except BusUnavailable as refusal:
                    refusals.append(refusal)
                    await asyncio.sleep(0.05)

        async def worker(first: int) -> None:
            for i in range(first, total, workers):
                await publish_until_acked(i)

        try:
            consumer = await bus.consumer("eu", 0)
            load = asyncio.gather(*(worker(w) for w in range(workers)))
            while len(acked) < total // 4:
                await asyncio.sleep(0.005)
            private_server.kill()
            deadline = time.monotonic() + 5
            while not refusals:
                assert time.monotonic() < deadline, "no publish failed while the server was down"
                await asyncio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(BusUnavailable):
                await bus.publish("eu", 1, "while-down", b"x")
            with pytest.raises(BusUnavailable):
                await consumer.fetch(1, timeout=0.5)
            assert time.monotonic() - started < 1  # answered at once, not after a timeout
            assert all(refusal.retry_after >= 1 for refusal in refusals)
            private_server.start()
            await asyncio.wait_for(load, 30)
            assert sorted(acked) == sorted(f"sig-{i}" for i in range(total))
            # Every acknowledged signal is in the stream once, the consumer opened before the
            # restart included.
            seen = await consume(consumer, total // 4)
            for partition in (1, 2, 3):
                other = await bus.consumer("eu", partition)
                seen += await consume(other, total // 4)
                assert await other.fetch(10, timeout=0.2) == []
            assert await consumer.fetch(10, timeout=0.2) == []
            assert sorted(d.msg_id for d in seen) == sorted(acked)
        finally:
            await bus.close()

    asyncio.run(main())
