"""One partition run by the manager that holds its lease: its log, its core, its consumer.

Starting a cell folds the partition's log (its newest trusted snapshot and the events after
it) before anything is consumed, so the new owner decides from everything the last one
recorded. Deliveries are handed to the core loop in stream order and acknowledged only once
the log has committed them: a manager that dies before the commit leaves them to be delivered
again, and the core recognises a redelivered signal by its delivery id. Every append is fenced
by the lease: a cell whose lease was taken over cannot write another event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future

from onduty.bus import BusUnavailable, Consumers, Delivery
from onduty.cells.runner import LoopThread
from onduty.cells.wire import UndecodableMessage, decode_input
from onduty.events import Payload
from onduty.log import EventLog
from onduty.loop import CoreLoop, Draining, record
from onduty.runtime import RecoveryReport, Runtime

logger = logging.getLogger("onduty.cells")

Record = Callable[[Payload, str], None]
OpenRuntime = Callable[[EventLog, Record], tuple[Runtime, RecoveryReport]]
"""Fold a partition's log into a runtime whose outcomes (of actions, checks, notifications)
are recorded through the given callback."""
FETCH = 256  # deliveries taken from the bus at a time
BACKOFF_S = 0.5  # before fetching again after the bus or the core refused


class PartitionCell:
    def __init__(
        self,
        partition: int,
        region: str,
        log: EventLog,
        open_runtime: OpenRuntime,
        bus: Consumers,
        runner: LoopThread,
        *,
        max_in_flight: int = 1_000,
        ack_wait: float = 30.0,
        max_pending: int = 20_000,
    ) -> None:
        self.partition, self.region, self.log = partition, region, log
        self._open_runtime, self._bus, self._runner = open_runtime, bus, runner
        self._max_in_flight, self._ack_wait, self._max_pending = (
            max_in_flight,
            ack_wait,
            max_pending,
        )
        self.runtime: Runtime | None = None
        self.loop: CoreLoop | None = None
        self.recovery: RecoveryReport | None = None
        self._consuming: Future[None] | None = None
        self._stopping = False
        self._broken = False  # the core refused inputs: this cell takes no more
        self.consumed = 0
        """Deliveries taken and committed (redeliveries included)."""

    def start(self) -> None:
        """Fold the partition's log, start its core and consume its deliveries."""
        runtime, self.recovery = self._open_runtime(self.log, self.record)
        self.runtime = runtime
        self.loop = CoreLoop(runtime, max_pending=self._max_pending)
        runtime.send_outcomes_to(self.record)
        self.loop.start()
        self._consuming = self._runner.submit(self._consume())
        logger.info(
            "partition %s: %s events (snapshot at %s, %s folded); consuming",
            self.partition,
            self.recovery.head_seq,
            self.recovery.snapshot_seq,
            self.recovery.folded,
        )

    @property
    def failed(self) -> bool:
        """Its core stopped by itself (the log refused an append), not by `stop`."""
        failure = self.loop is not None and self.loop.failure is not None
        return (failure or self._broken) and not self._stopping

    @property
    def running(self) -> bool:
        return self.loop is not None and self.loop.running and not self._stopping

    def record(self, body: Payload, stream: str) -> None:
        """An outcome of this cell's actions (or notifications) joins its own core's queue;
        recorded directly when the queue is full or stopping (never dropped)."""
        record(self.loop, self.runtime, body, stream)

    async def _consume(self) -> None:
        consumer = None
        try:
            while not self._stopping and not self._broken:
                if consumer is None:
                    try:
                        consumer = await self._bus.consumer(
                            self.region,
                            self.partition,
                            max_in_flight=self._max_in_flight,
                            ack_wait=self._ack_wait,
                        )
                    except BusUnavailable as error:
                        logger.warning("partition %s: %s", self.partition, error)
                        await asyncio.sleep(BACKOFF_S)
                        continue
                try:
                    deliveries = await consumer.fetch(FETCH, timeout=0.5)
                except BusUnavailable as error:
                    logger.warning("partition %s: %s", self.partition, error)
                    await asyncio.sleep(BACKOFF_S)
                    continue
                if deliveries:
                    await self._take(deliveries)
        finally:
            if consumer is not None:
                await consumer.close()  # what is unacknowledged goes back to the bus at once

    async def _take(self, deliveries: list[Delivery]) -> None:
        """Hand the deliveries to the core in order; ack each once committed. One that does
        not decode is acknowledged and reported (redelivering it would never help)."""
        inputs, taken = [], []
        for delivery in deliveries:
            try:
                inputs.append(decode_input(delivery.payload))
                taken.append(delivery)
            except UndecodableMessage as error:
                logger.error(
                    "partition %s: message %s dropped: %s", self.partition, delivery.msg_id, error
                )
                await delivery.ack()
        loop = self.loop
        if not inputs or loop is None:
            return
        try:
            future = loop.offer(inputs)
        except Draining:
            future = None
        if future is None:  # the core is full or stopping: the bus keeps them for later
            for delivery in taken:
                await delivery.nak(BACKOFF_S)
            return
        try:
            await asyncio.wrap_future(future)
        except Exception as error:  # the log refused (a lost lease): never ack, stop taking
            logger.error("partition %s: inputs not committed: %s", self.partition, error)
            self._broken = True
            return
        for delivery in taken:
            await delivery.ack()
        self.consumed += len(taken)

    def stop(self, *, graceful: bool = True) -> None:
        """Stop consuming (what is not acknowledged returns to the bus), stop the core and,
        when `graceful` (the lease is still ours), snapshot the state for the next owner."""
        self._stopping = True
        if self._consuming is not None:
            try:
                self._consuming.result(timeout=10)
            except Exception as error:
                logger.warning("partition %s: consumer stopped: %s", self.partition, error)
        if self.loop is not None:
            self.loop.stop()
        loop, runtime = self.loop, self.runtime
        if graceful and runtime is not None and loop is not None and loop.failure is None:
            try:
                runtime.snapshot_now()
            except Exception as error:
                logger.warning("partition %s: no snapshot at stop: %s", self.partition, error)
        if self.runtime is not None:
            self.runtime.flush_snapshots()
        self.log.close()
