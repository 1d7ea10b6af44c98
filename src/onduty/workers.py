"""Work on threads, a few at once per key: how `onduty serve` runs actuators and delivers
notifications without ever making the core wait. Shared by the act and escalate layers, so
neither borrows it from the other."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["WorkerPool"]


class WorkerPool:
    """Calls on worker threads, at most `per_actuator` at once for any one key (an actuator, a
    notification channel)."""

    def __init__(self, workers: int = 32, per_actuator: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onduty-act")
        self._per_actuator = per_actuator
        self._limits: dict[int, threading.Semaphore] = {}
        self._lock = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Calls handed over and not yet running (waiting for a thread or for their key)."""
        return self._waiting

    def __call__(self, actuator: object, work: Callable[[], None]) -> None:
        with self._lock:
            limit = self._limits.setdefault(
                id(actuator), threading.BoundedSemaphore(self._per_actuator)
            )
            self._waiting += 1

        def bounded() -> None:
            with limit:
                with self._lock:
                    self._waiting -= 1
                work()

        try:
            self._pool.submit(bounded)
        except BaseException:
            with self._lock:
                self._waiting -= 1
            raise

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=False)
