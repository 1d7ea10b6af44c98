"""A sink on loopback for what `onduty serve` sends out during a benchmark: OTLP trace exports
and the HTTP actuator's requests. It answers every POST and PUT 200 at once and counts them, so the
server's cost of sending is measured and nothing downstream is."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class Sink:
    def __init__(self) -> None:
        self.posts: dict[str, int] = {}
        self.bytes = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with sink._lock:
                    path = self.path.split("?", 1)[0]
                    sink.posts[path] = sink.posts.get(path, 0) + 1
                    sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            do_PUT = do_POST

            def log_message(self, format: str, *args: object) -> None:
                pass  # a benchmark's sink says nothing

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def count(self, path: str) -> int:
        with self._lock:
            return self.posts.get(path, 0)

    def __enter__(self) -> Sink:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
