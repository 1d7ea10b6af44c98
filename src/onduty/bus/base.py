"""The bus at its seams: what ingest publishes through, what a manager consumes from.

Ingest publishes a signal and answers `202` only once `publish` has returned: the bus then
holds the signal durably. A publish fails in one of two ways the caller must tell apart:
`BusBusy` (the bus is working but full: shed load, HTTP `429`) and `BusUnavailable` (the
server cannot be reached: HTTP `503` with `Retry-After`, while the bus reconnects by itself).
A retried publish carries the same `msg_id`, and the bus stores it once.

A manager consumes one partition with explicit acks: a `Delivery` it does not ack (its process
died, it closed its consumer, it asked for a redelivery) comes again, flagged as redelivered.
A consumer never holds more than its `max_in_flight` unacknowledged deliveries, so a slow
manager stops taking work; the backlog then grows to the stream's bound and publishers see
`BusBusy`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from onduty.bus.partitions import DEFAULT_PREFIX, check_prefix, check_token


class BusError(Exception):
    """The bus refused or failed an operation."""


class BusBusy(BusError):
    """The bus works but is full for now (its window of pending acks, or its backlog): shed
    load and let the sender retry later."""


class BusUnavailable(BusError):
    """The bus's server cannot be reached now. The bus reconnects by itself; `retry_after`
    (whole seconds) is a fair wait before a retry."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class BusSettings:
    """How a bus is laid out and how its publisher waits. Shared by every backend, so that a
    test or a single node on the memory bus behaves as the fleet does on NATS."""

    partitions: int = 16
    prefix: str = DEFAULT_PREFIX
    """Subjects are `<prefix>.<region>.<partition>`."""
    stream: str = "ONDUTY_SIGNALS"
    consumer_prefix: str = "onduty"
    """A partition's durable consumer is `<consumer_prefix>-<region>-<partition>`."""
    duplicate_window: float = 120.0
    """Seconds during which a publish with a `msg_id` already seen is stored only once."""
    max_backlog: int = 1_000_000
    """Signals the stream holds (published, not yet acknowledged by a manager) before a publish
    is refused with `BusBusy`."""
    publish_window: int = 4096
    """Publishes whose acks may be pending at once: the pipeline depth of a publisher."""
    window_wait: float = 0.05
    """Seconds a publish waits for room in a full window before it raises `BusBusy`."""
    ack_timeout: float = 5.0
    """Seconds a publish (or a request to the server) waits for its answer before it raises
    `BusUnavailable`."""
    connect_timeout: float = 2.0
    """Seconds opening the bus tries to reach its server before it raises `BusUnavailable`."""
    reconnect_wait: float = 0.5
    """Seconds between two attempts to reconnect to a server that went away."""
    replicas: int = 1
    """Copies the server keeps of the stream (3 on a three-node JetStream cluster)."""

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        check_token("stream", self.stream)
        check_token("consumer_prefix", self.consumer_prefix)
        for name in ("partitions", "max_backlog", "publish_window", "replicas"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "duplicate_window",
            "window_wait",
            "ack_timeout",
            "connect_timeout",
            "reconnect_wait",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")

    def durable_name(self, region: str, partition: int) -> str:
        """The name of the durable consumer of `region`'s `partition`."""
        return f"{self.consumer_prefix}-{check_token('region', region)}-{partition}"


@dataclass(frozen=True)
class PublishAck:
    """The bus's receipt: the signal is stored as `seq` of `stream`. `duplicate` is true when
    it was stored already by an earlier publish with the same `msg_id` (and `seq` is that
    earlier one's)."""

    stream: str
    seq: int
    duplicate: bool = False


class Publisher(Protocol):
    """What ingest publishes signals through."""

    async def send(
        self, region: str, partition: int, msg_id: str, payload: bytes
    ) -> Awaitable[PublishAck]:
        """Put a signal on the wire and return its pending ack, without waiting for it.

        Returns once the signal has a place in the window of pending acks; awaiting the result
        gives the `PublishAck` once the signal is durable (or raises as `publish` does). Signals
        sent one after the other by one caller are stored in that order. Raises `BusBusy` when
        the window stays full for `window_wait`, `BusUnavailable` when the server is away."""
        ...

    async def publish(self, region: str, partition: int, msg_id: str, payload: bytes) -> PublishAck:
        """Publish a signal and return once it is durable. Raises `BusBusy` when the window or
        the backlog is full, `BusUnavailable` when the server is away or does not answer within
        `ack_timeout`, `ValueError` for a region, partition or msg_id the bus cannot carry."""
        ...


class Settler(Protocol):
    """What settles a delivery: the consumer that handed it out."""

    async def settle(self, delivery: Delivery, delay: float | None) -> None:
        """Acknowledge `delivery` (when `delay` is None) or hand it back for redelivery after
        `delay` seconds."""
        ...


@dataclass(frozen=True, eq=False)
class Delivery:
    """A signal handed to a consumer, to be acknowledged once it is processed.

    `stream_seq` is its place in the stream (the same on every redelivery), `deliveries` how
    many times it has been handed out, this time included. An ack is sent, not confirmed: when
    it is lost the signal comes again, so a consumer dedupes by `msg_id`."""

    region: str
    partition: int
    msg_id: str
    payload: bytes
    stream_seq: int
    deliveries: int
    settler: Settler = field(repr=False)

    @property
    def redelivered(self) -> bool:
        return self.deliveries > 1

    async def ack(self) -> None:
        """The signal is processed: never deliver it again."""
        await self.settler.settle(self, None)

    async def nak(self, delay: float = 0.0) -> None:
        """The signal was not processed: deliver it again after `delay` seconds."""
        if delay < 0:
            raise ValueError(f"delay must be zero or more seconds, got {delay}")
        await self.settler.settle(self, delay)


class Consumer(Protocol):
    """A manager's view of one partition of one region: deliveries in stream order."""

    region: str
    partition: int
    max_in_flight: int

    @property
    def in_flight(self) -> int:
        """Deliveries handed out by this consumer and not yet acked or nak'ed."""
        ...

    async def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Up to `max_messages` deliveries, fewer when only fewer would keep `in_flight` within
        `max_in_flight`; waits up to `timeout` seconds for the first and returns [] when none
        came. Raises `BusUnavailable` when the server is away."""
        ...

    async def close(self) -> None:
        """Stop consuming. What this consumer holds unacknowledged is handed back at once, so
        the partition's next consumer gets it without waiting for `ack_wait`."""
        ...


class Consumers(Protocol):
    """What a manager worker opens consumers through."""

    async def consumer(
        self,
        region: str,
        partition: int,
        *,
        max_in_flight: int = 256,
        ack_wait: float = 30.0,
    ) -> Consumer:
        """A consumer of `region`'s `partition`, resuming where the partition's durable
        consumer stands. A delivery not settled within `ack_wait` seconds is delivered again."""
        ...


class Bus(Publisher, Consumers, Protocol):
    """Both sides of one bus, as `open_bus` returns it."""

    settings: BusSettings

    async def close(self) -> None:
        """Release the bus's connection. Pending acks fail with `BusUnavailable`."""
        ...


def check_msg_id(msg_id: str) -> str:
    """`msg_id` when it can travel as a header value; otherwise a ValueError."""
    if not (0 < len(msg_id) <= 256 and msg_id.isascii() and msg_id.isprintable()):
        raise ValueError(f"msg_id {msg_id!r}: use 1 to 256 printable ASCII characters")
    return msg_id


def check_consumer_limits(max_in_flight: int, ack_wait: float) -> None:
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
    if not ack_wait > 0:
        raise ValueError(f"ack_wait must be a positive number of seconds, got {ack_wait}")
