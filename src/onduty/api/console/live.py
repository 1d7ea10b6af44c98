"""Live updates: `/events/stream` (`text/event-stream`) sends one message per appended event,
`{"seq", "type", "incident_id"}`, and the browser re-fetches the fragments it shows. Each stream
ends after `stream_lifetime` seconds and the browser reconnects (and re-fetches once, so nothing
missed in between is lost): an open console never holds up a graceful shutdown for long."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from onduty.api.console.pages import Pages
from onduty.events import Event
from onduty.service import Service

QUEUE_LIMIT = 1000
"""Messages one stream may fall behind by; past that it is told to re-fetch everything."""
KEEPALIVE_S = 10.0


@dataclass
class Message:
    seq: int
    type: str
    incident_id: str | None

    def sse(self) -> str:
        body = orjson.dumps({"seq": self.seq, "type": self.type, "incident_id": self.incident_id})
        return f"id: {self.seq}\ndata: {body.decode()}\n\n"


class _Stream:
    """One connected browser: messages waiting for it, and the event that wakes it."""

    def __init__(self) -> None:
        self.messages: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.overflowed = False


class Hub:
    """Fans the service's appended events out to the connected event streams."""

    def __init__(self, service: Service) -> None:
        self._lock = threading.Lock()
        self._streams: set[_Stream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Message] = []
        self._scheduled = False
        self._owner: OrderedDict[str, str] = OrderedDict()
        """command and approval ids → their incident (the most recent 50,000)."""
        service.subscribe(self._on_event)

    def _incident_of(self, event: Event) -> str | None:
        data = event.data
        incident = data.get("incident_id")
        keys = [
            data[key] for key in ("command_id", "approval_id") if isinstance(data.get(key), str)
        ]
        if isinstance(incident, str):
            for key in keys:
                self._owner[key] = incident
            while len(self._owner) > 50_000:
                self._owner.popitem(last=False)
            return incident
        for key in (*keys, data.get("of_command_id")):
            if isinstance(key, str) and key in self._owner:
                found = self._owner[key]
                if isinstance(data.get("command_id"), str):
                    self._owner[data["command_id"]] = found
                return found
        return None

    def _on_event(self, event: Event) -> None:
        """On the core's thread: note the event and wake the event loop (once per burst)."""
        with self._lock:
            incident = self._incident_of(event)
            loop = self._loop
            if loop is None or not self._streams:
                return
            self._pending.append(Message(event.seq, event.type, incident))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            with self._lock:
                self._pending.clear()
                self._scheduled = False

    def _deliver(self) -> None:
        with self._lock:
            batch, self._pending, self._scheduled = self._pending, [], False
            streams = list(self._streams)
        for stream in streams:
            if len(stream.messages) + len(batch) > QUEUE_LIMIT:
                stream.messages.clear()
                stream.overflowed = True
            else:
                stream.messages.extend(batch)
            stream.wake.set()

    def connect(self) -> _Stream:
        stream = _Stream()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._streams.add(stream)
        return stream

    def disconnect(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.discard(stream)


async def event_stream(hub: Hub, request: Request, lifetime: float) -> AsyncIterator[str]:
    """`retry` first (reconnect after a second), then each event as it comes, a comment every
    `KEEPALIVE_S` when nothing happens, and the end after `lifetime` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime
    stream = hub.connect()
    try:
        yield "retry: 1000\n: onduty events\n\n"
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or await request.is_disconnected():
                return
            try:
                await asyncio.wait_for(stream.wake.wait(), timeout=min(KEEPALIVE_S, remaining))
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            stream.wake.clear()
            if stream.overflowed:
                stream.overflowed = False
                yield "event: resync\ndata: {}\n\n"
                continue
            chunk = []
            while stream.messages:
                chunk.append(stream.messages.popleft().sse())
            if chunk:
                yield "".join(chunk)
    finally:
        hub.disconnect(stream)


def live_router(hub: Hub, pages: Pages, stream_lifetime: float) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/events/stream")
    async def events_stream(request: Request) -> Response:
        who = pages.gate(request, fragment=True)
        if isinstance(who, Response):
            return who
        return StreamingResponse(
            event_stream(hub, request, stream_lifetime),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
