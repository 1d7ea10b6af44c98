"""Stepping back: onduty's own log, bus or core failing past `safe_mode_after` is recorded, and
recovered once passing as long again; through a real `serve`, a held-up core puts every service
in safe mode and lets it out."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from onduty.events import DependencyDegraded, DependencyRecovered
from onduty.health import CheckResult
from onduty.stepback import DependencyWatch
from tests.integration.server import Server
from tests.waiting import wait_for


def failing(name: str, seconds: float, reason: str = "appends fail") -> CheckResult:
    return CheckResult(name, False, reason, seconds)


def passing(name: str) -> CheckResult:
    return CheckResult(name, True, "")


def test_a_check_failing_past_the_grace_is_recorded_once_and_recovers_after_as_long() -> None:
    watch = DependencyWatch(after=30)
    assert watch.observe([failing("log", 10)], now=10) == []
    (degraded,) = watch.observe([failing("log", 31), passing("core")], now=31)
    assert degraded == DependencyDegraded(component="log", reason="failing for 31s: appends fail")
    assert watch.observe([failing("log", 60)], now=60) == []  # recorded once
    assert watch.observe([passing("log")], now=61) == []
    assert watch.observe([failing("log", 1)], now=70) == []  # failed again: the wait restarts
    assert watch.observe([passing("log")], now=71) == []
    (recovered,) = watch.observe([passing("log")], now=101)
    assert isinstance(recovered, DependencyRecovered) and recovered.component == "log"
    assert watch.observe([passing("log")], now=200) == []


def test_the_policy_check_and_unknown_checks_never_step_back() -> None:
    watch = DependencyWatch(after=1)
    assert watch.observe([failing("policy", 100), failing("follower", 100)], now=100) == []


def test_a_degradation_open_before_a_restart_recovers_after_it() -> None:
    watch = DependencyWatch(after=5, degraded={"bus"})
    assert watch.observe([passing("bus")], now=0) == []
    (recovered,) = watch.observe([passing("bus")], now=5)
    assert isinstance(recovered, DependencyRecovered) and recovered.component == "bus"


SERVE_CONFIG = """
services:
  - {name: web, autonomy: act, instances: [web-1, web-2]}
correlation: {group_by: [instance, alertname], group_wait: 0s}
runbooks:
  - name: restart
    when: 'signal.labels.alertname == "InstanceDown"'
    do: [{action: process.restart, target: '{{ signal.labels.instance }}'}]
server:
  readiness: {max_input_wait: 1s, safe_mode_after: 4s}
"""


def test_a_held_up_core_puts_every_service_in_safe_mode_through_a_real_serve(
    tmp_path: Path,
) -> None:
    (tmp_path / "onduty.yaml").write_text(SERVE_CONFIG)
    store = tmp_path / "s.db"
    with Server(store, config=tmp_path / "onduty.yaml") as server:
        blocker = sqlite3.connect(store, timeout=5, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the log's appends wait for this writer
        sender = threading.Thread(target=post, args=(server, "web-1"))
        sender.start()
        try:
            time.sleep(6.5)  # the core check fails for longer than safe_mode_after
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        sender.join(30)
        wait_for(lambda: bool(safe_mode(server)["active"]))
        post(server, "web-2")  # while onduty distrusts itself: proposed, not run
        wait_for(lambda: not safe_mode(server)["active"], timeout=30)
        events = httpx.get(f"{server.url}/api/v1/events", params={"limit": 1000}, timeout=5)
    log = events.json()
    kinds = [event["type"] for event in log]
    assert kinds.count("DependencyDegraded") == 1 and kinds.count("DependencyRecovered") == 1
    (entered,) = [e["data"] for e in log if e["type"] == "SafeModeEntered"]
    assert entered["scope"] == "dependency:core" and entered["services"] == []
    assert "onduty's core is degraded: failing for" in entered["reason"]
    verdicts = [e["data"] for e in log if e["type"] == "PolicyEvaluated"]
    assert verdicts[-1]["verdict"] == "deny"
    assert verdicts[-1]["reason"].startswith("safe-mode: web is in safe mode since")
    assert kinds.index("SafeModeExited") > kinds.index("SafeModeEntered")


def post(server: Server, instance: str) -> None:
    signal = {
        "source": "t",
        "fingerprint": f"down:{instance}",
        "status": "firing",
        "labels": {"alertname": "InstanceDown", "instance": instance, "service": "web"},
    }
    answer = httpx.post(f"{server.url}/api/v1/signals", json=signal, timeout=30)
    assert answer.status_code == 202, answer.text


def safe_mode(server: Server) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{server.url}/api/v1/safe-mode", timeout=5).json()
    return answer
