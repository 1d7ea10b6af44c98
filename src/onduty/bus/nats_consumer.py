"""A manager's consumer of one partition on JetStream: a durable pull consumer.

The durable consumer of a region's partition (`<consumer_prefix>-<region>-<partition>`) keeps
the partition's place on the server, so whichever manager holds the partition's lease resumes
where the last one stopped. It filters the partition's subject, acks explicitly, and the
server holds at most `max_ack_pending` (the consumer's `max_in_flight`) deliveries out at once
— across every instance bound to it; each instance also keeps its own count, so a manager
never holds more than its bound. Opening it again with other limits updates the durable (the
last opener's limits hold, as on the memory bus).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import MsgAlreadyAckdError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header

from onduty.bus.base import BusError, BusSettings, BusUnavailable, Delivery
from onduty.bus.partitions import parse_subject, subject_for


class NatsConsumer:
    """A `Consumer` bound to a partition's durable pull consumer. Open it with `open`."""

    def __init__(
        self,
        client: NatsClient,
        subscription: JetStreamContext.PullSubscription,
        settings: BusSettings,
        region: str,
        partition: int,
        max_in_flight: int,
        on_close: Callable[[NatsConsumer], None],
    ) -> None:
        self.region = region
        self.partition = partition
        self.max_in_flight = max_in_flight
        self._client = client
        self._subscription = subscription
        self._settings = settings
        self._on_close = on_close
        self._held: dict[int, Msg] = {}  # stream seq -> the message as last delivered
        self._room = asyncio.Event()
        self._closed = False

    @classmethod
    async def open(
        cls,
        client: NatsClient,
        js: JetStreamContext,
        settings: BusSettings,
        region: str,
        partition: int,
        *,
        max_in_flight: int,
        ack_wait: float,
        on_close: Callable[[NatsConsumer], None],
    ) -> NatsConsumer:
        durable = settings.durable_name(region, partition)
        config = ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject=subject_for(settings.prefix, region, partition),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=max_in_flight,
        )
        try:
            # Creates the durable, or updates its limits when it exists (nats-server 2.9+).
            await js.add_consumer(settings.stream, config)
            subscription = await js.pull_subscribe_bind(durable=durable, stream=settings.stream)
        except TimeoutError:
            raise BusUnavailable(
                f"NATS did not answer about the consumer {durable} within "
                f"{settings.ack_timeout:g} s"
            ) from None
        except NatsError as error:
            raise BusError(f"cannot open the consumer {durable}: {describe(error)}") from None
        return cls(client, subscription, settings, region, partition, max_in_flight, on_close)

    @property
    def in_flight(self) -> int:
        return len(self._held)

    async def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Delivery]:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        if self._closed:
            raise BusError("the consumer is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self._held) >= self.max_in_flight:
            self._room.clear()
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0)):
                    await self._room.wait()
            except TimeoutError:
                return []
        if not self._client.is_connected:
            raise BusUnavailable("not connected to NATS: the consumer waits for the reconnection")
        batch = min(max_messages, self.max_in_flight - len(self._held))
        remaining = deadline - loop.time()
        if remaining <= 0:
            return []
        try:
            messages = await self._subscription.fetch(batch, timeout=remaining)
        except TimeoutError:  # nats-py raises its own subclass, or asyncio's, when none came
            return []
        except NatsError as error:
            if not self._client.is_connected:
                raise BusUnavailable(f"lost NATS while fetching: {describe(error)}") from None
            raise BusError(f"fetching from the consumer failed: {describe(error)}") from None
        return [self._deliver(message) for message in messages]

    def _deliver(self, message: Msg) -> Delivery:
        metadata = message.metadata
        region, partition = parse_subject(self._settings.prefix, message.subject)
        # A redelivery of a signal this consumer still holds replaces it: counted once.
        self._held[metadata.sequence.stream] = message
        return Delivery(
            region=region,
            partition=partition,
            msg_id=(message.headers or {}).get(Header.MSG_ID, ""),
            payload=message.data,
            stream_seq=metadata.sequence.stream,
            deliveries=metadata.num_delivered,
            settler=self,
        )

    async def settle(self, delivery: Delivery, delay: float | None) -> None:
        message = self._held.pop(delivery.stream_seq, None)
        if message is None:
            return  # settled already, or handed back when this consumer closed
        self._room.set()
        try:
            if delay is None:
                await message.ack()
            else:
                await message.nak(delay=delay or None)
        except MsgAlreadyAckdError:
            pass
        except NatsError as error:
            # Unsettled on the server, the signal comes again after ack_wait.
            raise BusUnavailable(f"could not settle {delivery.msg_id}: {describe(error)}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        if self._client.is_closed:
            return
        for message in self._held.values():
            try:
                await message.nak()
            except NatsError:
                break  # the connection went: the server redelivers after ack_wait
        self._held.clear()
        with contextlib.suppress(NatsError):
            await self._subscription.unsubscribe()


def describe(error: BaseException) -> str:
    """An error as a clause of a message: its type, and its text when it has one (many of
    nats-py's errors have none)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
