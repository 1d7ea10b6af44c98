"""The in-process bus: the shared contract, then what is its own."""

from __future__ import annotations

import asyncio

import pytest

from onduty.bus import Bus, BusError, BusSettings, MemoryBus, open_bus
from tests.bus.contract import BusContract, drain, unique_settings


class TestMemoryBus(BusContract):
    async def open(self, settings: BusSettings) -> Bus:
        return MemoryBus(settings)


def test_open_bus_memory_gives_a_memory_bus() -> None:
    async def main() -> None:
        bus = await open_bus("memory")
        assert isinstance(bus, MemoryBus)
        assert bus.settings == BusSettings()
        await bus.close()

    asyncio.run(main())


def test_a_msg_id_is_stored_again_once_its_duplicate_window_passed() -> None:
    async def main() -> None:
        bus = MemoryBus(unique_settings(duplicate_window=0.2))
        first = await bus.publish("eu", 0, "m", b"x")
        assert (await bus.publish("eu", 0, "m", b"x")).duplicate
        await asyncio.sleep(0.3)
        later = await bus.publish("eu", 0, "m", b"x")
        assert not later.duplicate and later.seq == first.seq + 1
        await bus.close()

    asyncio.run(main())


def test_a_closed_bus_refuses_work_and_wakes_a_waiting_fetch() -> None:
    async def main() -> None:
        bus = MemoryBus()
        consumer = await bus.consumer("eu", 0)
        waiting = asyncio.ensure_future(consumer.fetch(1, timeout=30))
        await asyncio.sleep(0.05)
        await bus.close()
        with pytest.raises(BusError, match="closed"):
            await asyncio.wait_for(waiting, 1)
        with pytest.raises(BusError, match="closed"):
            await bus.publish("eu", 0, "m", b"x")
        with pytest.raises(BusError, match="closed"):
            await bus.consumer("eu", 0)

    asyncio.run(main())


def test_a_fetch_waits_for_a_publish() -> None:
    async def main() -> None:
        bus = MemoryBus()
        consumer = await bus.consumer("eu", 0)
        waiting = asyncio.ensure_future(drain(consumer, 1, timeout=5))
        await asyncio.sleep(0.05)
        await bus.publish("eu", 0, "late", b"x")
        got = await asyncio.wait_for(waiting, 1)
        assert [d.msg_id for d in got] == ["late"]
        await bus.close()

    asyncio.run(main())
