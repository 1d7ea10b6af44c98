"""The bus on NATS JetStream: signals in one stream, a durable pull consumer per partition.

Publishing is pipelined. Each publish goes out with a reply subject of its own under one inbox
this bus subscribes to, and its pending ack is a future resolved when JetStream answers there;
a semaphore bounds how many are pending (`publish_window`). Awaiting each ack before sending
the next leaves the connection idle for a round trip per signal: on one connection here that
managed ~7,000 signals/s, and a window of 512 pending acks ~50,000.

nats-py 2.16 offers `JetStreamContext.publish_async` with such a window, but it cannot serve
here: a pending ack it holds never times out, and one whose publish failed on the wire (or
whose connection dropped) keeps its place in the window for good. So the window is built
here, with what a caller of ingest needs: a pending ack fails with `BusUnavailable` when the
connection drops or no answer comes within `ack_timeout`, and a full window raises `BusBusy`
after `window_wait`. The client reconnects by itself, forever; a publish while it is away
fails at once with `BusUnavailable`. A publish retried with its `msg_id` is stored once
(JetStream dedupes within `duplicate_window`), so nothing acknowledged is lost and a signal
whose ack was lost is not stored twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError, NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, Header, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from onduty.bus.base import (
    BusBusy,
    BusError,
    BusSettings,
    BusUnavailable,
    Consumer,
    PublishAck,
    check_consumer_limits,
    check_msg_id,
)
from onduty.bus.nats_consumer import NatsConsumer, describe
from onduty.bus.partitions import check_partition, subject_for

logger = logging.getLogger("onduty.bus")

_STREAM_NAME_IN_USE = 10058
_STORE_FULL = 10077  # with discard=new: "maximum messages exceeded" (or bytes)
_NO_RESPONDERS = "503"


class NatsBus:
    """A `Bus` on a NATS JetStream server (or cluster). Open it with `NatsBus.connect`."""

    def __init__(self, servers: list[str], settings: BusSettings) -> None:
        self.settings = settings
        self.servers = servers
        self._client = NatsClient()
        self._js: JetStreamContext = self._client.jetstream(timeout=settings.ack_timeout)
        self._inbox = ""
        self._window = asyncio.Semaphore(settings.publish_window)
        self._pending: dict[str, tuple[asyncio.Future[PublishAck], asyncio.TimerHandle]] = {}
        self._last_token = 0
        self._consumers: set[NatsConsumer] = set()
        self._last_error: BaseException | None = None
        self._closed = False
        self._retry_after = max(1, math.ceil(settings.reconnect_wait))

    @classmethod
    async def connect(cls, servers: list[str], settings: BusSettings | None = None) -> NatsBus:
        """Connect, make sure the stream is there (creating it when missing), and subscribe to
        this bus's acks. Raises `BusUnavailable` when no server (or no JetStream) answers
        within `connect_timeout`, `BusError` when the stream cannot be set up."""
        bus = cls(servers, settings or BusSettings())
        try:
            await bus._connect()
            await bus._ensure_stream()
            bus._inbox = bus._client.new_inbox()
            await bus._client.subscribe(f"{bus._inbox}.*", cb=bus._on_ack)
        except BaseException:
            bus._closed = True
            await bus._client.close()
            raise
        return bus

    async def _connect(self) -> None:
        # nats-py annotates its waits as whole seconds but sleeps for any float; a dict keeps
        # mypy from rounding 0.5 s up.
        options: dict[str, Any] = {
            "servers": self.servers,
            "name": "onduty",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # a bus that gave up would need a restart to recover
            "connect_timeout": self.settings.connect_timeout,
            "reconnect_time_wait": self.settings.reconnect_wait,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
        }
        try:
            # With reconnects unbounded, nats-py retries the first connection forever too.
            async with asyncio.timeout(self.settings.connect_timeout):
                await self._client.connect(**options)
        except (TimeoutError, OSError, NatsError) as error:
            cause = self._last_error or error
            raise self._unavailable(
                f"cannot reach NATS at {', '.join(self.servers)} within "
                f"{self.settings.connect_timeout:g} s ({describe(cause)})"
            ) from None

    async def _ensure_stream(self) -> None:
        settings = self.settings
        wanted = f"{settings.prefix}.>"
        config = StreamConfig(
            name=settings.stream,
            subjects=[wanted],
            # An acked signal is in the event log: the stream holds only the work left to do.
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=settings.duplicate_window,
            max_msgs=settings.max_backlog,
            discard=DiscardPolicy.NEW,  # a full backlog refuses new signals, never drops old ones
            num_replicas=settings.replicas,
        )
        try:
            try:
                info = await self._js.stream_info(settings.stream)
            except NotFoundError:
                try:
                    await self._js.add_stream(config)
                    return
                except APIError as error:
                    if error.err_code != _STREAM_NAME_IN_USE:  # another node created it first
                        raise
                    info = await self._js.stream_info(settings.stream)
        except TimeoutError:
            raise self._unavailable(
                f"NATS at {', '.join(self.servers)} did not answer about the stream "
                f"{settings.stream} within {settings.ack_timeout:g} s (is JetStream enabled?)"
            ) from None
        except (NoRespondersError, ServiceUnavailableError):
            raise self._unavailable(
                f"JetStream does not answer at {', '.join(self.servers)} "
                "(is the server run with JetStream enabled, -js?)"
            ) from None
        except NatsError as error:
            raise BusError(
                f"cannot set up the stream {settings.stream}: {describe(error)}"
            ) from None
        subjects = info.config.subjects or []
        if wanted not in subjects and ">" not in subjects:
            raise BusError(
                f"the stream {settings.stream} exists with subjects {subjects}, "
                f"which do not include {wanted}"
            )

    def _unavailable(self, message: str) -> BusUnavailable:
        return BusUnavailable(message, retry_after=self._retry_after)

    async def send(
        self, region: str, partition: int, msg_id: str, payload: bytes
    ) -> Awaitable[PublishAck]:
        subject = subject_for(
            self.settings.prefix, region, check_partition(partition, self.settings.partitions)
        )
        check_msg_id(msg_id)
        if self._closed:
            raise BusError("the NATS bus is closed")
        if not self._client.is_connected:  # fail fast rather than wait for room first
            raise self._unavailable(f"not connected to NATS at {', '.join(self.servers)}")
        if self._window.locked():
            try:
                async with asyncio.timeout(self.settings.window_wait):
                    await self._window.acquire()
            except TimeoutError:
                raise BusBusy(
                    f"{self.settings.publish_window} publishes already await their acks"
                ) from None
        else:
            await self._window.acquire()
        # Checked after any wait for room, with no await before the publish below: a signal
        # never goes to nats-py's reconnect buffer, where its fate would be unknown.
        if not self._client.is_connected:
            self._window.release()
            raise self._unavailable(f"not connected to NATS at {', '.join(self.servers)}")
        loop = asyncio.get_running_loop()
        self._last_token += 1
        token = str(self._last_token)
        ack: asyncio.Future[PublishAck] = loop.create_future()
        timer = loop.call_later(self.settings.ack_timeout, self._expire, token)
        self._pending[token] = (ack, timer)
        # A caller that stops waiting (cancels the ack) gives its place back too.
        ack.add_done_callback(lambda _: self._forget(token))
        try:
            await self._client.publish(
                subject, payload, reply=f"{self._inbox}.{token}", headers={Header.MSG_ID: msg_id}
            )
        except MaxPayloadError:
            ack.cancel()
            raise BusError(
                f"a signal of {len(payload)} bytes is above the server's limit of "
                f"{self._client.max_payload} bytes"
            ) from None
        except (NatsError, OSError) as error:
            ack.cancel()
            raise self._unavailable(f"NATS refused the publish: {describe(error)}") from None
        return ack

    @property
    def pending_acks(self) -> int:
        """Publishes sent and not yet answered: how full the window is."""
        return len(self._pending)

    def connection_problem(self) -> str | None:
        """Why this bus cannot reach NATS now (None while connected); cheap, from any thread:
        what the readiness probe reports."""
        client = self._client
        if self._closed or client.is_closed:
            return "the connection to NATS is closed"
        if client.is_connected:
            return None
        where = ", ".join(self.servers)
        if client.is_reconnecting:
            why = f" ({describe(self._last_error)})" if self._last_error is not None else ""
            return f"reconnecting to NATS at {where}{why}"
        return f"not connected to NATS at {where}"

    async def publish(self, region: str, partition: int, msg_id: str, payload: bytes) -> PublishAck:
        return await (await self.send(region, partition, msg_id, payload))

    def _forget(self, token: str) -> asyncio.Future[PublishAck] | None:
        """Free a pending ack's place in the window; its future when it is still unresolved."""
        entry = self._pending.pop(token, None)
        if entry is None:
            return None
        ack, timer = entry
        timer.cancel()
        self._window.release()
        return None if ack.done() else ack

    def _answer(self, token: str, outcome: PublishAck | BusError) -> None:
        ack = self._forget(token)
        if ack is None:
            return  # answered after its publish timed out or its connection dropped
        if isinstance(outcome, PublishAck):
            ack.set_result(outcome)
        else:
            ack.set_exception(outcome)

    def _expire(self, token: str) -> None:
        why = f"NATS did not ack within {self.settings.ack_timeout:g} s"
        self._answer(token, self._unavailable(why))

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox) + 1 :]
        if token in self._pending:
            self._answer(token, self._outcome(msg))

    def _outcome(self, msg: Msg) -> PublishAck | BusError:
        """What JetStream's answer to a publish means for its sender."""
        if msg.headers and msg.headers.get(Header.STATUS) == _NO_RESPONDERS:
            return self._unavailable(
                f"no stream took the signal (is {self.settings.stream} there?)"
            )
        try:
            answer = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return BusError(f"NATS answered a publish with {msg.data[:200]!r}")
        error = answer.get("error")
        if error is None:
            return PublishAck(answer["stream"], answer["seq"], bool(answer.get("duplicate")))
        if error.get("err_code") == _STORE_FULL and "maximum" in error.get("description", ""):
            return BusBusy(f"the stream {self.settings.stream} is full: {error.get('description')}")
        return BusError(f"NATS refused the signal: {error}")

    def _fail_pending(self, why: str) -> None:
        for token in list(self._pending):
            self._answer(token, self._unavailable(why))

    async def _on_disconnected(self) -> None:
        if self._closed:
            return
        logger.warning(
            "bus: lost the connection to NATS; reconnecting every %gs", self.settings.reconnect_wait
        )
        # What was on the wire may or may not be stored: its sender retries with the same
        # msg_id, and JetStream stores it once.
        self._fail_pending("the connection to NATS dropped before the ack")

    async def _on_reconnected(self) -> None:
        url = self._client.connected_url
        logger.warning("bus: reconnected to NATS at %s", url.geturl() if url else "?")

    async def _on_closed(self) -> None:
        self._fail_pending("the connection to NATS is closed")

    async def _on_error(self, error: Exception) -> None:
        self._last_error = error
        logger.debug("bus: NATS client error: %s", describe(error))

    async def consumer(
        self,
        region: str,
        partition: int,
        *,
        max_in_flight: int = 256,
        ack_wait: float = 30.0,
    ) -> Consumer:
        check_partition(partition, self.settings.partitions)
        check_consumer_limits(max_in_flight, ack_wait)
        if self._closed:
            raise BusError("the NATS bus is closed")
        consumer = await NatsConsumer.open(
            self._client,
            self._js,
            self.settings,
            region,
            partition,
            max_in_flight=max_in_flight,
            ack_wait=ack_wait,
            on_close=self._consumers.discard,
        )
        self._consumers.add(consumer)
        return consumer

    async def close(self) -> None:
        """Hand back what the consumers hold, wait up to `ack_timeout` for pending acks, then
        close the connection (failing any ack still pending)."""
        if self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers):
            await consumer.close()
        pending = [ack for ack, _ in self._pending.values()]
        if pending and self._client.is_connected:
            await asyncio.wait(pending, timeout=self.settings.ack_timeout)
        self._fail_pending("the bus closed before the ack")
        await self._client.close()
