"""The door of a fleet node: inputs are published to the bus for the partitions they belong
to, and accepted once the bus has stored every one of them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Sequence

from onduty.bus import Bus, BusBusy, BusUnavailable, PublishAck
from onduty.cells.routing import Router, Unroutable
from onduty.cells.runner import LoopThread
from onduty.cells.wire import encode_input
from onduty.events import SignalReceived
from onduty.gateway import Refusal
from onduty.runtime import Input

logger = logging.getLogger("onduty.cells")


def with_delivery_id(item: Input, msg_id: str) -> Input:
    """A signal without a delivery id of its sender's gets the bus message's, so that a
    redelivery of the message is recognised by the core and not taken twice."""
    body = item.body
    if isinstance(body, SignalReceived) and body.delivery_id is None:
        return Input(
            body.model_copy(update={"delivery_id": f"bus:{msg_id}"}),
            stream=item.stream,
            actor=item.actor,
            ts=item.ts,
        )
    return item


class BusGateway:
    def __init__(self, bus: Bus, runner: LoopThread, router: Router, region: str) -> None:
        self._bus, self._runner, self._router, self._region = bus, runner, router, region
        self._pending = 0
        self._unavailable = False

    @property
    def pending(self) -> int:
        return self._pending

    async def submit(self, inputs: Sequence[Input]) -> Refusal | None:
        if not inputs:
            return None
        try:
            messages = []
            for item in inputs:
                msg_id = uuid.uuid4().hex
                routed = with_delivery_id(item, msg_id)
                payload = encode_input(routed)
                partitions = self._router.partitions_of(routed)
                for partition in partitions:
                    suffix = f"-{partition}" if len(partitions) > 1 else ""
                    messages.append((partition, msg_id + suffix, payload))
        except Unroutable as error:
            return Refusal(404, str(error))
        self._pending += len(messages)
        try:
            await self._runner.run(self._publish(messages))
        except BusBusy:
            return Refusal(429, "the bus is full; retry shortly")
        except BusUnavailable as error:
            if not self._unavailable:  # once per outage, not once per request
                logger.warning("ingest answers 503 while the bus is unavailable: %s", error)
            self._unavailable = True
            return Refusal(503, "the bus is unavailable; retry", error.retry_after)
        finally:
            self._pending -= len(messages)
        if self._unavailable:
            logger.warning("the bus is available again: ingest accepts signals")
            self._unavailable = False
        return None

    async def _publish(self, messages: list[tuple[int, str, bytes]]) -> None:
        """Send every message into the bus's window of pending acks, in order, then wait for
        all of them: one request costs one round of acks, not one per message."""
        acks: list[Awaitable[PublishAck]] = []
        try:
            for partition, msg_id, payload in messages:
                acks.append(await self._bus.send(self._region, partition, msg_id, payload))
        finally:
            results = await asyncio.gather(*acks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
