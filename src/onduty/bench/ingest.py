"""Durable HTTP ingest: `onduty serve` as a subprocess on loopback, driven over HTTP.

The alert stream: a pool of 3,000 firing alerts (10 alert names x the 300 instances of a
six-service fleet, ~880 bytes each in a webhook, with Kubernetes-style labels, annotations and
a generator URL), grouped by alertname into notifications of 50 alerts (6 per alert name, 60
bodies), re-sent round-robin the way Alertmanager re-notifies its groups: the core sees the
first sight of each fingerprint, then repeats spread over the whole pool. (No alert changes
status: with the stream looping every second or so, any change would repeat at that pace and
turn every incident into a flapping one.)

Measured, with a fresh store and a service config for the fleet:

1. throughput: Alertmanager webhook notifications (payload v4) of 50 alerts each, closed loop
   with 32 keep-alive connections for 10 s (2 s with `quick`) after a 2 s warm-up (none with
   `quick`); alerts/s acknowledged with 202, i.e. durably in the log (one fsync per group
   commit, synchronous=FULL). The load generator is wrk when available (the asyncio client of
   `_loadgen` in two processes otherwise) and shares the machine's two cores with the server.
2. latency: single-alert notifications at a fixed 500 requests/s for 10 s (2 s with `quick`),
   open loop, each request timed from its scheduled send to its 202 (the asyncio client of
   `_loadgen`, 32 keep-alive connections).
3. checks: every request answered 202, `onduty audit verify` exits 0, and the log holds exactly
   as many `SignalReceived` events as alerts acknowledged with 202. Failures are reported as
   rows, never hidden.

The peer, in the same run (skipped with `quick`): a real Prometheus Alertmanager on loopback
fed the same alerts through `POST /api/v2/alerts`, 50 per request, by the same generator with
the same concurrency. Alertmanager keeps alerts in memory only; onduty's figure is durable.
"""

from __future__ import annotations

import hashlib
import math
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from onduty.bench._loadgen import SCRIPTS, Burst, CpuWatch, Latencies, burst, open_loop
from onduty.bench._serve import Server, free_port
from onduty.bench._workload import FLEET, Row, fleet_services, per_second, plain_row, row

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
ONDUTY_PATH = "/api/v1/signals/alertmanager"
ALERTMANAGER_PATH = "/api/v2/alerts"

PER_REQUEST = 50
CONNECTIONS = 32
SECONDS = {True: 2.0, False: 10.0}
WARMUP = {True: 0.0, False: 2.0}
LATENCY_RATE = 500.0
LATENCY_CONNECTIONS = 32
TARGET_ALERTS = 50_000.0
TARGET_P99 = 0.020
ALERT_NAMES = (
    "InstanceDown",
    "HighMemoryUsage",
    "HighErrorRate",
    "DiskSpaceLow",
    "HighLatency",
    "HighCPUUsage",
    "PodCrashLooping",
    "ContainerOOMKilled",
    "CertificateExpiringSoon",
    "TooManyOpenFiles",
)
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: what Alertmanager sends for "no end"


# --------------------------------------------------------------------------- the alert stream


@dataclass(frozen=True)
class Alert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    generator_url: str

    @property
    def fingerprint(self) -> str:
        labels = orjson.dumps(self.labels, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(labels).hexdigest()[:16]

    @property
    def group(self) -> tuple[str, str, str]:
        return self.labels["alertname"], self.labels["service"], self.labels["instance"]


def alert_pool(now: datetime, seed: int = 29) -> list[Alert]:
    rng = random.Random(seed)
    pool = []
    for index, (service, (tier, _autonomy, count)) in enumerate(FLEET.items()):
        region = "eu-west-1" if index % 2 == 0 else "us-east-1"
        for number in range(1, count + 1):
            instance = f"{service}-{number}"
            for alertname in ALERT_NAMES:
                expr = f'{alertname.lower()}{{job="{service}",instance="{instance}"}} > 0.9'
                pool.append(
                    Alert(
                        labels={
                            "alertname": alertname,
                            "service": service,
                            "instance": instance,
                            "job": service,
                            "severity": "critical" if tier in ("critical", "high") else "warning",
                            "team": f"team-{service}",
                            "env": "production",
                            "cluster": f"prod-{region}",
                            "region": region,
                            "namespace": f"{service}-prod",
                            "pod": f"{instance}-{rng.randrange(16**10):010x}",
                            "prometheus": "monitoring/k8s",
                        },
                        annotations={
                            "summary": f"{alertname} on {instance}",
                            "description": (
                                f"{alertname} has been active on {instance} ({service}, "
                                f"{region}) for more than 5 minutes; current value "
                                f"{rng.uniform(0.9, 1.0):.3f}."
                            ),
                            "runbook_url": f"https://runbooks.example.com/{service}/{alertname}",
                            "dashboard": f"https://grafana.example.com/d/{service}?var-instance="
                            f"{instance}",
                        },
                        starts_at=(now - timedelta(minutes=rng.uniform(5, 600))).strftime(
                            "%Y-%m-%dT%H:%M:%S.%fZ"
                        ),
                        generator_url="http://prometheus-k8s-0.monitoring.svc:9090/graph?g0.expr="
                        + quote(expr, safe="")
                        + "&g0.tab=1",
                    )
                )
    return pool


@dataclass
class Stream:
    """The same alerts, shaped for onduty (webhook v4) and for Alertmanager (API v2)."""

    onduty: list[bytes] = field(default_factory=list)
    alertmanager: list[bytes] = field(default_factory=list)
    single: list[bytes] = field(default_factory=list)  # one alert per webhook, for latency
    alerts: int = 0
    fingerprints: int = 0

    def bytes_per_alert(self) -> float:
        return sum(len(body) for body in self.onduty) / max(1, self.alerts)


def _webhook(alerts: list[Alert]) -> bytes:
    """A webhook notification (payload v4) of firing alerts, as Alertmanager sends it."""
    common = {
        key: value
        for key, value in alerts[0].labels.items()
        if all(alert.labels.get(key) == value for alert in alerts)
    }
    alertname = alerts[0].labels["alertname"]
    return orjson.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="' + alertname + '"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "onduty",
            "groupLabels": {"alertname": alertname},
            "commonLabels": common,
            "commonAnnotations": {},
            "externalURL": "http://alertmanager-main-0.monitoring.svc:9093",
            "alerts": [
                {
                    "status": "firing",
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                    "startsAt": alert.starts_at,
                    "endsAt": ZERO_TIME,
                    "generatorURL": alert.generator_url,
                    "fingerprint": alert.fingerprint,
                }
                for alert in alerts
            ],
        }
    )


def _postable(alerts: list[Alert], ends_at: str) -> bytes:
    """The same alerts for Alertmanager's `POST /api/v2/alerts`, as Prometheus sends them."""
    return orjson.dumps(
        [
            {
                "labels": alert.labels,
                "annotations": alert.annotations,
                "startsAt": alert.starts_at,
                "endsAt": ends_at,
                "generatorURL": alert.generator_url,
            }
            for alert in alerts
        ]
    )


def alert_stream(seed: int = 29) -> Stream:
    moment = datetime.now(UTC)
    ends_at = (moment + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    pool = sorted(alert_pool(moment, seed), key=lambda a: a.group)
    rng = random.Random(seed)
    chunks = [pool[i : i + PER_REQUEST] for i in range(0, len(pool), PER_REQUEST)]
    rng.shuffle(chunks)
    stream = Stream(fingerprints=len(pool))
    for chunk in chunks:
        stream.onduty.append(_webhook(chunk))
        stream.alertmanager.append(_postable(chunk, ends_at))
        stream.alerts += len(chunk)
    stream.single.extend(_webhook([alert]) for alert in rng.sample(pool, len(pool)))
    return stream


def config_document() -> dict[str, Any]:
    """The fleet's services and a correlation by (service, alertname): a realistic core."""
    return {
        "services": fleet_services(),
        "correlation": {
            "group_by": ["service", "alertname"],
            "group_wait": "30s",
            "flap_threshold": 6,
            "flap_window": "20m",
        },
        "escalation": {"default": [{"notify": ["sre-primary"]}]},
    }


# --------------------------------------------------------------------------- the runs


@dataclass
class Checks:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def expect(self, holds: bool, failure: str) -> None:
        if not holds:
            self.failures.append(failure)


def _signals_in_log(store: Path) -> int:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        (count,) = conn.execute(
            "SELECT count(*) FROM events WHERE type = 'SignalReceived'"
        ).fetchone()
        return int(count)
    finally:
        conn.close()


def _statuses(counts: Counter[int]) -> str:
    return ", ".join(f"{status}: {count:,}" for status, count in sorted(counts.items())) or "none"


def _burst_problems(name: str, result: Burst, expected: int) -> list[str]:
    problems = []
    if result.unexpected:
        problems.append(
            f"{name}: {result.unexpected:,} answers other than {expected} "
            f"({_statuses(result.statuses)}; 429 means --max-pending was too small)"
        )
    if result.errors or result.timeouts:
        problems.append(f"{name}: {result.errors} socket errors, {result.timeouts} timeouts")
    if result.unanswered:
        problems.append(f"{name}: {result.unanswered:,} requests never answered")
    if result.ok == 0:
        problems.append(f"{name}: no request was answered {expected}")
    return problems


@dataclass
class OndutyRun:
    throughput: Burst
    warmup: Burst | None
    latency: Latencies
    checks: Checks
    bytes_per_alert: float
    others: float  # cores used by other processes during the throughput and latency runs


def _run_onduty(stream: Stream, quick: bool, folder: Path) -> OndutyRun:
    store = folder / "ingest.db"
    config = folder / "onduty.yaml"
    config.write_bytes(orjson.dumps(config_document()))  # JSON is YAML
    checks = Checks()
    server = Server(store, "--max-pending", "200000", "--log-level", "warning", config=config)
    acknowledged = 0
    try:
        server.start()
        warmup = None
        if WARMUP[quick]:
            warmup = _closed_loop(
                server.url, ONDUTY_PATH, stream.onduty, 202, WARMUP[quick], folder / "warmup"
            )
            checks.failures += _burst_problems("warm-up", warmup, 202)
            acknowledged += warmup.ok * PER_REQUEST
        assert server.process is not None
        with CpuWatch(server.process.pid) as during_throughput:
            throughput = _closed_loop(
                server.url, ONDUTY_PATH, stream.onduty, 202, SECONDS[quick], folder / "throughput"
            )
        checks.failures += _burst_problems("throughput", throughput, 202)
        acknowledged += throughput.ok * PER_REQUEST
        # Every request was answered before the generator stopped, and 202 means committed:
        # the count is final right away.
        logged = _signals_in_log(store)
        checks.expect(
            logged == acknowledged,
            f"after the throughput run the log holds {logged:,} SignalReceived events but "
            f"{acknowledged:,} alerts were acknowledged with 202",
        )
        checks.notes.append(f"{logged:,} SignalReceived = {acknowledged:,} acknowledged")

        with CpuWatch(server.process.pid) as during_latency:
            latency = open_loop(
                server.url,
                ONDUTY_PATH,
                stream.single,
                ok_status=202,
                rate=LATENCY_RATE,
                seconds=SECONDS[quick],
                connections=LATENCY_CONNECTIONS,
            )
        if latency.statuses or latency.errors or latency.ok != latency.scheduled:
            checks.failures.append(
                f"latency: {latency.ok:,} of {latency.scheduled:,} answered 202 "
                f"(other: {_statuses(latency.statuses)}; {latency.errors} errors)"
            )
        acknowledged += latency.ok
    finally:
        code = _stop(server)
    checks.expect(code == 0, f"onduty serve exited {code} on SIGTERM")

    verify = subprocess.run(
        [sys.executable, "-m", "onduty", "audit", "verify", "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=folder,
    )
    checks.expect(
        verify.returncode == 0,
        f"onduty audit verify exited {verify.returncode}: "
        f"{(verify.stdout + verify.stderr).strip()[-300:]}",
    )
    logged = _signals_in_log(store)
    checks.expect(
        logged == acknowledged,
        f"at the end the log holds {logged:,} SignalReceived events but {acknowledged:,} "
        "alerts were acknowledged with 202",
    )
    others = max(during_throughput.others, during_latency.others)
    return OndutyRun(throughput, warmup, latency, checks, stream.bytes_per_alert(), others)


def _closed_loop(
    url: str, path: str, bodies: Sequence[bytes], ok_status: int, seconds: float, folder: Path
) -> Burst:
    """POST `bodies` round-robin over the runs' CONNECTIONS keep-alive connections."""
    return burst(
        url,
        path,
        bodies,
        ok_status=ok_status,
        connections=CONNECTIONS,
        seconds=seconds,
        folder=folder,
    )


def _stop(server: Server) -> int | None:
    """SIGTERM (onduty drains and exits 0), or SIGKILL when it does not stop in time."""
    if server.process is None or server.process.poll() is not None:
        return None if server.process is None else server.process.returncode
    try:
        return server.terminate(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        return None


def _ensure_alertmanager() -> bool:
    script = SCRIPTS / "ensure_alertmanager.sh"
    if not ALERTMANAGER.exists() and script.exists():
        subprocess.run(
            ["bash", str(script)],
            check=False,
            capture_output=True,
            timeout=300,
        )
    return ALERTMANAGER.exists()


def _alertmanager_version() -> str:
    done = subprocess.run(
        [str(ALERTMANAGER), "--version"], capture_output=True, text=True, check=False, timeout=10
    )
    words = (done.stdout + done.stderr).split()
    return words[2].rstrip(",") if len(words) > 2 and words[1] == "version" else "?"


def _run_alertmanager(stream: Stream, folder: Path) -> tuple[Burst, float] | str:
    """The peer's throughput and the cores other processes used meanwhile, or why it could
    not be measured."""
    if not _ensure_alertmanager():
        return "Alertmanager could not be installed"
    port = free_port()
    config = folder / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    url = f"http://127.0.0.1:{port}"
    with (folder / "alertmanager.log").open("wb") as output:
        process = subprocess.Popen(
            [
                str(ALERTMANAGER),
                f"--config.file={config}",
                f"--storage.path={folder / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                return "Alertmanager did not start"
            time.sleep(0.1)
        _closed_loop(
            url, ALERTMANAGER_PATH, stream.alertmanager, 200, WARMUP[False], folder / "am-warmup"
        )
        with CpuWatch(process.pid) as during:
            result = _closed_loop(
                url,
                ALERTMANAGER_PATH,
                stream.alertmanager,
                200,
                SECONDS[False],
                folder / "am-throughput",
            )
        return result, during.others
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# --------------------------------------------------------------------------- the rows


def _elsewhere(cores: float) -> str:
    """The caveat of a shared machine: CPU other processes used during the run."""
    if math.isnan(cores):
        return ""
    return f" (other processes used {cores:.2f} cores meanwhile)"


def _ms(value: float) -> str:
    return f"{value * 1000:,.1f} ms" if not math.isnan(value) else "n/a"


def run(quick: bool = False) -> list[Row]:
    stream = alert_stream()
    with tempfile.TemporaryDirectory(prefix="onduty-bench-ingest-") as name:
        folder = Path(name)
        onduty = _run_onduty(stream, quick, folder)
        peer = None if quick else _run_alertmanager(stream, folder)

    result = onduty.throughput
    alerts_rate = result.requests_per_second() * PER_REQUEST
    seconds = SECONDS[quick]
    name = (
        f"durable ingest: Alertmanager webhooks of {PER_REQUEST} alerts "
        f"(~{onduty.bytes_per_alert:,.0f} B/alert, {len(stream.onduty)} bodies over "
        f"{stream.fingerprints:,} fingerprints), {result.connections} connections, "
        f"{seconds:.0f} s, 202 only after fsync (group commit, synchronous=FULL); "
        f"generator: {result.generator}, sharing the 2 cores with the server"
        f"{_elsewhere(onduty.others)}; target >= {TARGET_ALERTS:,.0f} alerts/s"
    )
    figure = (
        f"{per_second(alerts_rate, 'alerts')} ({per_second(result.requests_per_second(), 'req')})"
    )
    if isinstance(peer, tuple):
        am, am_others = peer
        peer_rate = am.requests_per_second() * PER_REQUEST
        problems = _burst_problems("Alertmanager", am, 200)
        peer_text = (
            f"Alertmanager {_alertmanager_version()} POST /api/v2/alerts, same alerts, "
            f"generator and connections{_elsewhere(am_others)}; IN MEMORY ONLY, not durable: "
            f"{per_second(peer_rate, 'alerts')} "
            f"({per_second(am.requests_per_second(), 'req')})"
            + (f"; {'; '.join(problems)}" if problems else "")
        )
        throughput_row = row(
            name, figure, alerts_rate, "alerts/s", peer_text, alerts_rate / peer_rate
        )
    else:
        reason = peer or "skipped with --quick"
        throughput_row = plain_row(name, figure, alerts_rate, "alerts/s", f"Alertmanager: {reason}")

    answered = result.ok + result.unexpected
    non_202 = result.unexpected + result.errors + result.timeouts + result.unanswered
    responses_row = plain_row(
        "durable ingest: answers other than 202 in the throughput run "
        "(429 = ingest queue full, 503 = log unavailable)",
        f"{'OK' if not non_202 else 'FAILURE'}: {non_202:,} of {result.sent:,} requests "
        f"({answered:,} answered; other statuses: {_statuses(result.statuses)}; "
        f"socket errors {result.errors}, timeouts {result.timeouts}, "
        f"unanswered {result.unanswered})",
        non_202,
        "responses",
    )

    latency = onduty.latency
    p99 = latency.percentile(0.99)
    latency_name = (
        f"durable ingest latency: single-alert webhooks, open loop at {LATENCY_RATE:,.0f} req/s"
    )
    p50, worst = latency.percentile(0.5), latency.max()
    latency_rows = [
        plain_row(f"{latency_name}: p50", f"p50 {_ms(p50)}", p50 * 1000, "ms"),
        row(
            f"{latency_name} for {seconds:.0f} s after the throughput run, timed from the "
            f"scheduled send to the 202 (asyncio HTTP/1.1 client, {LATENCY_CONNECTIONS} "
            f"keep-alive connections, sender lag max {_ms(latency.max_send_lag)}; "
            f"{latency.ok:,} of {latency.scheduled:,} answered 202): p99",
            f"p99 {_ms(p99)}",
            p99 * 1000,
            "ms",
            f"target p99 < {TARGET_P99 * 1000:.0f} ms",
            p99 / TARGET_P99 if not math.isnan(p99) else math.inf,
        ),
        plain_row(f"{latency_name}: max", f"max {_ms(worst)}", worst * 1000, "ms"),
    ]

    checks = onduty.checks
    check_row = plain_row(
        "durable ingest checks: every request 202, `onduty audit verify` exit 0, "
        "SignalReceived rows in the log == alerts acknowledged with 202",
        ("FAILURE: " + " | ".join(checks.failures))
        if checks.failures
        else f"OK: {'; '.join(checks.notes)}; chain intact",
        len(checks.failures),
        "failures",
    )
    return [throughput_row, responses_row, *latency_rows, check_row]
