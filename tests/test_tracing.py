"""Traces: one trace follows an incident from the request that delivered its signal through
correlation, decision, verdict, action and verification; the spans onduty emits and the trace
rebuilt from the log alone agree; OTLP export is off unless configured, and a configured
endpoint receives the spans."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from onduty.api import build_app
from onduty.config import ConfigError, parse_config
from onduty.config_server import TraceSettings
from onduty.events import Event
from onduty.log import open_log
from onduty.otlp import SpanEncoder, SpanExport
from onduty.service import Service, StartupError
from onduty.spans import SpanRecord, derived_trace_id, incident_trace
from onduty.tracing import Tracing, current_ids
from tests.otlp_receiver import otlp_receiver
from tests.run_cli import onduty

SENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"


def config_document(**extra: Any) -> dict[str, Any]:
    return {
        "services": [{"name": "db", "autonomy": "act", "instances": ["db-1", "db-2"]}],
        "correlation": {"group_by": ["service", "alertname", "instance"]},
        "runbooks": [
            {
                "name": "restart-instance",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
                "verify": {"signal_resolved_within": "60s"},
            }
        ],
        "actuators": [
            {
                "kind": "shell",
                "action": "process.restart",
                "argv": ["/bin/true", "{{ target }}"],
                "allow": ["/bin/true"],
                "timeout": "5s",
            }
        ],
        **extra,
    }


def signal(instance: str, status: str = "firing") -> dict[str, Any]:
    return {
        "source": "test",
        "fingerprint": f"down-{instance}",
        "status": status,
        "labels": {"alertname": "InstanceDown", "service": "db", "instance": instance},
    }


def wait_for(service: Service, kind: str, timeout: float = 15.0) -> Event:
    deadline = time.monotonic() + timeout
    while True:
        assert service.log is not None
        for event in service.log.read():
            if event.type == kind:
                return event
        assert time.monotonic() < deadline, f"no {kind} within {timeout} s"
        time.sleep(0.05)


def act_on_one_incident(client: TestClient, service: Service, headers: dict[str, str]) -> str:
    """A signal opens an incident, its restart runs, the signal resolves and verifies it."""
    response = client.post("/api/v1/signals", json=signal("db-1"), headers=headers)
    assert response.status_code == 202, response.text
    wait_for(service, "ActionSucceeded")
    response = client.post("/api/v1/signals", json=signal("db-1", "resolved"), headers=headers)
    assert response.status_code == 202, response.text
    return str(wait_for(service, "VerificationPassed").data["incident_id"])


def hex_ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    context = span.get_span_context()
    assert context is not None
    parent = span.parent
    return (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        None if parent is None else format(parent.span_id, "016x"),
    )


def test_the_emitted_spans_and_the_trace_rebuilt_from_the_log_agree(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    config = parse_config(config_document(), "tracing-test")
    store = str(tmp_path / "onduty.db")
    service = Service(config, store, tracing=Tracing(exporter=exporter))
    sender = {"traceparent": f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"}
    with TestClient(build_app(service), base_url="http://127.0.0.1") as client:
        incident = act_on_one_incident(client, service, sender)
        answer = client.get(f"/api/v1/incidents/{incident}/trace")
        assert answer.status_code == 200, answer.text
        assert client.get("/api/v1/incidents/inc-nowhere/trace").status_code == 404
    log = open_log(store)
    try:
        events = list(log.read())
    finally:
        log.close()
    rebuilt = incident_trace(events, incident)
    emitted = exporter.get_finished_spans()
    assert answer.json() == {
        "incident_id": incident,
        "trace_id": SENDER_TRACE,
        "spans": [r.as_dict() for r in rebuilt],
    }  # the API reads the incident's events alone, and tells the same trace
    assert all(e.data["traceparent"] for e in events if e.type == "SignalReceived")
    replayed = onduty("replay", "--store", store)  # the trace contexts change no decision
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr

    # the sender's trace is the incident's: every span of it, emitted or rebuilt, is in it
    assert {r.trace_id for r in rebuilt} == {SENDER_TRACE}
    ours = [s for s in emitted if hex_ids(s)[0] == SENDER_TRACE]
    names = [r.name for r in rebuilt]
    for name in ("ingest", "correlate", "decide", "verdict", "action", "verify"):
        assert name in names, f"the rebuilt trace has no {name} span: {names}"
    # the ingest span is the first request's, a child of the sender's span
    ingest = [s for s in ours if s.name == "ingest"]
    assert len(ingest) == 2  # the firing signal's request and the resolving one's
    first_ingest = next(s for s in ingest if hex_ids(s)[1] == rebuilt[0].span_id)
    assert hex_ids(first_ingest)[2] == SENDER_SPAN

    # the spans made from the log name the same spans, parents and events as the rebuild
    def key(trace: str, span: str, parent: str | None, name: str, ids: Any) -> tuple[Any, ...]:
        return (trace, span, parent, name, tuple(ids))

    made = {
        key(*hex_ids(s), s.name, (s.attributes or {}).get("onduty.event_ids", ()))
        for s in ours
        if s.name != "ingest"
    }
    told = {key(r.trace_id, r.span_id, r.parent_id, r.name, r.event_ids) for r in rebuilt}
    assert made == {t for t in told if t[3] != "ingest"}

    # parents are consistent: each span's parent is a span of the trace (or the sender's)
    spans = {r.span_id: r for r in rebuilt}
    for record in rebuilt:
        assert record.parent_id is None or record.parent_id in spans, record
    by_name = {r.name: r for r in rebuilt}
    assert by_name["correlate"].parent_id == by_name["ingest"].span_id
    assert by_name["decide"].parent_id == by_name["correlate"].span_id
    assert by_name["verdict"].parent_id == by_name["decide"].span_id
    assert by_name["action"].parent_id == by_name["verdict"].span_id
    assert by_name["verify"].parent_id == by_name["action"].span_id
    # each span names its events, and every one of them is an event of this log
    known = {e.id: e for e in events}
    assert all(i in known for r in rebuilt for i in r.event_ids)
    assert known[by_name["action"].event_ids[0]].type == "ActionStarted"
    assert known[by_name["action"].event_ids[1]].type == "ActionSucceeded"
    action = next(s for s in ours if s.name == "action")
    assert action.attributes is not None
    assert action.attributes["onduty.incident_id"] == incident
    assert action.attributes["onduty.outcome"] == "succeeded"
    verdict = next(s for s in ours if s.name == "verdict")
    assert verdict.attributes is not None and verdict.attributes["onduty.verdict"] == "allow"


def test_without_a_trace_context_the_trace_comes_from_the_signal_event(tmp_path: Path) -> None:
    """Tracing off, no traceparent: nothing is recorded with the signal, and the rebuild
    derives the incident's trace from the id of the signal that opened it."""
    config = parse_config(config_document(), "tracing-test")
    store = str(tmp_path / "onduty.db")
    service = Service(config, store)
    with TestClient(build_app(service), base_url="http://127.0.0.1") as client:
        incident = act_on_one_incident(client, service, {})
    log = open_log(store)
    try:
        events = list(log.read())
    finally:
        log.close()
    assert all("traceparent" not in e.data for e in events if e.type == "SignalReceived")
    opened = next(e for e in events if e.type == "IncidentOpened")
    rebuilt = incident_trace(events, incident)
    assert {r.trace_id for r in rebuilt} == {derived_trace_id(opened.causation_id or "")}
    assert [r.name for r in rebuilt][:2] == ["correlate", "decide"]
    assert rebuilt[0].parent_id is None


def test_a_senders_traceparent_is_kept_when_tracing_is_off(tmp_path: Path) -> None:
    config = parse_config(config_document(), "tracing-test")
    service = Service(config, str(tmp_path / "onduty.db"))
    sent = f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"
    with TestClient(build_app(service), base_url="http://127.0.0.1") as client:
        response = client.post(
            "/api/v1/signals", json=signal("db-2"), headers={"traceparent": sent}
        )
        assert response.status_code == 202
        received = wait_for(service, "SignalReceived")
        bad = client.post(
            "/api/v1/signals", json=signal("db-2"), headers={"traceparent": "00-zz-nonsense"}
        )
        assert bad.status_code == 202  # an invalid context is ignored, as W3C says
    assert received.data["traceparent"] == sent


def test_tracing_is_off_by_default_no_exporter_no_thread(tmp_path: Path) -> None:
    config = parse_config(config_document(), "tracing-test")
    assert config.telemetry.traces.otlp_endpoint is None
    before = {t.ident for t in threading.enumerate()}
    tracing = Tracing(config.telemetry.traces)
    tracing.start()
    assert not tracing.enabled and not tracing.started
    assert tracing.projector() is None
    assert {t.ident for t in threading.enumerate()} == before
    with tracing.ingest("native", None) as received:
        assert received.traceparent is None and received.span is None


def test_the_telemetry_section_names_the_field_and_the_reason() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_document(telemetry={"traces": {"otlp_endpoint": "ftp://x/"}}), "t")
    assert any("telemetry.traces.otlp_endpoint" in p for p in caught.value.problems)
    with pytest.raises(ConfigError) as caught:
        parse_config(config_document(telemetry={"traces": {"sample_ratio": 2}}), "t")
    assert any("telemetry.traces.sample_ratio" in p for p in caught.value.problems)


def test_a_header_secret_that_cannot_be_resolved_stops_start_up(tmp_path: Path) -> None:
    traces = {
        "otlp_endpoint": "http://127.0.0.1:9/v1/traces",
        "headers": {"Authorization": "Bearer ${ENV:ONDUTY_TEST_UNSET_OTLP_TOKEN}"},
    }
    config = parse_config(config_document(telemetry={"traces": traces}), "t")
    service = Service(config, str(tmp_path / "onduty.db"))
    with pytest.raises(StartupError) as caught:
        service.prepare()
    assert "telemetry.traces.headers.Authorization" in str(caught.value)
    assert "ONDUTY_TEST_UNSET_OTLP_TOKEN" in str(caught.value)


# ---------------------------------------------------------------------------- OTLP over HTTP


def test_a_configured_otlp_endpoint_receives_the_incidents_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONDUTY_TEST_OTLP_TOKEN", "s3cret-otlp-token")
    with otlp_receiver() as (endpoint, receiver):
        traces = {
            "otlp_endpoint": endpoint,
            "service_name": "onduty-test",
            "headers": {"Authorization": "Bearer ${ENV:ONDUTY_TEST_OTLP_TOKEN}"},
        }
        config = parse_config(config_document(telemetry={"traces": traces}), "t")
        store = str(tmp_path / "onduty.db")
        service = Service(config, store)
        with TestClient(build_app(service), base_url="http://127.0.0.1") as client:
            incident = act_on_one_incident(client, service, {})
        # the service stopped: what was buffered is exported
        log = open_log(store)
        try:
            rebuilt = incident_trace(log.read(), incident)
        finally:
            log.close()
        got = receiver.spans()
        assert receiver.headers and all(
            h.get("authorization") == "Bearer s3cret-otlp-token" for h in receiver.headers
        )
    trace_id = rebuilt[0].trace_id
    mine = [span for span in got if span.trace_id == trace_id]
    assert {span.service for span in got} == {"onduty-test"}
    assert sorted((s.name, s.span_id) for s in mine) == sorted((r.name, r.span_id) for r in rebuilt)
    assert all(s.attributes["onduty.incident_id"] == incident for s in mine if s.name != "ingest")
    # every span made from the log arrives as the log tells it
    assert_arrived_as_told([s for s in mine if s.name != "ingest"], rebuilt)
    (ingest,) = [s for s in mine if s.name == "ingest"]  # the live span of the first request
    assert ingest.parent_id == "" and ingest.attributes["onduty.route"] == "native"
    assert ingest.attributes["http.response.status_code"] == 202
    assert ingest.start <= ingest.end and ingest.status == 0


def nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def assert_arrived_as_told(received: list[Any], told: list[SpanRecord]) -> None:
    """Each span received over OTLP is the span the log tells: ids, parent, name, times,
    attributes (the events it stands for included) and status (an error when it failed)."""
    by_id = {r.span_id: r for r in told if r.name != "ingest"}
    assert sorted(s.span_id for s in received) == sorted(by_id)
    for span in received:
        record = by_id[span.span_id]
        assert span.trace_id == record.trace_id and span.name == record.name
        assert span.parent_id == (record.parent_id or "")
        assert record.end is not None
        assert (span.start, span.end) == (nanoseconds(record.start), nanoseconds(record.end))
        expected = {**record.attributes, "onduty.event_ids": list(record.event_ids)}
        assert span.attributes == expected
        failed = record.attributes.get("onduty.outcome") in ("failed", "unknown")
        assert span.status == (2 if failed else 0), record


def test_an_old_logs_spans_arrive_over_otlp_as_the_log_tells_them() -> None:
    """Every span of the recovery golden log (approvals, a failed verification, an undo, an
    escalation, an action whose outcome is unknown), fed as its events become durable, decodes
    at an OTLP/HTTP receiver to what the rebuild from the log says, under the node's name."""
    events = golden_events()
    with otlp_receiver() as (endpoint, receiver):
        settings = TraceSettings(otlp_endpoint=endpoint, service_name="onduty-test")
        tracing = Tracing(settings, instance="node-7")
        tracing.start()
        feed = tracing.projector()
        assert feed is not None
        for event in events:
            feed(event)
        tracing.shutdown()
        got = receiver.spans()
    assert tracing.dropped == {}
    incidents = {str(e.data["incident_id"]) for e in events if e.type == "IncidentOpened"}
    told = [r for i in sorted(incidents) for r in incident_trace(events, i) if r.end is not None]
    assert len(told) > 10 and any(r.attributes.get("onduty.outcome") == "failed" for r in told)
    assert {(s.service, s.instance) for s in got} == {("onduty-test", "node-7")}
    assert_arrived_as_told(got, told)


def test_a_failing_endpoint_drops_and_counts_the_spans_and_says_so_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ONDUTY_TEST_OTLP_TOKEN", "s3cret-otlp-token")
    with otlp_receiver() as (endpoint, receiver):
        receiver.refuse = 503
        traces = {
            "otlp_endpoint": endpoint,
            "headers": {"Authorization": "Bearer ${ENV:ONDUTY_TEST_OTLP_TOKEN}"},
        }
        config = parse_config(config_document(telemetry={"traces": traces}), "t")
        service = Service(config, str(tmp_path / "onduty.db"))
        with (
            caplog.at_level("WARNING", logger="onduty.tracing"),
            TestClient(build_app(service), base_url="http://127.0.0.1") as client,
        ):
            act_on_one_incident(client, service, {})
            service.tracing.flush()
            metrics = client.get("/metrics").text
    dropped = [
        line for line in metrics.splitlines() if line.startswith("onduty_trace_spans_dropped_total")
    ]
    assert any('reason="export_failed"' in line and not line.endswith(" 0.0") for line in dropped)
    assert receiver.refused >= 3  # each batch is tried three times before it is dropped
    assert not receiver.requests
    warned = [r.getMessage() for r in caplog.records if r.name == "onduty.tracing"]
    assert warned and "HTTP 503" in warned[0] and "cannot export spans" in warned[0]
    assert len(warned) == 1  # at most one line a minute
    assert endpoint in warned[0] and all("s3cret-otlp-token" not in line for line in warned)


def test_a_full_export_queue_drops_and_counts_instead_of_waiting() -> None:
    """An endpoint that hangs never holds up the thread that makes the spans: beyond the
    queue's bound, spans are dropped and counted."""
    released = threading.Event()
    sent: list[bytes] = []

    def hanging(body: bytes) -> None:
        released.wait(10)
        sent.append(body)

    counted: list[tuple[str, int]] = []
    spans = SpanExport(
        SpanEncoder({"service.name": "onduty"}, "onduty"),
        hanging,
        where="nowhere",
        max_queue=10,
        batch=4,
        delay=0.01,
        on_drop=lambda reason, count: counted.append((reason, count)),
    )
    records = [r for r in incident_trace(golden_events(), "inc-f25e68c548f8f284") if r.end]
    started = time.monotonic()
    for _ in range(20):
        for record in records:
            spans.put(record)
    assert time.monotonic() - started < 1.0  # never waits for the endpoint
    released.set()
    spans.shutdown()
    total = 20 * len(records)
    arrived = sum(
        len(s.spans)
        for body in sent
        for r in ExportTraceServiceRequest.FromString(body).resource_spans
        for s in r.scope_spans
    )
    assert spans.dropped["queue_full"] == total - arrived > 0
    assert sum(c for reason, c in counted if reason == "queue_full") == total - arrived
    assert spans.dropped["export_failed"] == 0


def golden_events() -> list[Event]:
    golden = Path(__file__).resolve().parent / "fixtures" / "golden" / "recovery.jsonl"
    return [Event.model_validate_json(line) for line in golden.read_text().splitlines()]


def test_onduty_trace_shows_the_incidents_trace_from_the_log(tmp_path: Path) -> None:
    store = tmp_path / "sim.db"
    assert onduty("sim", "demo", "--store", str(store)).returncode == 0
    log = open_log(str(store))
    try:
        events = list(log.read())
    finally:
        log.close()
    incident = next(e for e in events if e.type == "VerificationPassed").data["incident_id"]
    expected = incident_trace(events, incident)

    shown = onduty("trace", incident, "--store", str(store), "--json")
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line) for line in shown.stdout.splitlines()] == [
        r.as_dict() for r in expected
    ]
    text = onduty("trace", incident, "--store", str(store))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"trace {expected[0].trace_id}  incident {incident}"
    assert [line.split()[0] for line in lines[1:]] == [r.name for r in expected]
    assert lines[2].startswith("  decide")  # a child is indented under its parent

    missing = onduty("trace", "inc-nowhere", "--store", str(store))
    assert missing.returncode == 2 and "no incident 'inc-nowhere'" in missing.stderr


def test_current_ids_name_the_ingest_span_while_it_runs() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(exporter=exporter)
    tracing.start()
    sent = f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"
    assert current_ids() is None
    with tracing.ingest("native", sent) as received:
        ids = current_ids()
        assert ids is not None and ids[0] == SENDER_TRACE and ids[1] != SENDER_SPAN
        assert received.traceparent == f"00-{ids[0]}-{ids[1]}-01"
        received.finish(202)
    assert current_ids() is None
    (span,) = exporter.get_finished_spans()
    assert span.name == "ingest" and hex_ids(span)[2] == SENDER_SPAN
    tracing.shutdown()


def test_a_sample_ratio_of_zero_exports_nothing_and_keeps_the_senders_trace() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TraceSettings(sample_ratio=0.0), exporter=exporter)
    tracing.start()
    sent = f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"
    with tracing.ingest("native", sent) as received:
        received.finish(202)
    assert received.traceparent is not None  # the sender's trace, left out whole
    assert received.traceparent.startswith(f"00-{SENDER_TRACE}-")
    assert received.traceparent.endswith("-00")
    feed = tracing.projector()
    assert feed is not None
    for event in demo_events():
        feed(event)
    tracing.shutdown()  # whatever was queued is exported first
    assert exporter.get_finished_spans() == ()


def demo_events() -> list[Event]:
    from onduty.events import IncidentOpened, SignalReceived, make_event

    moment = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    body = SignalReceived(**signal("db-1"))
    opened = IncidentOpened(
        incident_id="inc-1", group_key={}, title="db-1 is down", fingerprint="down-db-1"
    )
    return [
        make_event(body, id="ev-1", ts=moment, stream="signal:down-db-1"),
        make_event(opened, id="ev-1:0", ts=moment, stream="inc-1", causation_id="ev-1",
                   correlation_id="inc-1"),
    ]  # fmt: skip


def test_an_incident_keeps_its_trace_across_a_restart(tmp_path: Path) -> None:
    """The action ran before a restart; its verification, after it, is still a span of the
    incident's trace, a child of the action's span (read back from the log)."""
    config = parse_config(config_document(), "tracing-test")
    store = str(tmp_path / "onduty.db")
    sender = {"traceparent": f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"}
    first = Service(config, store, tracing=Tracing(exporter=InMemorySpanExporter()))
    with TestClient(build_app(first), base_url="http://127.0.0.1") as client:
        response = client.post("/api/v1/signals", json=signal("db-1"), headers=sender)
        assert response.status_code == 202, response.text
        wait_for(first, "ActionSucceeded")
    exporter = InMemorySpanExporter()
    second = Service(config, store, tracing=Tracing(exporter=exporter))
    with TestClient(build_app(second), base_url="http://127.0.0.1") as client:
        response = client.post("/api/v1/signals", json=signal("db-1", "resolved"))
        assert response.status_code == 202, response.text
        incident = str(wait_for(second, "VerificationPassed").data["incident_id"])
    log = open_log(store)
    try:
        rebuilt = {r.name: r for r in incident_trace(log.read(), incident)}
    finally:
        log.close()
    (verify,) = [s for s in exporter.get_finished_spans() if s.name == "verify"]
    assert hex_ids(verify) == (SENDER_TRACE, rebuilt["verify"].span_id, rebuilt["action"].span_id)
    assert {s.name for s in exporter.get_finished_spans()} == {"ingest", "verify"}


def test_an_old_log_gives_its_incidents_traces_undo_and_escalation_included() -> None:
    """A log recorded before traces existed (the recovery golden log): two-person approval, a
    failed verification, its undo and the escalation, each a span where the work put it."""
    golden = Path(__file__).resolve().parent / "fixtures" / "golden" / "recovery.jsonl"
    events = [Event.model_validate_json(line) for line in golden.read_text().splitlines()]
    spans = incident_trace(events, "inc-f25e68c548f8f284")
    assert [s.name for s in spans] == [
        "correlate", "decide", "verdict", "verdict", "action", "verify", "escalate", "undo",
    ]  # fmt: skip
    named = {s.name: s for s in spans}
    first, second = (s for s in spans if s.name == "verdict")
    assert first.attributes["onduty.verdict"] == "require_approval"
    assert second.attributes["onduty.verdict"] == "allow"
    assert first.parent_id == second.parent_id == named["decide"].span_id
    assert named["action"].parent_id == second.span_id  # the verdict that let it run
    assert named["verify"].attributes["onduty.outcome"] == "failed"
    assert named["escalate"].parent_id == named["verify"].span_id
    assert named["undo"].parent_id == named["verify"].span_id
    assert named["undo"].attributes["onduty.outcome"] == "succeeded"
    assert {s.trace_id for s in spans} == {derived_trace_id("run1-2")}
    # an action whose outcome was never known ends the span as unknown
    unknown = {s.name: s for s in incident_trace(events, "inc-dc7e3c4aefafa52d")}
    assert unknown["action"].attributes["onduty.outcome"] == "unknown"
