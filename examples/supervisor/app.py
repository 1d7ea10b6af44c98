"""A tiny service with a health endpoint, for the supervisor example.

GET /health answers 200 "ok" while the service is healthy. POST /break wedges it: from then on
/health answers 500 until the process is restarted, which is what onduty does through
supervisord. Standard library only.

    python3 app.py --port 8080
"""

from __future__ import annotations

import argparse
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = datetime.now(UTC).isoformat(timespec="seconds")
healthy = threading.Event()
healthy.set()


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            if healthy.is_set():
                self._answer(200, f"ok (up since {STARTED})")
            else:
                self._answer(500, f"wedged (up since {STARTED})")
        else:
            self._answer(404, "not found")

    def do_POST(self) -> None:
        if self.path == "/break":
            healthy.clear()
            self._answer(200, "broken: /health fails until this process is restarted")
        else:
            self._answer(404, "not found")

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    options = parser.parse_args()
    with ThreadingHTTPServer((options.host, options.port), Handler) as server:
        print(f"serving on http://{options.host}:{server.server_address[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
