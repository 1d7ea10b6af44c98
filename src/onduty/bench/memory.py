"""Memory per active alert: what 100,000 distinct firing alerts cost a running server.

`onduty serve` (fresh store, the fleet's config, on SERVER_CPUS) is warmed up with 20
notifications, then sent 100,000 alerts (2,000 with `quick`) none of which was seen before, in
webhooks of 50 (see `_alerts`), every one acknowledged (202: in the log, in the core's state
and its read models). The figure is the growth of the process's resident memory (VmRSS) from
just before to a moment after the last answer, divided by the alerts: the core state and the
read models together, as an operator would see the process grow.

The peer, in the same run: a real Alertmanager sent the same alerts (`POST /api/v2/alerts`,
ending two hours later, so all stay active) after the same warm-up; its RSS growth per alert.
Both generators send every body once, 8 connections, from LOAD_CPUS.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from onduty.bench._alerts import (
    ALERTMANAGER_PATH,
    ONDUTY_PATH,
    PER_REQUEST,
    Checks,
    alert_stream,
    burst_problems,
    fleet_server,
    serving,
)
from onduty.bench._http import UNIQUE, Burst, send_each
from onduty.bench._serve import Alertmanager
from onduty.bench._workload import Row, progress, row

ALERTS = {True: 2_000, False: 100_000}
WARMUP_REQUESTS = 20
CONNECTIONS = 8
SETTLE = 1.0
"""Seconds left after the last answer for work the answer did not wait for (read models)."""
TARGET_BYTES = 1024.0


def marked(templates: list[bytes], count: int, prefix: str) -> list[bytes]:
    """`count` bodies from `templates`, round-robin, each with its UNIQUE marks replaced by a
    mark of its own: no alert in them repeats another."""
    mark = UNIQUE.encode()
    return [
        templates[index % len(templates)].replace(mark, f"{prefix}{index}".encode())
        for index in range(count)
    ]


def _growth(
    url: str, path: str, templates: list[bytes], ok: int, requests: int, rss: Callable[[], int]
) -> tuple[int, int, Burst, Burst]:
    """(RSS before, RSS after, the warm-up, the fill) for one server."""
    warmup = send_each(
        url, path, marked(templates, WARMUP_REQUESTS, "w"), ok_status=ok, connections=CONNECTIONS
    )
    time.sleep(SETTLE)
    before = rss()
    fill = send_each(
        url, path, marked(templates, requests, "m"), ok_status=ok, connections=CONNECTIONS
    )
    time.sleep(SETTLE)
    return before, rss(), warmup, fill


def _per_alert(before: int, after: int, alerts: int) -> float:
    return (after - before) / alerts


def _figure(before: int, after: int, alerts: int) -> str:
    return (
        f"{_per_alert(before, after, alerts):,.0f} B/alert (RSS {before / 2**20:,.1f} → "
        f"{after / 2**20:,.1f} MiB)"
    )


def run(quick: bool = False) -> list[Row]:
    stream = alert_stream()
    alerts = ALERTS[quick]
    requests = alerts // PER_REQUEST
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="onduty-bench-memory-") as name:
        folder = Path(name)
        progress(f"memory: {alerts:,} unique alerts into onduty serve")
        with serving(fleet_server(folder / "onduty", "memory"), checks) as server:
            before, after, warmup, fill = _growth(
                server.url, ONDUTY_PATH, stream.unique_onduty, 202, requests, server.rss
            )
        checks.failures += burst_problems("onduty warm-up", warmup, 202)
        checks.failures += burst_problems("onduty", fill, 202)
        progress(f"memory: {alerts:,} unique alerts into Alertmanager")
        with Alertmanager(folder / "alertmanager") as peer:
            measured = None
            if peer.start() is not None:
                measured = _growth(
                    peer.url, ALERTMANAGER_PATH, stream.unique_alertmanager, 200, requests, peer.rss
                )
                checks.failures += burst_problems("Alertmanager", measured[3], 200)
    checks.notes.append(f"{fill.ok:,} of {requests:,} requests answered 202 by onduty")
    onduty = _per_alert(before, after, alerts)
    name = f"memory per active alert, {alerts:,} unique firing alerts: serve process RSS growth"
    if measured is None:
        peer_text, peer_ratio = "Alertmanager could not be started", 0.0
    else:
        am_before, am_after, _, _ = measured
        peer_text = f"Alertmanager {Alertmanager.version()}: " + _figure(
            am_before, am_after, alerts
        )
        peer_ratio = onduty / max(_per_alert(am_before, am_after, alerts), 1.0)
    return [
        row(name, _figure(before, after, alerts), onduty, "B/alert", peer_text, peer_ratio),
        row(
            f"{name}, against the target",
            f"{onduty:,.0f} B/alert",
            onduty,
            "B/alert",
            f"target <= {TARGET_BYTES:,.0f} B/alert",
            onduty / TARGET_BYTES,
        ),
        checks.row("memory checks: every alert acknowledged by both servers"),
    ]
