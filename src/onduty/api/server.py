"""uvicorn, with the exit the contract promises: SIGTERM drains and exits 0, within a bound."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Generator
from types import FrameType

import uvicorn

logger = logging.getLogger("uvicorn.error")

# How long idle connections get to close on their own before they are dropped: a TLS peer may
# never answer the close_notify, and asyncio would wait 30 s for it.
IDLE_CLOSE_GRACE = 1.0


class DrainingServer(uvicorn.Server):
    """Stops accepting on SIGTERM/SIGINT, lets in-flight requests and the app's shutdown finish,
    and then returns normally — uvicorn itself re-raises the signal after a graceful shutdown,
    which would make the process exit by signal instead of with status 0. SIGHUP calls
    `on_hangup` (reload the policy) on a thread of its own.

    Shutting down is bounded: requests still running after `shutdown_timeout` seconds are
    cancelled, and connections still open then (idle keep-alive ones, TLS peers that never
    answer the close) are dropped; then the app's own shutdown drains the core and the log."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_hangup: Callable[[], object] | None = None,
        *,
        shutdown_timeout: float = 10.0,
    ):
        super().__init__(config)
        self._on_hangup = on_hangup
        self.shutdown_timeout = shutdown_timeout

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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        logger.info("Shutting down")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        for server in self.servers:
            server.close()  # accept no more
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their response
        # in-flight requests finish: an ingest request answers once its signal is durable
        while state.tasks and not self.force_exit and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if state.tasks:
            logger.error("cancelling %s request(s) still running at the bound", len(state.tasks))
            for task in list(state.tasks):
                task.cancel(msg="shutdown bound reached")
        grace = min(deadline, loop.time() + IDLE_CLOSE_GRACE)
        while state.connections and not self.force_exit and loop.time() < grace:
            await asyncio.sleep(0.05)
        for connection in list(state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        if not self.force_exit:
            await self.lifespan.shutdown()
