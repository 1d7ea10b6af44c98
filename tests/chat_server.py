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

Reply = tuple[int, str]
"""An HTTP status and the model's reply (the message content; the error, for another status)."""


def reply(action: str, target: str, rationale: str = "the evidence says so") -> Reply:
    return 200, json.dumps({"action": action, "target": target, "rationale": rationale})


class ChatServer:
    """A chat-completions server on loopback. By default it answers `ANSWER` as model
    `served-model`; `respond(body)` answers each request from its body instead (as model
    `served-<the model asked for>`); `reply` and `status`, set by a test, answer verbatim
    (bytes, or a JSON document). `seen` keeps every request's headers and body."""

    def __init__(self, respond: Callable[[dict[str, Any]], Reply] | None = None) -> None:
        self.respond = respond
        self.reply: Any = {
            "model": "served-model",
            "choices": [{"message": {"role": "assistant", "content": json.dumps(ANSWER)}}],
        }
        self.status = 200
        self.delay = 0.0
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                server.seen.append((dict(self.headers), body))
                time.sleep(server.delay)
                status, payload = server.status, server.reply
                if server.respond is not None:
                    status, content = server.respond(body)
                    message = {"role": "assistant", "content": content}
                    payload = (
                        {"model": f"served-{body['model']}", "choices": [{"message": message}]}
                        if status == 200
                        else {"error": content}
                    )
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
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

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in self.seen]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
