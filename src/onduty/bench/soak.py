"""Soak: `onduty serve` under a steady mixed load with churn for 20 minutes (seconds with
`quick`), on SERVER_CPUS, the load generator on LOAD_CPUS, a fresh store.

The load, open loop (every request timed from its scheduled send):

- the stable set: the 3,000 alerts of the re-sent pool (`_alerts`), re-sent every 10 s in
  webhooks of 50, as Alertmanager re-notifies its groups;
- churn: 2 new incidents a second (`ChurnDown` on a fleet instance, each alert new), each
  resolving 20 s later; a runbook runs a harmless shell actuator (`/bin/true`) for each.

In order:

1. steady (18 minutes; 3 s with `quick`): resident memory (VmRSS) sampled every 10 s; the
   figure is its growth from the first sample after the stable set and the churn have settled
   (a minute in; the first quarter with `quick`) to the end: flat means ~1.0x.
2. bytes stored per re-sent alert: the pool sent 10 more times, every alert
   already known; the log's file growth (checkpointed, `page_count * page_size`) divided by
   the alerts, against the alert's size on the wire (1 round with `quick`).
3. a timer storm: 5,000 new alerts (500 with `quick`), each in a group of its own, sent as fast
   as they are taken; every group's wait (`group_wait`, 10 s; 2 s with `quick`) then falls due
   at about the same moment. A probe of single re-sent alerts at 100 requests/s runs before
   (the baseline) and through the moment they fall due (and 5 s beyond; 2 s with `quick`);
   the figure is the probe's worst latency then, against its worst in the baseline. The
   storm's alerts are then resolved.
4. delivery ids: onduty remembers every delivery id it saw (a day) to recognise a redelivery.
   Native signals (`POST /api/v1/signals`, 50 known firing signals per request, each with a
   new delivery id), closed loop: the cost per signal measured with few ids seen (at the
   start), then after 100,000 ids (11,000 with `quick`, past the 10,000 at which onduty
   starts sweeping them); the fill stops at a time limit and says how far it got.

Checks, as a row: every request answered 202, `onduty audit verify` exits 0.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import orjson

from onduty.bench._alerts import (
    ONDUTY_PATH,
    Alert,
    Checks,
    alert_stream,
    audit_verify,
    burst_problems,
    config_document,
    serving,
    webhook,
)
from onduty.bench._http import Burst, Latencies, open_loop, post, scheduled, send_each
from onduty.bench._serve import Server
from onduty.bench._workload import Row, progress, row

NATIVE_PATH = "/api/v1/signals"
STEADY = {True: 3.0, False: 18 * 60.0}
SETTLED = {True: 1.0, False: 60.0}
SAMPLE = {True: 0.5, False: 10.0}
RESEND_EVERY = 10.0
CHURN_RATE = 2.0
CHURN_LIFE = 20.0
BYTES_ROUNDS = {True: 1, False: 10}
STORM = {True: 500, False: 5_000}
GROUP_WAIT = {True: 2.0, False: 10.0}
PROBE_RATE = 100.0
BASELINE = {True: 1.0, False: 10.0}
AFTER = {True: 2.0, False: 5.0}
"""How long the probe goes on once the storm's group waits are over."""
DELIVERIES = {True: 11_000, False: 100_000}
MEASURE_REQUESTS = {True: 20, False: 100}
FILL_LIMIT = {True: 20.0, False: 300.0}
PER_REQUEST = 50
CONNECTIONS = 8


def _config(quick: bool) -> dict[str, object]:
    document = config_document()
    document["correlation"] = {
        "group_by": ["service", "alertname", "instance"],
        "group_wait": f"{GROUP_WAIT[quick]:g}s",
    }
    document["runbooks"] = [
        {
            "name": "restart-churned",
            "when": 'signal.labels.alertname == "ChurnDown"',
            "do": [{"action": "churn.restart", "target": "{{ signal.labels.instance }}"}],
        }
    ]
    document["actuators"] = [
        {"kind": "shell", "action": "churn.restart", "argv": ["/bin/true"], "allow": ["/bin/true"]}
    ]
    return document


def _alert(alertname: str, instance: str, uniq: str) -> Alert:
    return Alert(
        labels={"alertname": alertname, "service": "web", "instance": instance, "uniq": uniq},
        annotations={"summary": f"{alertname} on {instance}"},
        starts_at="2026-01-01T00:00:00Z",
        generator_url="http://prometheus.example/graph",
    )


def _steady_plan(url: str, seconds: float, pool: list[bytes]) -> list[tuple[float, bytes]]:
    """The stable set re-sent and the churn, for `seconds`."""
    plan = []
    spacing = RESEND_EVERY / len(pool)
    for index in range(int(seconds / spacing)):
        plan.append((index * spacing, post(url, ONDUTY_PATH, pool[index % len(pool)])))
    for index in range(int(seconds * CHURN_RATE)):
        at = index / CHURN_RATE
        alert = _alert("ChurnDown", f"web-{index % 120 + 1}", f"churn-{index}")
        plan.append((at, post(url, ONDUTY_PATH, webhook([alert]))))
        if at + CHURN_LIFE < seconds:
            resolved = webhook([alert], "resolved", "2026-01-01T01:00:00Z")
            plan.append((at + CHURN_LIFE, post(url, ONDUTY_PATH, resolved)))
    return sorted(plan, key=lambda item: item[0])


class Sampler:
    """The server's RSS every `every` seconds, in a thread, while the block runs."""

    def __init__(self, server: Server, every: float) -> None:
        self.server, self.every = server, every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - started, self.server.rss()))
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((self.samples[-1][0] if self.samples else 0.0, self.server.rss()))


def _stored_bytes(store: Path) -> int:
    """The log's size once its write-ahead log is checkpointed into it."""
    conn = sqlite3.connect(store)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(size)
    finally:
        conn.close()


def _native(start: int, requests: int) -> list[bytes]:
    """Requests of 50 known firing signals, each signal with a delivery id of its own."""
    return [
        orjson.dumps(
            [
                {"source": "soak", "fingerprint": f"delivered-{k}", "status": "firing",
                 "labels": {"alertname": "Delivered", "service": "web", "instance": "web-1"},
                 "delivery_id": f"d-{(start + r) * PER_REQUEST + k}"}
                for k in range(PER_REQUEST)
            ]
        )
        for r in range(requests)
    ]  # fmt: skip


def _per_signal(result: Burst) -> float:
    return result.seconds / max(result.ok * PER_REQUEST, 1) * 1e6


def _noted(name: str, result: Latencies | Burst, checks: Checks) -> None:
    if isinstance(result, Burst):
        checks.failures += burst_problems(name, result, 202)
        return
    checks.expect(
        result.ok == result.scheduled and not result.statuses and not result.errors,
        f"{name}: {result.ok:,} of {result.scheduled:,} answered 202 "
        f"(other: {dict(result.statuses)}, {result.errors} errors)",
    )


def run(quick: bool = False) -> list[Row]:
    stream = alert_stream()
    pool = stream.onduty
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="onduty-bench-soak-") as name:
        folder = Path(name)
        config = folder / "soak.yaml"
        config.write_bytes(orjson.dumps(_config(quick)))
        server = Server(folder / "soak.db", "--max-pending", "200000", "--log-level", "warning",
                        config=config)  # fmt: skip
        with serving(server, checks):
            url = server.url
            progress("soak: delivery ids, the cost per signal with few seen")
            few = send_each(url, NATIVE_PATH, _native(0, MEASURE_REQUESTS[quick]),
                            ok_status=202, connections=CONNECTIONS)  # fmt: skip
            _noted("few delivery ids", few, checks)

            progress(f"soak: steady load for {STEADY[quick]:g} s")
            with Sampler(server, SAMPLE[quick]) as sampler:
                steady = scheduled(url, _steady_plan(url, STEADY[quick], pool),
                                   ok_status=202, connections=CONNECTIONS)  # fmt: skip
            _noted("steady", steady, checks)

            progress("soak: bytes stored per re-sent alert")
            before = _stored_bytes(server.store)
            resent = send_each(url, ONDUTY_PATH, pool * BYTES_ROUNDS[quick], ok_status=202,
                               connections=CONNECTIONS)  # fmt: skip
            grown = _stored_bytes(server.store) - before
            _noted("re-sent pool", resent, checks)

            progress(f"soak: a storm of {STORM[quick]:,} group-wait timers")
            probe = stream.single
            baseline = open_loop(url, ONDUTY_PATH, probe, ok_status=202, rate=PROBE_RATE,
                                 seconds=BASELINE[quick], connections=CONNECTIONS)  # fmt: skip
            storm = [_alert("StormAlert", f"storm-{k}", f"storm-{k}") for k in range(STORM[quick])]
            chunks = [storm[i : i + PER_REQUEST] for i in range(0, len(storm), PER_REQUEST)]
            fired = send_each(url, ONDUTY_PATH, [webhook(c) for c in chunks], ok_status=202,
                              connections=CONNECTIONS)  # fmt: skip
            during = open_loop(
                url, ONDUTY_PATH, probe, ok_status=202, rate=PROBE_RATE,
                seconds=GROUP_WAIT[quick] + AFTER[quick], connections=CONNECTIONS,
            )  # fmt: skip
            ended = send_each(
                url, ONDUTY_PATH,
                [webhook(c, "resolved", "2026-01-01T01:00:00Z") for c in chunks],
                ok_status=202, connections=CONNECTIONS,
            )  # fmt: skip
            for what, result in (
                ("probe baseline", baseline),
                ("storm", fired),
                ("probe during the storm", during),
                ("storm resolved", ended),
            ):
                _noted(what, result, checks)  # fmt: skip

            target = DELIVERIES[quick]
            progress(f"soak: filling to {target:,} delivery ids seen (at most "
                     f"{FILL_LIMIT[quick]:g} s)")  # fmt: skip
            seen = few.ok * PER_REQUEST
            deadline = time.monotonic() + FILL_LIMIT[quick]
            next_request = MEASURE_REQUESTS[quick]
            while seen < target and time.monotonic() < deadline:
                count = min(100, (target - seen) // PER_REQUEST + 1)
                fill = send_each(url, NATIVE_PATH, _native(next_request, count), ok_status=202,
                                 connections=CONNECTIONS)  # fmt: skip
                _noted("delivery id fill", fill, checks)
                next_request += count
                seen += fill.ok * PER_REQUEST
            many = send_each(url, NATIVE_PATH, _native(next_request, MEASURE_REQUESTS[quick]),
                             ok_status=202, connections=CONNECTIONS)  # fmt: skip
            _noted("many delivery ids", many, checks)
            checks.notes.append(f"{steady.ok:,} steady requests answered 202")
        audit_verify(server.store, checks)

    samples = sampler.samples
    settled = next((rss for at, rss in samples if at >= SETTLED[quick]), samples[-1][1])
    last = samples[-1][1]
    mib = 2**20
    steady_name = (
        f"soak: {STEADY[quick]:g} s steady ({stream.fingerprints:,} alerts re-sent every "
        f"{RESEND_EVERY:g} s, {CHURN_RATE:g} new incidents/s resolving after {CHURN_LIFE:g} s, "
        "a shell actuator each), serve RSS"
    )
    steady_row = row(
        steady_name,
        f"{settled / mib:,.1f} → {last / mib:,.1f} MiB (p99 latency "
        f"{steady.percentile(0.99) * 1000:,.1f} ms, max {steady.max() * 1000:,.1f} ms)",
        last / mib,
        "MiB",
        f"RSS once settled ({SETTLED[quick]:g} s in): {settled / mib:,.1f} MiB",
        last / max(settled, 1),
    )
    steady_row["detail"] = orjson.dumps({"rss": samples}).decode()
    resent_alerts = resent.ok * PER_REQUEST
    few_cost, many_cost = _per_signal(few), _per_signal(many)
    return [
        steady_row,
        row(
            f"soak: bytes stored per re-sent alert ({resent_alerts:,} re-sent, every one "
            "already known): log file growth / alerts",
            f"{grown / max(resent_alerts, 1):,.0f} B/alert",
            grown / max(resent_alerts, 1),
            "B/alert",
            f"the alert on the wire (webhook): {stream.bytes_per_alert():,.0f} B/alert",
            grown / max(resent_alerts, 1) / stream.bytes_per_alert(),
        ),
        row(
            f"soak: largest stall when {STORM[quick]:,} group-wait timers fall due at once: "
            f"worst latency of single alerts at {PROBE_RATE:g} req/s",
            f"max {during.max() * 1000:,.1f} ms (p99 {during.percentile(0.99) * 1000:,.1f} ms)",
            during.max() * 1000,
            "ms",
            f"the same probe before the storm: max {baseline.max() * 1000:,.1f} ms",
            during.max() / baseline.max(),
        ),
        row(
            f"soak: per-signal cost with {seen:,} delivery ids seen (native signals, 50 a "
            "request, closed loop)",
            f"{many_cost:,.0f} µs/signal",
            many_cost,
            "µs/signal",
            f"with few ids seen (< {few.ok * PER_REQUEST:,}): {few_cost:,.0f} µs/signal",
            many_cost / few_cost,
        ),
        checks.row("soak checks: every request 202, `onduty audit verify` exit 0"),
    ]
