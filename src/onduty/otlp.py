"""Spans to OTLP/HTTP, cheaply: onduty's own span exporter.

The span records made from the log (`onduty.spans.SpanRecord`) are queued as they are, on the
thread that made them (one `deque.append`: never a copy, never a block); a thread of the
exporter's own takes them in batches and builds the OTLP `ExportTraceServiceRequest` directly
with the generated protobuf classes (the resource and scope made once), then POSTs it. The
live `ingest` spans (SDK `ReadableSpan`s) take the same queue and the same requests.

A full queue drops the span, and a failed export its batch: both are counted
(`on_drop(reason, count)`, the metric `onduty_trace_spans_dropped_total`), and a failure is
logged at most once a minute, naming the endpoint without credentials and never the headers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from onduty.spans import SpanRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

logger = logging.getLogger("onduty.tracing")

_FLAGS = 0x100
"""`SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`: the parent is not remote (as the SDK tells it)."""
_INTERNAL, _ERROR = Span.SPAN_KIND_INTERNAL, Status.STATUS_CODE_ERROR
_FAILED = frozenset({"failed", "unknown"})
"""The outcomes (`onduty.outcome`) whose span has the status ERROR."""

_fromhex = bytes.fromhex


def nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


# ---------------------------------------------------------------------------- encoding


class SpanEncoder:
    """Span records (and SDK spans) → one serialized `ExportTraceServiceRequest`, with the
    resource and instrumentation scope every span of this process shares."""

    def __init__(self, resource: Mapping[str, Any], scope: str) -> None:
        head = ResourceSpans()
        for key, value in resource.items():
            _set(head.resource.attributes.add(key=key).value, value)
        self._resource = head.resource.SerializeToString()
        self._scope = scope

    def request(self, items: Iterable[SpanRecord | ReadableSpan]) -> bytes:
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.MergeFromString(self._resource)
        scope_spans: ScopeSpans = resource_spans.scope_spans.add()
        scope_spans.scope.name = self._scope
        spans = scope_spans.spans
        for item in items:
            if isinstance(item, SpanRecord):
                _record(spans.add(), item)
            else:
                _readable(spans.add(), item)
        body: bytes = request.SerializeToString()
        return body


def _record(span: Span, record: SpanRecord) -> None:
    span.trace_id = _fromhex(record.trace_id)
    span.span_id = _fromhex(record.span_id)
    if record.parent_id is not None:
        span.parent_span_id = _fromhex(record.parent_id)
    span.name = record.name
    span.kind = _INTERNAL
    span.flags = _FLAGS
    span.start_time_unix_nano = nanoseconds(record.start)
    span.end_time_unix_nano = nanoseconds(record.end or record.start)
    attributes = span.attributes
    for key, value in record.attributes.items():
        if type(value) is str:
            attributes.add(key=key).value.string_value = value
        else:
            attributes.add(key=key).value.int_value = value
    values = attributes.add(key="onduty.event_ids").value.array_value.values
    for event_id in record.event_ids:
        values.add().string_value = event_id
    if record.attributes.get("onduty.outcome") in _FAILED:
        span.status.code = _ERROR


def _readable(span: Span, sdk: ReadableSpan) -> None:
    context = sdk.get_span_context()
    assert context is not None
    span.trace_id = context.trace_id.to_bytes(16, "big")
    span.span_id = context.span_id.to_bytes(8, "big")
    flags = _FLAGS
    if sdk.parent is not None:
        span.parent_span_id = sdk.parent.span_id.to_bytes(8, "big")
        if sdk.parent.is_remote:
            flags |= 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
    span.flags = flags
    span.name = sdk.name
    kind: Any = sdk.kind.value + 1  # the API's kinds start at INTERNAL = 0, OTLP's at 1
    span.kind = kind
    span.start_time_unix_nano = sdk.start_time or 0
    span.end_time_unix_nano = sdk.end_time or 0
    for key, value in (sdk.attributes or {}).items():
        _set(span.attributes.add(key=key).value, value)
    code: Any = sdk.status.status_code.value
    if code:
        span.status.code = code
        if sdk.status.description:
            span.status.message = sdk.status.description


def _set(target: AnyValue, value: Any) -> None:
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, Sequence):
        values = target.array_value.values
        for item in value:
            _set(values.add(), item)
    else:
        target.string_value = str(value)


def _get(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_get(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


def readable_spans(body: bytes) -> list[ReadableSpan]:
    """An encoded request decoded back into SDK spans: what an in-process SDK exporter (a
    test's) is handed, so it sees exactly what the OTLP endpoint would receive."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags
    from opentelemetry.trace import Status as SdkStatus

    request = ExportTraceServiceRequest.FromString(body)
    found = []
    sampled = TraceFlags(TraceFlags.SAMPLED)
    for resource_spans in request.resource_spans:
        resource = Resource(_attributes(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            scope = InstrumentationScope(scope_spans.scope.name)
            for span in scope_spans.spans:
                trace_id = int.from_bytes(span.trace_id, "big")
                remote = bool(span.flags & 0x200)
                parent = None
                if span.parent_span_id:
                    parent_id = int.from_bytes(span.parent_span_id, "big")
                    parent = SpanContext(trace_id, parent_id, remote, sampled)
                found.append(
                    ReadableSpan(
                        span.name,
                        context=SpanContext(
                            trace_id, int.from_bytes(span.span_id, "big"), False, sampled
                        ),
                        parent=parent,
                        resource=resource,
                        attributes=_attributes(span.attributes),
                        kind=SpanKind(span.kind - 1),
                        status=SdkStatus(StatusCode(span.status.code), span.status.message or None),
                        start_time=span.start_time_unix_nano,
                        end_time=span.end_time_unix_nano,
                        instrumentation_scope=scope,
                    )
                )
    return found


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _get(pair.value) for pair in pairs}


# ---------------------------------------------------------------------------- sending


_RETRYABLE = frozenset({429, 502, 503, 504})
"""The answers worth another try (as OTLP/HTTP says), like a refused connection."""


class HttpSender:
    """POSTs one encoded request to an OTLP/HTTP traces endpoint (protobuf), with the
    configured headers and timeout; raises `ExportError` unless it is accepted. A refused
    connection or a 429/502/503/504 is tried again after each of `backoff` (seconds); a
    timeout is not (the exporter's thread would wait for it again)."""

    def __init__(
        self,
        endpoint: str,
        headers: Mapping[str, str],
        timeout: float,
        backoff: Sequence[float] = (0.5, 1.0),
    ) -> None:
        import httpx

        self.endpoint = endpoint
        self._backoff = tuple(backoff)
        self._client = httpx.Client(
            headers={**headers, "Content-Type": "application/x-protobuf"}, timeout=timeout
        )

    def __call__(self, body: bytes) -> None:
        for wait in (*self._backoff, None):
            retry = self._once(body)
            if retry is None:
                return
            if wait is None:
                raise ExportError(retry)
            time.sleep(wait)

    def _once(self, body: bytes) -> str | None:
        """None when the endpoint took it; else why, if worth another try (else raises)."""
        import httpx

        try:
            response = self._client.post(self.endpoint, content=body)
        except httpx.ConnectError as error:
            return type(error).__name__
        except httpx.HTTPError as error:
            raise ExportError(type(error).__name__) from None
        if 200 <= response.status_code < 300:
            return None
        if response.status_code in _RETRYABLE:
            return f"HTTP {response.status_code}"
        raise ExportError(f"HTTP {response.status_code}")

    def close(self) -> None:
        self._client.close()


class ExportError(Exception):
    """An export that did not reach the endpoint or was refused (a short reason, no secret)."""


def shown_endpoint(endpoint: str) -> str:
    """The endpoint as a log line may name it: without credentials or query."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class SpanExport:
    """The queue of spans to export and the thread that sends them in batches.

    `put` is the hot path: one length test and one `deque.append` (thread-safe). The thread
    wakes when a batch is full or every `delay` seconds, encodes up to `batch` spans per
    request and hands each request to `send`."""

    def __init__(
        self,
        encoder: SpanEncoder,
        send: Callable[[bytes], None],
        *,
        where: str,
        max_queue: int = 8192,
        batch: int = 512,
        delay: float = 1.0,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self._encoder = encoder
        self._send = send
        self._where = where
        self._max_queue = max_queue
        self._batch = batch
        self._delay = delay
        self._on_drop = on_drop
        self._queue: deque[SpanRecord | ReadableSpan] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._sending = threading.Lock()
        self._count_lock = threading.Lock()
        self._full = 0
        """Spans refused by the full queue, not yet reported to `on_drop`."""
        self.dropped: dict[str, int] = {"queue_full": 0, "export_failed": 0}
        """Spans dropped so far, by reason."""
        self._failures = 0
        self._logged = -1e9
        self._thread = threading.Thread(target=self._run, name="onduty-trace-export", daemon=True)
        self._thread.start()

    def put(self, span: SpanRecord | ReadableSpan) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue:
            with self._count_lock:
                self._full += 1
            return
        queue.append(span)
        if len(queue) >= self._batch and not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        """Send everything queued now, on the calling thread."""
        self._drain()

    def shutdown(self) -> None:
        """Stop the thread after it sent what was queued."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._drain()
        close = getattr(self._send, "close", None)
        if close is not None:
            close()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        with self._sending:
            queue, batch = self._queue, self._batch
            while queue:
                taken = [queue.popleft() for _ in range(min(batch, len(queue)))]
                try:
                    self._send(self._encoder.request(taken))
                except Exception as error:  # a trace is not worth more than a count and a line
                    if self._stopping:  # the endpoint fails: stopping does not wait on it again
                        taken.extend(queue.popleft() for _ in range(len(queue)))
                    self._failed(len(taken), error)
            with self._count_lock:
                full, self._full = self._full, 0
            if full:
                self._dropped("queue_full", full)

    def _failed(self, count: int, error: Exception) -> None:
        self._dropped("export_failed", count)
        self._failures += count
        now = time.monotonic()
        if now - self._logged >= 60.0:
            reason = str(error) if isinstance(error, ExportError) else type(error).__name__
            logger.warning(
                "cannot export spans to %s (%s): %d spans dropped since the last such message",
                self._where,
                reason,
                self._failures,
            )
            self._logged, self._failures = now, 0

    def _dropped(self, reason: str, count: int) -> None:
        self.dropped[reason] += count
        if self._on_drop is not None:
            self._on_drop(reason, count)
