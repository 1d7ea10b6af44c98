"""The bus between ingest and the managers: the protocols, and the memory and NATS backends."""

from __future__ import annotations

from onduty.bus.base import (
    Bus,
    BusBusy,
    BusError,
    BusSettings,
    BusUnavailable,
    Consumer,
    Consumers,
    Delivery,
    PublishAck,
    Publisher,
)
from onduty.bus.memory import MemoryBus
from onduty.bus.partitions import group_key_of, partition_of, subject_for


async def open_bus(url: str, settings: BusSettings | None = None) -> Bus:
    """Open a bus by URL: `memory` (in this process), or `nats://HOST:PORT` — several,
    comma-separated, for the servers of one cluster. Raises `BusError` for any other URL,
    `BusUnavailable` when no NATS server answers."""
    if url == "memory":
        return MemoryBus(settings)
    servers = [server.strip() for server in url.split(",")]
    if all(_is_server(server) for server in servers):
        from onduty.bus.nats import NatsBus

        return await NatsBus.connect(servers, settings)
    raise BusError(
        f"bus {url!r}: use 'memory' (one process) or nats://HOST:PORT (several, "
        "comma-separated, for a cluster)"
    )


def _is_server(url: str) -> bool:
    scheme, separator, address = url.partition("://")
    return scheme == "nats" and bool(separator) and bool(address)


__all__ = [
    "Bus",
    "BusBusy",
    "BusError",
    "BusSettings",
    "BusUnavailable",
    "Consumer",
    "Consumers",
    "Delivery",
    "MemoryBus",
    "PublishAck",
    "Publisher",
    "group_key_of",
    "open_bus",
    "partition_of",
    "subject_for",
]
