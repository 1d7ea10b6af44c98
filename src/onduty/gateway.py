"""Where the API hands inputs to the core: the one door every signal, approval, silence and
policy change goes through, with the answer the sender gets when it cannot be taken now.

On one node the door is the core loop of the process (`LoopGateway`): inputs are accepted once
the log has committed them. In a fleet it is the bus (`onduty.cells.gateway.BusGateway`):
inputs are accepted once the bus has stored them for the partitions they belong to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from onduty.loop import CoreLoop, Draining
from onduty.runtime import Input


@dataclass(frozen=True)
class Refusal:
    """Why inputs were not accepted, as the sender is told: an HTTP status (429 when the
    sender should slow down, 503 when onduty cannot take them now), a sentence, and how many
    seconds to wait before retrying."""

    status: int
    reason: str
    retry_after: int = 1


class Gateway(Protocol):
    async def submit(self, inputs: Sequence[Input]) -> Refusal | None:
        """Hand `inputs` on; None once they are durable (nothing acknowledged is lost), else
        why they were not taken (then none of them was)."""
        ...

    @property
    def pending(self) -> int:
        """Inputs accepted and not yet durable (a gauge for /metrics)."""
        ...


class LoopGateway:
    """The core loop of this process, looked up per call (it starts with the service)."""

    def __init__(self, loop: Callable[[], CoreLoop | None]) -> None:
        self._loop = loop

    @property
    def pending(self) -> int:
        loop = self._loop()
        return 0 if loop is None else loop.pending

    async def submit(self, inputs: Sequence[Input]) -> Refusal | None:
        if not inputs:
            return None
        loop = self._loop()
        if loop is None:
            return Refusal(503, "onduty is starting; retry")
        try:
            future = loop.offer(inputs)
        except Draining:
            return Refusal(503, "onduty is shutting down; retry")
        if future is None:
            return Refusal(429, "the ingest queue is full; retry shortly")
        try:
            await asyncio.wrap_future(future)
        except Exception:
            return Refusal(503, "the event log is unavailable")
        return None
