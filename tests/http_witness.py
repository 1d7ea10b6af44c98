"""A witness on another host, as the tests stand one up: an HTTP server on loopback that keeps
the body of every POST it is sent (the checkpoints exported to `checkpoints.witness_url`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer


@dataclass
class HttpWitness:
    url: str
    received: list[bytes] = field(default_factory=list)


@contextmanager
def http_witness() -> Iterator[HttpWitness]:
    """A running witness; stopped (and its port closed) on leaving the block."""
    received: list[bytes] = []

    class Witness(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Witness)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield HttpWitness(f"http://127.0.0.1:{server.server_address[1]}/checkpoints", received)
    finally:
        server.shutdown()
        server.server_close()
