"""`/metrics` of a real `onduty serve`, scraped over HTTP after signals were fed: its counters
equal what the log records (every ActionStarted, PolicyEvaluated and Escalated once)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server import Server


def config(directory: Path) -> Path:
    ok = [sys.executable, "-c", "pass"]
    broken = [sys.executable, "-c", "import sys; sys.exit(3)"]
    document = {
        "services": [
            {
                "name": "search",
                "autonomy": "act",
                "instances": ["search-1", "search-2", "search-3"],
            },
            {
                "name": "checkout",
                "tier": "critical",
                "autonomy": "approve",
                "instances": ["checkout-1"],
            },
        ],
        "correlation": {"group_by": ["service", "alertname", "instance"], "group_wait": "0s"},
        "runbooks": [
            {
                "name": "restart",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
            },
            {
                "name": "clean",
                "when": 'signal.labels.alertname == "DiskFull"',
                "do": [{"action": "disk.cleanup", "target": "{{ signal.labels.instance }}"}],
            },
        ],
        "actuators": [
            {
                "kind": "shell",
                "action": "process.restart",
                "argv": ok,
                "allow": [sys.executable],
                "timeout": "10s",
            },
            {
                "kind": "shell",
                "action": "disk.cleanup",
                "argv": broken,
                "allow": [sys.executable],
                "timeout": "10s",
            },
        ],
    }
    path = directory / "onduty.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def signal(alertname: str, service: str, instance: str) -> dict[str, object]:
    return {
        "source": "metrics-test",
        "fingerprint": f"{alertname}-{instance}",
        "status": "firing",
        "labels": {"alertname": alertname, "service": service, "instance": instance},
    }


def logged(client: httpx.Client, kind: str) -> list[Any]:
    response = client.get("/api/v1/events", params={"type": kind, "limit": 10000})
    assert response.status_code == 200, response.text
    return list(response.json())


def scrape(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(value for (sample, _), value in found.items() if sample == name)


def test_metrics_count_what_the_log_records(tmp_path: Path) -> None:
    with (
        Server(tmp_path / "onduty.db", config=config(tmp_path)) as server,
        server.client() as client,
    ):
        for body in (
            signal("InstanceDown", "search", "search-1"),
            signal("InstanceDown", "search", "search-2"),
            signal("DiskFull", "search", "search-3"),
            signal("InstanceDown", "checkout", "checkout-1"),
        ):
            assert client.post("/api/v1/signals", json=body).status_code == 202
        deadline = time.monotonic() + 30
        while True:  # both restarts run, the cleanup fails and is escalated, checkout waits
            settled = (
                len(logged(client, "ActionSucceeded")) >= 2
                and logged(client, "Escalated")
                and logged(client, "ApprovalRequested")
            )
            if settled:
                break
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        time.sleep(0.5)  # let the cleanup's retries and escalation settle
        before = [e["seq"] for e in logged(client, "ActionStarted")]
        found = scrape(client)
        events = client.get("/api/v1/events", params={"limit": 10000}).json()
        assert [e["seq"] for e in logged(client, "ActionStarted")] == before

    by_type = Counter(e["type"] for e in events)
    for kind, count in by_type.items():
        assert found[("onduty_events_total", frozenset({("type", kind)}))] == count, kind

    started = Counter(e["data"]["action"] for e in events if e["type"] == "ActionStarted")
    assert set(started) == {"process.restart", "disk.cleanup"}
    for action, count in started.items():
        labels = frozenset({("actuator", action.split(".")[0]), ("action", action)})
        assert found[("onduty_actions_started_total", labels)] == count
    assert total(found, "onduty_actions_started_total") == sum(started.values())
    restarted = frozenset(
        {("actuator", "process"), ("action", "process.restart"), ("outcome", "succeeded")}
    )
    assert found[("onduty_action_outcomes_total", restarted)] == by_type["ActionSucceeded"]

    verdicts = [e["data"] for e in events if e["type"] == "PolicyEvaluated"]
    for effect, count in Counter(v["verdict"] for v in verdicts).items():
        assert found[("onduty_verdicts_total", frozenset({("effect", effect)}))] == count
    assert "require_approval" in {v["verdict"] for v in verdicts}
    rules = Counter((r["rule"], r["effect"]) for v in verdicts for r in v["rules"])
    for (rule, effect), count in rules.items():
        labels = frozenset({("rule", rule), ("effect", effect)})
        assert found[("onduty_rule_outcomes_total", labels)] == count
    assert total(found, "onduty_rule_outcomes_total") == sum(rules.values())

    tiers = Counter(str(e["data"].get("tier", 0)) for e in events if e["type"] == "Escalated")
    assert tiers
    for tier, count in tiers.items():
        assert found[("onduty_escalations_total", frozenset({("tier", tier)}))] == count
    assert total(found, "onduty_escalations_total") == sum(tiers.values())

    assert found[("onduty_approvals_pending", frozenset())] == 1
    received = frozenset({("source", "metrics-test"), ("outcome", "received")})
    assert found[("onduty_signal_events_total", received)] == by_type["SignalReceived"]
    first_verdicts = {v["command_id"] for v in verdicts}
    assert found[("onduty_signal_to_verdict_seconds_count", frozenset())] == len(first_verdicts)

    # Every event came through one of the log's appends, each timed.
    assert found[("onduty_log_append_batch_events_sum", frozenset())] == len(events)
    appends = found[("onduty_log_append_seconds_count", frozenset())]
    assert 0 < appends == found[("onduty_log_append_batch_events_count", frozenset())]
