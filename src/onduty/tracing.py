"""Traces of onduty's own work (OpenTelemetry): one trace follows an incident from the request
that delivered its signal through correlation, decision, verdict, action and verification.

`Tracing` owns the SDK: a tracer provider of onduty's own, the OTLP/HTTP exporter in batches
when `telemetry.traces.otlp_endpoint` is set. The ingest request's span is a live span (a child
of the sender's `traceparent`); an incident's other spans are made from its events as they
become durable (`onduty.spans.TraceProjection`), with the events' times and ids derived from
the log, so `onduty.spans.incident_trace` rebuilds exactly what was exported.

Off by default: without an OTLP endpoint (or an exporter handed in by a test) nothing is built,
no thread starts, and each event costs one attribute test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import trace

from onduty.config_server import TraceSettings
from onduty.events import Event
from onduty.log import EventLog
from onduty.otlp import HttpSender, SpanEncoder, SpanExport, readable_spans, shown_endpoint
from onduty.secrets import resolve_references
from onduty.spans import SpanRecord, TraceProjection, parse_traceparent, recall_from, traceparent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SCOPE = "onduty"


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the span current in this thread or task, as hex, or None outside
    any span: for log lines that name the trace they belong to."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# ---------------------------------------------------------------------------- the SDK


class Tracing:
    """onduty's own OpenTelemetry set-up: a tracer provider of its own (never the global one,
    so several services may share a process) for the live ingest spans, and onduty's own span
    exporter (`onduty.otlp`) for every span: over OTLP/HTTP in batches when an endpoint is
    configured, to `exporter` when one is given (tests: it is handed the spans decoded from the
    very requests the endpoint would receive), else nothing at all."""

    def __init__(
        self,
        settings: TraceSettings | None = None,
        *,
        exporter: SpanExporter | None = None,
        instance: str | None = None,
    ) -> None:
        self.settings = settings or TraceSettings()
        self._exporter = exporter
        self._instance = instance
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._spans: SpanExport | None = None
        self._bound = 0
        self._everything = False

    @property
    def enabled(self) -> bool:
        """Whether spans are made: an endpoint is configured or an exporter was given."""
        return self._exporter is not None or self.settings.otlp_endpoint is not None

    @property
    def started(self) -> bool:
        return self._provider is not None

    @property
    def dropped(self) -> dict[str, int]:
        """Spans dropped so far, by reason (`queue_full`, `export_failed`)."""
        return dict(self._spans.dropped) if self._spans is not None else {}

    def start(
        self,
        instance: str | None = None,
        *,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        """Build the provider and the exporter (resolving the headers' secrets: a
        `SecretError` names the header, never its value). Does nothing when tracing is off.
        `on_drop(reason, count)` is told of the spans dropped (from the exporter's thread)."""
        if not self.enabled or self._provider is not None:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

        settings = self.settings
        attributes = {"service.name": settings.service_name}
        if instance or self._instance:
            attributes["service.instance.id"] = str(instance or self._instance)
        resource = Resource.create(attributes)
        sampler = TraceIdRatioBased(settings.sample_ratio)
        self._bound = sampler.bound
        self._everything = sampler.bound >= 1 << 64
        encoder = SpanEncoder(resource.attributes, SCOPE)
        provider = TracerProvider(sampler=sampler, resource=resource)
        if self._exporter is not None:
            exporter = self._exporter
            spans = SpanExport(
                encoder,
                lambda body: _handed(exporter, body),
                where="the exporter given",
                on_drop=on_drop,
            )
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            assert settings.otlp_endpoint is not None
            headers, _ = resolve_references(settings.headers, what="telemetry.traces.headers")
            sender = HttpSender(
                settings.otlp_endpoint, headers.as_dict(), settings.timeout.total_seconds()
            )
            spans = SpanExport(
                encoder, sender, where=shown_endpoint(settings.otlp_endpoint), on_drop=on_drop
            )
            provider.add_span_processor(_queued(spans))
        self._spans, self._provider = spans, provider
        self._tracer = provider.get_tracer(SCOPE)

    def shutdown(self) -> None:
        """Export what is buffered and stop the exporter's thread."""
        provider, self._provider = self._provider, None
        spans, self._spans = self._spans, None
        if spans is not None:
            spans.shutdown()
        if provider is not None:  # after: a test's exporter takes nothing once shut down
            provider.shutdown()

    def flush(self) -> None:
        if self._spans is not None:
            self._spans.flush()

    # ------------------------------------------------------------------ spans

    def projector(self, log: EventLog | None = None) -> Callable[[Event], None] | None:
        """What to feed every event one log (a partition) appends, or None when tracing is off:
        its incidents' spans are emitted as their events become durable. With `log`, the
        incidents opened before the process started are read back from it when they go on."""
        if self._provider is None:
            return None
        recall = None if log is None else recall_from(log)
        return TraceProjection(self.export, recall=recall).feed

    def export(self, record: SpanRecord) -> None:
        """Queue a span made from the log for export (if its trace is sampled): the hot path,
        on the core's thread; encoding and sending happen on the exporter's thread."""
        spans = self._spans
        if spans is None or record.end is None:
            return
        if self._everything or int(record.trace_id[16:], 16) < self._bound:
            spans.put(record)

    @contextmanager
    def ingest(self, route: str, carried: str | None) -> Iterator[Received]:
        """The span of one ingest request, current while it runs, as a child of the sender's
        `traceparent` when it sent one. Yields what its signals record: the context they were
        received under (the sender's when tracing is off, None when there is neither)."""
        if self._tracer is None:
            context = parse_traceparent(carried)
            yield Received(traceparent(*context) if context else None, None)
            return
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = None
        if carried is not None and parse_traceparent(carried) is not None:
            parent = TraceContextTextMapPropagator().extract({"traceparent": carried.strip()})
        span = self._tracer.start_span(
            "ingest",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"onduty.route": route},
        )
        ids = span.get_span_context()  # a trace left out by sampling is left out whole:
        # its signals record it unsampled, and the incident's spans share its trace id
        received = Received(
            traceparent(
                format(ids.trace_id, "032x"), format(ids.span_id, "016x"), ids.trace_flags.sampled
            ),
            span,
        )
        with trace.use_span(span, end_on_exit=True):
            yield received


class Received:
    """What one ingest request's signals are stamped with, and its span (None when off)."""

    __slots__ = ("span", "traceparent")

    def __init__(self, carried: str | None, span: trace.Span | None) -> None:
        self.traceparent = carried
        self.span = span

    def finish(self, status: int) -> None:
        if self.span is not None:
            self.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                from opentelemetry.trace import Status, StatusCode

                self.span.set_status(Status(StatusCode.ERROR))


def _queued(spans: SpanExport) -> SpanProcessor:
    """The SDK span processor of the live spans: each ended span joins the exporter's queue
    (the SDK imported only when tracing is on)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class Queued(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            if span.context is not None and span.context.trace_flags.sampled:
                spans.put(span)

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            spans.flush()
            return True

    return Queued()


def _handed(exporter: SpanExporter, body: bytes) -> None:
    exporter.export(readable_spans(body))
