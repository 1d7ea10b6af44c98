"""The alerts the HTTP workloads send: a fleet's firing alerts, shaped as Alertmanager's
webhook notifications (what onduty ingests) and as Prometheus's `POST /api/v2/alerts` (what
Alertmanager ingests), so that both servers are fed the same alerts.

The pool: 3,000 firing alerts (10 alert names x the 300 instances of a six-service fleet, ~880
bytes each in a webhook, with Kubernetes-style labels, annotations and a generator URL),
grouped by alertname into notifications of 50 alerts (60 bodies). Re-sent round-robin, they
are what Alertmanager's re-notification looks like; the `unique_*` bodies carry a UNIQUE mark
in every alert (a `uniq` label, and the webhook's fingerprint) that the load generator replaces
per request, so that every alert sent is new.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from onduty.bench._http import UNIQUE, Burst
from onduty.bench._serve import Server
from onduty.bench._workload import FLEET, Row, fleet_services
from onduty.log.sqlite import SQLiteEventLog

ONDUTY_PATH = "/api/v1/signals/alertmanager"
ALERTMANAGER_PATH = "/api/v2/alerts"
PER_REQUEST = 50
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


@dataclass(frozen=True)
class Alert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    generator_url: str

    @property
    def fingerprint(self) -> str:
        if UNIQUE in self.labels.get("uniq", ""):
            return self.labels["uniq"]  # made unique per request by the generator
        labels = orjson.dumps(self.labels, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(labels).hexdigest()[:16]

    def unique(self, position: int) -> Alert:
        """This alert with a label the generator makes unique per request (see UNIQUE)."""
        labels = {**self.labels, "uniq": f"{UNIQUE}-{position}"}
        return replace(self, labels=labels)

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
    single_alertmanager: list[bytes] = field(default_factory=list)
    # With a UNIQUE mark in each alert: every request a notification of new alerts.
    unique_onduty: list[bytes] = field(default_factory=list)
    unique_alertmanager: list[bytes] = field(default_factory=list)
    alerts: int = 0
    fingerprints: int = 0

    def bytes_per_alert(self) -> float:
        return sum(len(body) for body in self.onduty) / max(1, self.alerts)


def webhook(alerts: list[Alert], status: str = "firing", ends_at: str = ZERO_TIME) -> bytes:
    """A webhook notification (payload v4) of alerts, as Alertmanager sends it."""
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
            "status": status,
            "receiver": "onduty",
            "groupLabels": {"alertname": alertname},
            "commonLabels": common,
            "commonAnnotations": {},
            "externalURL": "http://alertmanager-main-0.monitoring.svc:9093",
            "alerts": [
                {
                    "status": status,
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                    "startsAt": alert.starts_at,
                    "endsAt": ends_at,
                    "generatorURL": alert.generator_url,
                    "fingerprint": alert.fingerprint,
                }
                for alert in alerts
            ],
        }
    )


def postable(alerts: list[Alert], ends_at: str) -> bytes:
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


def alert_stream(seed: int = 29, per_request: int = PER_REQUEST) -> Stream:
    moment = datetime.now(UTC)
    ends_at = (moment + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    pool = sorted(alert_pool(moment, seed), key=lambda a: a.group)
    rng = random.Random(seed)
    chunks = [pool[i : i + per_request] for i in range(0, len(pool), per_request)]
    rng.shuffle(chunks)
    stream = Stream(fingerprints=len(pool))
    for chunk in chunks:
        stream.onduty.append(webhook(chunk))
        stream.alertmanager.append(postable(chunk, ends_at))
        stream.alerts += len(chunk)
        marked = [alert.unique(position) for position, alert in enumerate(chunk)]
        stream.unique_onduty.append(webhook(marked))
        stream.unique_alertmanager.append(postable(marked, ends_at))
    for alert in rng.sample(pool, len(pool)):
        stream.single.append(webhook([alert]))
        stream.single_alertmanager.append(postable([alert], ends_at))
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


# --------------------------------------------------------------------------- runs and checks


def fleet_server(folder: Path, name: str, *args: str) -> Server:
    """`onduty serve` on a fresh store in `folder` with the fleet's config (not yet started):
    queue deep enough that a closed loop never sees 429, warnings only."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.yaml"
    config.write_bytes(orjson.dumps(config_document()))  # JSON is YAML
    return Server(
        folder / f"{name}.db",
        "--max-pending", "200000", "--log-level", "warning", *args,
        config=config,
    )  # fmt: skip


@contextlib.contextmanager
def serving(server: Server, checks: Checks) -> Iterator[Server]:
    """`server` started; on the way out stopped, and that it exited 0 noted in `checks`."""
    try:
        yield server.start()
    finally:
        code = server.stop()
        checks.expect(code == 0, f"onduty serve exited {code} on SIGTERM")


@dataclass
class Checks:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def expect(self, holds: bool, failure: str) -> None:
        if not holds:
            self.failures.append(failure)

    def row(self, name: str) -> Row:
        """The checks as a row: its peer is what is expected (no failure)."""
        failed = bool(self.failures)
        return {
            "name": name,
            "figure": ("FAILURE: " + " | ".join(self.failures))
            if failed
            else "OK: " + "; ".join(self.notes),
            "value": float(len(self.failures)),
            "unit": "failures",
            "peer": "expected: no failure",
            "ratio": "FAILED" if failed else "OK",
        }


def events_in_log(store: Path, kind: str = "SignalReceived") -> int:
    """The events of type `kind` in the log, read back through the log itself (however it
    stores them)."""
    log = SQLiteEventLog(str(store))
    try:
        return sum(1 for event in log.read() if event.type == kind)
    finally:
        log.close()


def statuses(counts: Counter[int]) -> str:
    return ", ".join(f"{status}: {count:,}" for status, count in sorted(counts.items())) or "none"


def burst_problems(name: str, result: Burst, expected: int) -> list[str]:
    problems = []
    if result.unexpected:
        problems.append(
            f"{name}: {result.unexpected:,} answers other than {expected} "
            f"({statuses(result.statuses)}; 429 means --max-pending was too small)"
        )
    if result.errors or result.timeouts:
        problems.append(f"{name}: {result.errors} socket errors, {result.timeouts} timeouts")
    if result.unanswered:
        problems.append(f"{name}: {result.unanswered:,} requests never answered")
    if result.ok == 0:
        problems.append(f"{name}: no request was answered {expected}")
    return problems


def audit_verify(store: Path, checks: Checks) -> None:
    """`onduty audit verify` on the store, its failure noted in `checks`."""
    verify = subprocess.run(
        [sys.executable, "-m", "onduty", "audit", "verify", "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=store.parent,
    )
    checks.expect(
        verify.returncode == 0,
        f"onduty audit verify exited {verify.returncode}: "
        f"{(verify.stdout + verify.stderr).strip()[-300:]}",
    )


def elsewhere(cores: float) -> str:
    """The caveat of a shared machine: CPU other processes used during the run."""
    if math.isnan(cores):
        return ""
    return f"; other processes used {cores:.2f} cores meanwhile"
