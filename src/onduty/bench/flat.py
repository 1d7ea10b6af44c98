"""Flat under load: a steady offered rate for a minute, second by second, and the latency of
single alerts at 500 requests/s; `onduty serve` against a real Alertmanager in the same run.

Each server runs alone on SERVER_CPUS, on a fresh store; the open-loop generator (`_http`, on
LOAD_CPUS) sends on a fixed schedule and times every request from its *scheduled* send, so a
stall shows in every request scheduled during it.

1. steady: webhooks of 10 alerts, every alert new (unique per request), 100 requests/s (1,000
   alerts/s) for 60 s (2 s with `quick`), 16 connections. Per second of the run: the alerts
   acknowledged (202 for onduty, 200 for Alertmanager); the longest pause between two
   consecutive answers (the schedule leaves 10 ms between requests, so a pause far beyond that
   is a stall of the server); the requests' latency. The series itself is in the row's
   `detail` (`onduty bench --json`).
2. single alerts (from the re-sent pool, one per request) at 500 requests/s for 10 s (1 s with
   `quick`), 32 connections, right after the steady run: p50 / p99 / max.
"""

from __future__ import annotations

import itertools
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from onduty.bench._alerts import (
    ALERTMANAGER_PATH,
    ONDUTY_PATH,
    Checks,
    alert_stream,
    fleet_server,
    serving,
)
from onduty.bench._http import Latencies, open_loop
from onduty.bench._serve import Alertmanager
from onduty.bench._workload import Row, progress, row

PER_REQUEST = 10
RATE = 100.0
SECONDS = {True: 2.0, False: 60.0}
CONNECTIONS = 16
SINGLE_RATE = 500.0
SINGLE_SECONDS = {True: 1.0, False: 10.0}
SINGLE_CONNECTIONS = 32
PAUSE = 0.100
TARGET_P99 = 0.020


@dataclass
class Steady:
    """One server's runs: the steady minute and the single alerts after it."""

    steady: Latencies
    single: Latencies

    def series(self) -> list[int]:
        """Alerts acknowledged in each second of the steady run."""
        counts = [0] * math.ceil(self.steady.seconds)
        for answered in self.steady.answered:
            second = int(answered - self.steady.start)
            if 0 <= second < len(counts):
                counts[second] += PER_REQUEST
        return counts

    def longest_pause(self) -> float:
        """The longest time without an answer, from the first scheduled send to the last
        answer."""
        times = [self.steady.start, *sorted(self.steady.answered)]
        return max((b - a for a, b in itertools.pairwise(times)), default=math.nan)

    def summary(self) -> str:
        series = self.series()
        return (
            f"per second min / median / max {min(series):,} / {statistics.median(series):,.0f} / "
            f"{max(series):,} alerts/s"
        )


def _measure(url: str, path: str, steady: list[bytes], single: list[bytes], ok: int, quick: bool
             ) -> Steady:  # fmt: skip
    first = open_loop(
        url, path, steady, ok_status=ok, rate=RATE, seconds=SECONDS[quick],
        connections=CONNECTIONS, unique="f",
    )  # fmt: skip
    second = open_loop(
        url, path, single, ok_status=ok, rate=SINGLE_RATE, seconds=SINGLE_SECONDS[quick],
        connections=SINGLE_CONNECTIONS,
    )  # fmt: skip
    return Steady(first, second)


def _complete(name: str, result: Latencies, checks: Checks) -> None:
    checks.expect(
        result.ok == result.scheduled and not result.statuses and not result.errors,
        f"{name}: {result.ok:,} of {result.scheduled:,} answered as expected "
        f"(other statuses {dict(result.statuses)}, {result.errors} errors)",
    )


def _ms(value: float) -> str:
    return f"{value * 1000:,.1f} ms" if not math.isnan(value) else "n/a"


def _spread(result: Latencies) -> str:
    return (
        f"p50 / p99 / max {_ms(result.percentile(0.5))} / {_ms(result.percentile(0.99))} / "
        f"{_ms(result.max())}"
    )


def run(quick: bool = False) -> list[Row]:
    stream = alert_stream(per_request=PER_REQUEST)
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="onduty-bench-flat-") as name:
        folder = Path(name)
        progress(f"flat: onduty serve, {SECONDS[quick]:g} s steady, then single alerts")
        with serving(fleet_server(folder / "onduty", "flat"), checks) as server:
            onduty = _measure(
                server.url, ONDUTY_PATH, stream.unique_onduty, stream.single, 202, quick
            )
        progress(f"flat: Alertmanager, {SECONDS[quick]:g} s steady, then single alerts")
        with Alertmanager(folder / "alertmanager") as started:
            peer = started.start()
            am = None
            if peer is not None:
                am = _measure(
                    peer.url, ALERTMANAGER_PATH, stream.unique_alertmanager,
                    stream.single_alertmanager, 200, quick,
                )  # fmt: skip
    _complete("onduty steady", onduty.steady, checks)
    _complete("onduty single alerts", onduty.single, checks)
    if am is not None:
        _complete("Alertmanager steady", am.steady, checks)
        _complete("Alertmanager single alerts", am.single, checks)
    checks.notes.append(f"{onduty.steady.ok + onduty.single.ok:,} requests answered by onduty")
    lag = max(onduty.steady.max_send_lag, onduty.single.max_send_lag)
    checks.notes.append(f"the generator sent at most {lag * 1000:,.1f} ms late (its own stall)")

    offered = (
        f"{RATE * PER_REQUEST:,.0f} unique alerts/s offered ({RATE:,.0f} webhooks of "
        f"{PER_REQUEST}/s, open loop) for {SECONDS[quick]:g} s"
    )
    pause = onduty.longest_pause()
    stalled = "yes" if pause > PAUSE else "no"
    single99 = onduty.single.percentile(0.99)
    version = f"Alertmanager {Alertmanager.version()}"
    if am is None:
        missing = "Alertmanager could not be started"
        peers = (missing, 0.0), (missing, 0.0), (missing, 0.0), (missing, 0.0)
    else:
        am_min, am_pause = min(am.series()), am.longest_pause()
        peers = (
            (f"{version}: {am.summary()}", min(onduty.series()) / max(am_min, 1)),
            (f"{version}: {_ms(am_pause)}", pause / am_pause),
            (f"{version}: {_spread(am.steady)}", onduty.steady.percentile(0.99)
             / am.steady.percentile(0.99)),
            (f"{version}: {_spread(am.single)}", single99 / am.single.percentile(0.99)),
        )  # fmt: skip
    steady_row = row(
        f"flat under load, {offered}: alerts acknowledged per second",
        onduty.summary(),
        float(min(onduty.series())),
        "alerts/s",
        *peers[0],
    )
    steady_row["detail"] = orjson.dumps(
        {"onduty": onduty.series(), "alertmanager": am.series() if am else None}
    ).decode()
    return [
        steady_row,
        row(
            f"flat under load, {offered}: longest pause between two answers (any > "
            f"{PAUSE * 1000:.0f} ms?)",
            f"{_ms(pause)} (pause > {PAUSE * 1000:.0f} ms: {stalled})",
            pause * 1000,
            "ms",
            *peers[1],
        ),
        row(
            f"flat under load, {offered}: latency from the scheduled send",
            _spread(onduty.steady),
            onduty.steady.percentile(0.99) * 1000,
            "ms",
            *peers[2],
        ),
        row(
            f"single-alert webhooks at {SINGLE_RATE:,.0f} req/s, open loop, "
            f"{SINGLE_SECONDS[quick]:g} s after the steady run; target p99 < "
            f"{TARGET_P99 * 1000:.0f} ms",
            _spread(onduty.single),
            single99 * 1000,
            "ms",
            *peers[3],
        ),
        row(
            "single-alert webhooks: p99 against the target",
            f"p99 {_ms(single99)}",
            single99 * 1000,
            "ms",
            f"target p99 < {TARGET_P99 * 1000:.0f} ms",
            single99 / TARGET_P99,
        ),
        checks.row("flat checks: every request answered as expected by both servers"),
    ]
