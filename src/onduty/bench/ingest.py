"""Durable HTTP ingest throughput: `onduty serve` against a real Alertmanager, same alerts.

Each server runs alone on one core (SERVER_CPUS), the load generator (wrk when available, the
asyncio client of `_loadgen` otherwise) on the other (LOAD_CPUS), closed loop with 32
keep-alive connections, notifications of 50 alerts (see `_alerts`), 10 s after a 2 s warm-up
(1.5 s and no warm-up with `quick`). Two streams, each measured on a fresh onduty store and a
fresh Alertmanager:

1. unique alerts (the headline): every alert of every request is new (the generator makes a
   label and the fingerprint unique per request), so onduty's state and Alertmanager's alert
   store grow with every request, as under an alert storm;
2. the re-sent pool: 3,000 alerts re-sent round-robin, as Alertmanager re-notifies its groups
   (not with `quick`, which only checks that the workload runs).

onduty answers 202 only once the alerts are in its log (group commit, one fsync per commit,
synchronous=FULL); Alertmanager keeps alerts in memory only. Checks, reported as rows: every
request answered as expected, `onduty audit verify` exits 0, and the log holds exactly as many
`SignalReceived` events as alerts acknowledged with 202.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from onduty.bench._alerts import (
    ALERTMANAGER_PATH,
    ONDUTY_PATH,
    PER_REQUEST,
    Checks,
    alert_stream,
    audit_verify,
    burst_problems,
    elsewhere,
    events_in_log,
    fleet_server,
    serving,
)
from onduty.bench._http import Burst
from onduty.bench._loadgen import burst
from onduty.bench._procs import LOAD_CPUS, SERVER_CPUS, CpuWatch, where
from onduty.bench._serve import Alertmanager
from onduty.bench._workload import Row, per_second, progress, row

CONNECTIONS = 32
SECONDS = {True: 1.5, False: 10.0}
WARMUP = {True: 0.0, False: 2.0}
TARGET_ALERTS = 50_000.0


@dataclass
class Measured:
    result: Burst
    others: float  # cores used by other processes meanwhile

    def alerts_per_second(self) -> float:
        return self.result.requests_per_second() * PER_REQUEST


def _load(
    url: str,
    path: str,
    bodies: list[bytes],
    ok_status: int,
    quick: bool,
    folder: Path,
    unique: str | None,
    pids: tuple[int, ...],
) -> tuple[Measured, Burst | None]:
    """The warm-up (if any) and the measured run against one server."""
    warmup = None
    if WARMUP[quick]:
        warmup = burst(
            url, path, bodies, ok_status=ok_status, connections=CONNECTIONS,
            seconds=WARMUP[quick], folder=folder / "warmup",
            unique=f"{unique}w" if unique else None,
        )  # fmt: skip
    with CpuWatch(*pids) as during:
        result = burst(
            url, path, bodies, ok_status=ok_status, connections=CONNECTIONS,
            seconds=SECONDS[quick], folder=folder / "run", unique=unique,
        )  # fmt: skip
    return Measured(result, during.others), warmup


def _onduty(
    bodies: list[bytes], unique: bool, quick: bool, folder: Path
) -> tuple[Measured, Checks]:
    checks = Checks()
    with serving(fleet_server(folder, "ingest"), checks) as server:
        measured, warmup = _load(
            server.url, ONDUTY_PATH, bodies, 202, quick, folder,
            "u" if unique else None, (server.pid,),
        )  # fmt: skip
    acknowledged = 0
    for name, result in (("warm-up", warmup), ("throughput", measured.result)):
        if result is not None:
            checks.failures += burst_problems(name, result, 202)
            acknowledged += result.ok * PER_REQUEST
    audit_verify(server.store, checks)
    logged = events_in_log(server.store)
    checks.expect(
        logged == acknowledged,
        f"the log holds {logged:,} SignalReceived events but {acknowledged:,} alerts were "
        "acknowledged with 202",
    )
    checks.notes.append(f"{logged:,} SignalReceived = {acknowledged:,} acknowledged")
    return measured, checks


def _alertmanager(bodies: list[bytes], unique: bool, quick: bool, folder: Path) -> Measured | str:
    with Alertmanager(folder) as peer:
        if peer.start() is None:
            return "Alertmanager could not be started"
        measured, _ = _load(
            peer.url, ALERTMANAGER_PATH, bodies, 200, quick, folder,
            "u" if unique else None, (peer.pid,),
        )  # fmt: skip
        return measured


def _row(name: str, onduty: Measured, peer: Measured | str) -> Row:
    rate = onduty.alerts_per_second()
    figure = (
        f"{per_second(rate, 'alerts')} ({per_second(onduty.result.requests_per_second(), 'req')})"
        f"{elsewhere(onduty.others)}"
    )
    if isinstance(peer, str):
        return row(name, figure, rate, "alerts/s", f"Alertmanager: {peer}", 0.0)
    problems = burst_problems("Alertmanager", peer.result, 200)
    peer_text = (
        f"Alertmanager {Alertmanager.version()} POST /api/v2/alerts, same alerts, generator and "
        f"connections, IN MEMORY ONLY: {per_second(peer.alerts_per_second(), 'alerts')}"
        f"{elsewhere(peer.others)}" + (f"; {'; '.join(problems)}" if problems else "")
    )
    return row(name, figure, rate, "alerts/s", peer_text, rate / peer.alerts_per_second())


def run(quick: bool = False) -> list[Row]:
    stream = alert_stream()
    rows: list[Row] = []
    setting = (
        f"webhooks of {PER_REQUEST} alerts (~{stream.bytes_per_alert():,.0f} B/alert), "
        f"{CONNECTIONS} connections, {SECONDS[quick]:g} s, server {where(SERVER_CPUS)}, "
        f"generator {where(LOAD_CPUS)}; 202 only after fsync (group commit, synchronous=FULL)"
    )
    shapes = (
        ("UNIQUE alerts (every alert new)", True, stream.unique_onduty, stream.unique_alertmanager),
        (
            f"the re-sent pool ({stream.fingerprints:,} alerts round-robin)",
            False,
            stream.onduty,
            stream.alertmanager,
        ),
    )
    for label, unique, onduty_bodies, peer_bodies in shapes[:1] if quick else shapes:
        with tempfile.TemporaryDirectory(prefix="onduty-bench-ingest-") as name:
            progress(f"ingest: {label}, onduty")
            onduty, checks = _onduty(onduty_bodies, unique, quick, Path(name) / "onduty")
            progress(f"ingest: {label}, Alertmanager")
            peer = _alertmanager(peer_bodies, unique, quick, Path(name) / "alertmanager")
        target = f"; target >= {TARGET_ALERTS:,.0f} alerts/s" if unique else ""
        rows.append(_row(f"durable ingest of {label}: {setting}{target}", onduty, peer))
        rows.append(
            checks.row(
                f"durable ingest of {label}, checks: every request 202, `onduty audit verify` "
                "exit 0, SignalReceived rows == alerts acknowledged"
            )
        )
    return rows
