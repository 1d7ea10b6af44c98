"""A tiny OTLP/HTTP traces receiver on loopback for the tests: it decodes every export it is
sent (protobuf, as opentelemetry-proto defines it)."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


@dataclass(frozen=True)
class Received:
    """One span as it arrived: who sent it, its ids, its attributes (as strings/ints, an array
    as a list), its times (ns since the epoch) and its status code (0 unset, 2 error)."""

    service: str
    instance: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict[str, Any]
    start: int
    end: int
    status: int


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class Receiver:
    """A tiny OTLP/HTTP traces receiver on loopback: it decodes every export it is sent."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.refuse = 0
        """An HTTP status to answer every export with instead of taking it (0: take it)."""
        self.refused = 0

    def spans(self) -> list[Received]:
        """Every span received so far."""
        found = []
        with self.lock:
            for request in self.requests:
                for resource in request.resource_spans:
                    about = {a.key: _value(a.value) for a in resource.resource.attributes}
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            found.append(
                                Received(
                                    str(about.get("service.name", "")),
                                    str(about.get("service.instance.id", "")),
                                    span.trace_id.hex(),
                                    span.span_id.hex(),
                                    span.parent_span_id.hex(),
                                    span.name,
                                    {a.key: _value(a.value) for a in span.attributes},
                                    span.start_time_unix_nano,
                                    span.end_time_unix_nano,
                                    span.status.code,
                                )
                            )
        return found


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if receiver.refuse:
                with receiver.lock:
                    receiver.refused += 1
                self.send_response(receiver.refuse)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with receiver.lock:
                receiver.requests.append(request)
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
