"""A fleet's traces cross processes: a signal taken by an ingest node and handled by the manager
that runs its partition (over NATS JetStream, on PostgreSQL) gives spans, from both processes,
in one trace: the incident's, as `onduty trace` rebuilds it from the store."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml

from tests.integration.fleet import fleet, held, signal_body, wait_for
from tests.otlp_receiver import otlp_receiver

SENDER_TRACE = "0af7651916cd43dd8448eb211c80319c"
SENDER_SPAN = "b7ad6b7169203331"


def test_spans_from_the_ingest_node_and_the_manager_share_the_incidents_trace(
    tmp_path: Path,
) -> None:
    with otlp_receiver() as (endpoint, receiver), fleet(tmp_path, partitions=2, instances=2) as f:
        document = yaml.safe_load(f.config.read_text())
        document["telemetry"] = {"traces": {"otlp_endpoint": endpoint}}
        f.config.write_text(yaml.safe_dump(document))
        ingest = f.server("ingest-1", "--role", "ingest").start()
        manager = f.server("manager-1", "--role", "manager").start()
        wait_for(lambda: held(manager) == 2, 20, "the manager runs both partitions")
        sent = httpx.post(
            f"{ingest.url}/api/v1/signals",
            json=signal_body("web-1"),
            headers={"traceparent": f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"},
            timeout=10,
        )
        assert sent.status_code == 202, sent.text
        wait_for(lambda: f.runs() == {"web-1": 1}, 30, "the restart ran")
        wait_for(lambda: "action" in {s.name for s in receiver.spans()}, 30, "the action span")

        def told() -> dict[str, object] | None:  # by the ingest node, from the store
            listed = httpx.get(f"{ingest.url}/api/v1/incidents", timeout=10).json()
            if not listed:
                return None
            answer = httpx.get(f"{ingest.url}/api/v1/incidents/{listed[0]['id']}/trace")
            names = {span["name"] for span in answer.json()["spans"]}
            return answer.json() if answer.status_code == 200 and "action" in names else None

        wait_for(told, 20, "the incident's trace read by the ingest node")
        from_api = told()
        assert from_api is not None
        assert ingest.terminate() == 0 and manager.terminate() == 0
        incident = str(from_api["incident_id"])
        traced = f.command("trace", incident, "--json")
        assert traced.returncode == 0, traced.stderr
        rebuilt = [json.loads(line) for line in traced.stdout.splitlines()]

    spans = [s for s in receiver.spans() if s.trace_id == SENDER_TRACE]
    by_node = {s.instance for s in spans}
    assert by_node == {"ingest-1", "manager-1"}, spans
    assert {s.name for s in spans if s.instance == "ingest-1"} == {"ingest"}
    made = {s.name for s in spans if s.instance == "manager-1"}
    assert {"correlate", "decide", "verdict", "action"} <= made
    ingest_span = next(s for s in spans if s.name == "ingest")
    assert ingest_span.parent_id == SENDER_SPAN  # a child of the sender's span
    correlate = next(s for s in spans if s.name == "correlate")
    assert correlate.parent_id == ingest_span.span_id  # across the bus, by the signal's record
    # the store alone tells the same trace
    assert {r["trace_id"] for r in rebuilt} == {SENDER_TRACE}
    assert {(r["name"], r["span_id"]) for r in rebuilt} == {(s.name, s.span_id) for s in spans}
    assert from_api["spans"] == rebuilt
