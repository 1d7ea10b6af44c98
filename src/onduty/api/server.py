"""uvicorn, with the exit the contract promises: SIGTERM drains and exits 0."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Generator
from types import FrameType

import uvicorn


class DrainingServer(uvicorn.Server):
    """Stops accepting on SIGTERM/SIGINT, lets in-flight requests and the app's shutdown finish,
    and then returns normally — uvicorn itself re-raises the signal after a graceful shutdown,
    which would make the process exit by signal instead of with status 0. SIGHUP calls
    `on_hangup` (reload the policy) on a thread of its own."""

    def __init__(self, config: uvicorn.Config, on_hangup: Callable[[], object] | None = None):
        super().__init__(config)
        self._on_hangup = on_hangup

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        if self._on_hangup is not None:
            threading.Thread(target=self._on_hangup, name="onduty-reload", daemon=True).start()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hangup)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
