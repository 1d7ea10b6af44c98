"""The core's own thread: inputs offered from any thread or event loop are handled in order,
batched into one durable commit, and answered with futures; the core's timers fire here too.

Batching is what makes durable ingest fast: every request waiting when the thread wakes shares
one transaction (and one fsync), yet each caller hears back only once its inputs are durable.
A bounded queue gives backpressure: `offer` refuses work beyond `max_pending` inputs instead of
letting memory grow, and the HTTP layer turns that into 429 with Retry-After.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from onduty.events import Event, Payload
from onduty.runtime import Input, Runtime


class Draining(RuntimeError):
    """The loop is shutting down and takes no new work."""


@dataclass
class _Work:
    inputs: Sequence[Input]
    future: Future[list[Event]]
    queued_at: float = 0.0
    """When it was offered (`time.monotonic`): how long the oldest input has waited."""


class CoreLoop:
    def __init__(
        self,
        runtime: Runtime,
        *,
        max_pending: int = 20_000,
        max_batch: int = 5_000,
        idle_wait: float = 1.0,
    ) -> None:
        self.runtime = runtime
        self.max_pending = max_pending
        self._max_batch = max_batch
        self._idle_wait = idle_wait
        self._queue: deque[_Work] = deque()
        self._pending = 0
        self._in_hand: float | None = None
        """When the oldest input of the batch the core is handling was offered."""
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="onduty-core", daemon=True)
        self.failure: BaseException | None = None

    @property
    def pending(self) -> int:
        return self._pending

    def oldest_wait(self) -> float:
        """Seconds the oldest input still queued has waited for the core (0 when none)."""
        with self._wake:
            since = self._in_hand
            if since is None and self._queue:
                since = self._queue[0].queued_at
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping and self.failure is None

    def start(self) -> None:
        self._thread.start()

    def offer(self, inputs: Sequence[Input]) -> Future[list[Event]] | None:
        """Queue inputs; the future resolves with their placed events once durable.
        None when the queue is full (the caller should ask the sender to retry later)."""
        future: Future[list[Event]] = Future()
        with self._wake:
            if self._stopping or self.failure is not None:
                raise Draining("onduty is shutting down")
            if self._pending and self._pending + len(inputs) > self.max_pending:
                return None
            self._queue.append(_Work(inputs, future, time.monotonic()))
            self._pending += len(inputs)
            self._wake.notify()
        return future

    def stop(self, timeout: float = 30.0) -> None:
        """Take no new work, finish what is queued, and stop."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> list[_Work]:
        with self._wake:
            while not self._queue and not self._stopping:
                due = self.runtime.next_timer()
                wait = self._idle_wait
                if due is not None:
                    wait = min(wait, max(0.0, (due - self.runtime.clock.now()).total_seconds()))
                if wait <= 0 or not self._wake.wait(wait):
                    return []  # a timer may be due
            batch: list[_Work] = []
            size = 0
            while self._queue and (
                not batch or size + len(self._queue[0].inputs) <= self._max_batch
            ):
                work = self._queue.popleft()
                batch.append(work)
                size += len(work.inputs)
            self._pending -= size
            if batch:
                self._in_hand = batch[0].queued_at
            return batch

    def _run(self) -> None:
        try:
            while True:
                batch = self._take()
                if batch:
                    try:
                        self._handle(batch)
                    finally:
                        with self._wake:
                            self._in_hand = None
                self.runtime.fire_due_timers(budget=0.05)  # inputs waiting are taken between
                with self._wake:
                    if self._stopping and not self._queue:
                        break
        except BaseException as error:  # the runtime stopped: refuse everything from now on
            self.failure = error
            with self._wake:
                for work in self._queue:
                    work.future.set_exception(error)
                self._queue.clear()
            raise

    def _handle(self, batch: list[_Work]) -> None:
        inputs = [item for work in batch for item in work.inputs]
        try:
            placed = self.runtime.submit_many(inputs)
        except BaseException as error:
            for work in batch:
                work.future.set_exception(error)
            raise
        start = 0
        for work in batch:
            end = start + len(work.inputs)
            work.future.set_result(placed[start:end])
            start = end


def record(loop: CoreLoop | None, runtime: Runtime | None, body: Payload, stream: str) -> None:
    """An outcome (of an action, a check, a notification) joins the core loop's queue, batched
    with other inputs, so a worker never waits on the core; when the queue is full or the loop
    is stopping it is recorded directly instead: never dropped."""
    try:
        if loop is not None and loop.offer([Input(body, stream=stream)]) is not None:
            return
    except Draining:
        pass
    if runtime is not None:
        runtime.submit(body, stream=stream)
