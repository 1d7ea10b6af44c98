"""uvicorn, with the exit the contract promises: SIGTERM drains and exits 0."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Generator

import uvicorn


class DrainingServer(uvicorn.Server):
    """Stops accepting on SIGTERM/SIGINT, lets in-flight requests and the app's shutdown finish,
    and then returns normally — uvicorn itself re-raises the signal after a graceful shutdown,
    which would make the process exit by signal instead of with status 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
