"""A chat-completions server on loopback whose answers a test sets: the OpenAI-compatible API
the advisor asks, standing in only where a test is about what onduty does with an answer (the
real model's own test is tests/integration/test_advisor_llm.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = {"action": "restart", "target": "web-1", "rationale": "stuck"}


class ChatServer:
    """A chat-completions server on loopback whose behaviour each test sets."""

    def __init__(self) -> None:
        self.reply: Any = {
            "model": "served-model",
            "choices": [{"message": {"role": "assistant", "content": json.dumps(ANSWER)}}],
        }
        self.status = 200
        self.delay = 0.0
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        """When set: the answer (action, target, rationale) to each request, from its body."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                server.seen.append((dict(self.headers), body))
                time.sleep(server.delay)
                if server.answer is not None:
                    content = json.dumps(server.answer(body))
                    server.reply = {
                        "model": "chosen",
                        "choices": [{"message": {"content": content}}],
                    }
                payload = (
                    server.reply if isinstance(server.reply, bytes) else json.dumps(server.reply)
                )
                data = payload if isinstance(payload, bytes) else payload.encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
