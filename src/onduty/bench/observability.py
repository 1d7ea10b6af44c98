"""The cost of seeing itself: ingest and decision throughput of `onduty serve` with its metrics,
traces and logs on, against the same server with them off, in the same run.

On: the per-event metrics projection fed, every incident's spans exported over OTLP/HTTP to a
sink on loopback (sampling 1.0), logs at `info` as JSON lines. Off: no per-event metrics, no
traces, logs at `warning`. Each workload runs `off` and `on` alternately on fresh stores (three
rounds, one with `quick`) and compares the medians, as a ratio; the target is a cost under 10%
(on/off >= 0.90).

1. Ingest: unique alerts (every alert new), webhooks of 50, closed loop with 32 connections, as
   in the `ingest` workload, grouped as a fleet groups them (service, alertname; 30 s wait).
2. Decisions: every alert its own incident (grouped by instance, alertname and the request's
   mark), decided at once (no group wait), a runbook proposing an HTTP action for every one
   (sent to the sink); throughput is verdicts recorded per second from the first request until
   the core's queue is empty.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from onduty.bench._alerts import (
    ONDUTY_PATH,
    PER_REQUEST,
    Checks,
    alert_stream,
    audit_verify,
    burst_problems,
    config_document,
    events_in_log,
    serving,
)
from onduty.bench._loadgen import burst
from onduty.bench._procs import LOAD_CPUS, SERVER_CPUS, where
from onduty.bench._serve import Server
from onduty.bench._sink import Sink
from onduty.bench._workload import Row, per_second, progress, ratio, row

CONNECTIONS = {False: 32, True: 8}
"""By workload (deciding or not): a request whose 50 alerts each open an incident takes longer,
and fewer connections keep the closed loop's answers inside its window."""
SECONDS = {True: 1.5, False: 10.0}
WARMUP = {True: 0.0, False: 2.0}
ROUNDS = {True: 1, False: 3}
TARGET_RATIO = 0.90
PARTS = ("metrics", "traces", "logs")
DRAIN_TIMEOUT = 600.0


@dataclass
class Run:
    alerts_per_second: float
    decisions_per_second: float
    verdicts: int
    spans_sent: int


def server_config(
    seeing: bool, deciding: bool, sink: str, parts: frozenset[str] = frozenset(PARTS)
) -> dict[str, Any]:
    """The server's config; `seeing` turns on the `parts` of seeing itself (metrics, traces;
    logs are turned on by the log level)."""
    document = config_document()
    telemetry: dict[str, Any] = {"event_metrics": seeing and "metrics" in parts}
    if seeing and "traces" in parts:
        telemetry["traces"] = {"otlp_endpoint": f"{sink}/v1/traces", "sample_ratio": 1.0}
    document["telemetry"] = telemetry
    if deciding:
        document["correlation"] = {
            "group_by": ["instance", "alertname", "uniq"],
            "group_wait": "0s",
        }
        document["runbooks"] = [
            {
                "name": "bench-fix",
                "when": "true",
                "do": [{"action": "bench.fix", "target": "{{ signal.labels.instance }}"}],
            }
        ]
        # A budget keeps what runs small (a shutdown waits for every action started): past it,
        # proposals are still decided, and denied.
        document["policy"] = {
            "guardrails": [
                {"name": "bench-budget", "rate": {"action": "bench.fix", "max": 200, "per": "1h"}}
            ]
        }
        document["actuators"] = [
            {
                "kind": "http",
                "action": "bench.fix",
                "method": "PUT",
                "url": sink + "/act/{{ target }}",
            }
        ]
    return document


def _server(folder: Path, seeing: bool, deciding: bool, sink: str, parts: frozenset[str]) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "onduty.yaml"
    document = server_config(seeing, deciding, sink, parts)
    config.write_bytes(orjson.dumps(document))  # JSON is YAML
    level = "info" if seeing and "logs" in parts else "warning"
    return Server(
        folder / "bench.db", "--max-pending", "200000", "--log-level", level, config=config
    )


def _queued(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('onduty_queue_depth{queue="core"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _one(
    bodies: list[bytes],
    seeing: bool,
    deciding: bool,
    quick: bool,
    folder: Path,
    checks: Checks,
    parts: frozenset[str] = frozenset(PARTS),
) -> Run:
    with Sink() as sink:
        server = _server(folder, seeing, deciding, sink.url, parts)
        with serving(server, checks):
            if WARMUP[quick]:
                burst(
                    server.url, ONDUTY_PATH, bodies, ok_status=202,
                    connections=CONNECTIONS[deciding], seconds=WARMUP[quick],
                    folder=folder / "warmup", unique="w",
                )  # fmt: skip
            began = time.perf_counter()
            result = burst(
                server.url, ONDUTY_PATH, bodies, ok_status=202,
                connections=CONNECTIONS[deciding], seconds=SECONDS[quick],
                folder=folder / "run", unique="u",
            )  # fmt: skip
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while _queued(server) > 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            drained = time.perf_counter() - began
        checks.failures += burst_problems("on" if seeing else "off", result, 202)
        if not quick:
            audit_verify(server.store, checks)
        verdicts = events_in_log(server.store, "PolicyEvaluated") if deciding else 0
        spans = sink.count("/v1/traces")
    checks.expect(
        not seeing or "traces" not in parts or spans > 0,
        "with traces on, no export reached the OTLP sink",
    )
    return Run(
        alerts_per_second=result.requests_per_second() * PER_REQUEST,
        decisions_per_second=verdicts / drained if drained > 0 else 0.0,
        verdicts=verdicts,
        spans_sent=spans,
    )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def run(quick: bool = False) -> list[Row]:
    stream = alert_stream()
    rows: list[Row] = []
    setting = (
        f"unique alerts in webhooks of {PER_REQUEST}, {CONNECTIONS[False]} connections "
        f"({CONNECTIONS[True]} deciding), "
        f"{SECONDS[quick]:g} s x {ROUNDS[quick]} rounds alternating off/on (medians), server "
        f"{where(SERVER_CPUS)}, generator {where(LOAD_CPUS)}"
    )
    for deciding in (False, True):
        label = "decisions" if deciding else "ingest"
        checks = Checks()
        runs: dict[bool, list[Run]] = {False: [], True: []}
        with tempfile.TemporaryDirectory(prefix="onduty-bench-observability-") as name:
            for round_ in range(ROUNDS[quick]):
                for seeing in (False, True):
                    progress(
                        f"observability: {label}, round {round_ + 1}, {'on' if seeing else 'off'}"
                    )
                    folder = Path(name) / f"{label}-{round_}-{'on' if seeing else 'off'}"
                    runs[seeing].append(
                        _one(stream.unique_onduty, seeing, deciding, quick, folder, checks)
                    )
        if deciding:
            off = _median([r.decisions_per_second for r in runs[False]])
            on = _median([r.decisions_per_second for r in runs[True]])
            unit, what = "verdicts/s", "verdicts"
        else:
            off = _median([r.alerts_per_second for r in runs[False]])
            on = _median([r.alerts_per_second for r in runs[True]])
            unit, what = "alerts/s", "alerts"
        spans = sum(r.spans_sent for r in runs[True])
        figure = f"seeing itself ON: {per_second(on, what)} ({spans:,} span exports)"
        peer = (
            f"the same server with metrics, traces and logs OFF, same run: "
            f"{per_second(off, what)}; cost {max(0.0, 1 - on / off) if off else 0.0:.1%} "
            f"(target < {1 - TARGET_RATIO:.0%}; on/off {ratio(on / off) if off else 'n/a'})"
        )
        rows.append(
            row(
                f"cost of seeing itself, {label}: {setting}",
                figure,
                on,
                unit,
                peer,
                on / off if off else 0.0,
            )
        )
        checks.notes.append(f"{sum(len(r) for r in runs.values())} servers, each exited 0")
        rows.append(checks.row(f"cost of seeing itself, {label}, checks: every request 202"))
    return rows
