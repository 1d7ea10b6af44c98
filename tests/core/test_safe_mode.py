"""Data quality and safe mode, in virtual time: a source that goes silent, a source whose clock
is ten minutes off, a drifting mix of signals, onduty's own dependencies failing. Each puts its
scope in safe mode (no autonomous action there, one page with the reason) and the scope recovers
when the source is healthy again; replay reproduces every step."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from onduty.commands import ScheduleTimer
from onduty.config import Config
from onduty.events import (
    DependencyDegraded,
    DependencyRecovered,
    SignalReceived,
    SignalRejected,
    Tick,
)
from onduty.lifecycle.quality import psi
from tests.core.helpers import Driver, assert_replays, config
from tests.core.test_guardrails import RUNBOOKS, SERVICES, alert, verdict


def judged(**quality: Any) -> Config:
    return config(
        services=SERVICES,
        runbooks=RUNBOOKS,
        correlation={"group_by": ["instance", "alertname"], "flap_threshold": 100},
        policy={"guardrails": []},
        quality=quality,
    )


def of(driver: Driver, kind: str) -> list[dict[str, Any]]:
    return [event.data for event in driver.log if event.type == kind]


def pages(driver: Driver) -> list[dict[str, Any]]:
    """The escalations about safe mode (not those of the incidents the signals opened)."""
    modes = {entered["incident_id"] for entered in of(driver, "SafeModeEntered")}
    return [page for page in of(driver, "Escalated") if page["incident_id"] in modes]


def signal_from(
    driver: Driver,
    source: str,
    instance: str,
    name: str = "HighMemoryUsage",
    *,
    status: str = "firing",
    after: float = 0.0,
    starts_at: datetime | Callable[[datetime], datetime] | None = None,
    ends_at: datetime | Callable[[datetime], datetime] | None = None,
    fingerprint: str | None = None,
    delivery_id: str | None = None,
    labels: dict[str, str] | None = None,
) -> Any:
    service = instance.rsplit("-", 1)[0]
    driver.now += timedelta(seconds=after)
    return driver.feed(
        SignalReceived(
            source=source,
            fingerprint=fingerprint or f"{source}:{name}:{instance}",
            status=status,  # type: ignore[arg-type]
            labels={"alertname": name, "instance": instance, "service": service, **(labels or {})},
            starts_at=starts_at(driver.now) if callable(starts_at) else starts_at,
            ends_at=ends_at(driver.now) if callable(ends_at) else ends_at,
            delivery_id=delivery_id,
        )
    )


def test_a_silent_source_puts_its_services_in_safe_mode_until_it_speaks_again() -> None:
    driver = Driver(judged(heartbeats=[{"source": "watchdog", "every": "5m"}]))
    armed = [c for c in driver.manager.pending_timers() if c.timer_id == "quiet:watchdog"]
    assert [timer.due for timer in armed] == [driver.now + timedelta(minutes=5)]

    # The watchdog speaks for web; a minute later it is still healthy.
    signal_from(driver, "watchdog", "web-9", "Watchdog", after=60)
    decision = driver.feed(Tick(timer_id="quiet:watchdog"), after=240)  # 4m after it spoke
    assert not of(driver, "SourceDegraded")
    assert [c.due for c in decision.commands if isinstance(c, ScheduleTimer)] == [
        driver.now + timedelta(minutes=1)
    ]  # looked at again 5m after it last spoke

    decision = driver.feed(Tick(timer_id="quiet:watchdog"), after=60)
    (degraded,) = of(driver, "SourceDegraded")
    assert degraded["check"] == "silent" and degraded["source"] == "watchdog"
    assert degraded["detail"] == "source watchdog has been silent for 5m (expected every 5m)"
    (entered,) = of(driver, "SafeModeEntered")
    assert entered["services"] == ["web"] and entered["scope"] == "silent:watchdog"
    (page,) = pages(driver)
    assert page["reason"] == (
        "safe mode: autonomy lowered to suggest for web because source watchdog has been "
        "silent for 5m (expected every 5m)"
    )
    assert page["incident_id"] == entered["incident_id"]
    assert [c for c in decision.commands if type(c).__name__ == "Notify"]

    # No autonomous action for web; another service still acts.
    denied = verdict(alert(driver, "web-1", after=30))
    assert denied["verdict"] == "deny"
    assert denied["reason"].startswith("safe-mode: web is in safe mode since ")
    assert "because source watchdog has been silent for 5m" in denied["reason"]
    assert verdict(alert(driver, "api-1", after=1))["verdict"] == "allow"
    driver.feed(Tick(timer_id="quiet:watchdog"), after=600)
    assert len(of(driver, "SourceDegraded")) == 1 and len(pages(driver)) == 1

    # It speaks again: recovered, safe mode over, its incident resolved, web acts again.
    decision = signal_from(driver, "watchdog", "web-9", "Watchdog", after=30, status="firing")
    assert [e.type for e in decision.events][:3] == [
        "SourceRecovered",
        "SafeModeExited",
        "IncidentResolved",
    ]
    (resolved,) = [e.data for e in decision.events if e.type == "IncidentResolved"]
    assert resolved["incident_id"] == entered["incident_id"]
    assert resolved["reason"] == "safe mode over: no more silence from source watchdog"
    assert any(isinstance(c, ScheduleTimer) for c in decision.commands)  # watched again
    assert verdict(alert(driver, "web-2", after=30))["verdict"] == "allow"
    assert not driver.manager.state.safe_modes
    assert_replays(driver)


def test_a_source_never_heard_is_silent_from_when_the_policy_expected_it() -> None:
    driver = Driver(
        judged(heartbeats=[{"source": "probe", "every": "2m", "services": ["api", "db"]}])
    )
    driver.feed(Tick(timer_id="quiet:probe"), after=120)
    (entered,) = of(driver, "SafeModeEntered")
    assert entered["services"] == ["api", "db"]
    assert verdict(alert(driver, "db-1", after=5))["verdict"] == "deny"
    assert verdict(alert(driver, "web-1", after=5))["verdict"] == "allow"
    assert_replays(driver)


def test_a_clock_ten_minutes_ahead_is_judged_and_forgiven_when_it_is_right_again() -> None:
    driver = Driver(judged(max_clock_skew="2m"))
    ahead = timedelta(minutes=10)
    for index in range(1, 4):  # the median of the source's newest times moves past the limit
        signal_from(driver, "am", f"web-{index}", after=10, starts_at=lambda now: now + ahead)
    (degraded,) = of(driver, "SourceDegraded")
    assert degraded["check"] == "clock_skew"
    assert "clock is 10m" in degraded["detail"] and "ahead of onduty's" in degraded["detail"]
    assert degraded["value"] == 600.0 and degraded["limit"] == 120.0
    (entered,) = of(driver, "SafeModeEntered")
    assert entered["services"] == ["web"]
    (page,) = pages(driver)
    assert "clock is 10m" in page["reason"]
    # The third skewed signal's own proposal is already denied: safe mode came first.
    verdicts = of(driver, "PolicyEvaluated")
    assert [v["verdict"] for v in verdicts] == ["allow", "allow", "deny"]
    assert "safe-mode" in verdicts[-1]["reason"]

    # The clock is fixed: as its newest times agree with ours, the skew is forgiven.
    for index in range(1, 4):
        signal_from(
            driver, "am", f"web-{index}", status="resolved", after=10, ends_at=lambda now: now
        )
    assert [e["check"] for e in of(driver, "SourceRecovered")] == ["clock_skew"]
    assert of(driver, "SafeModeExited")
    assert verdict(alert(driver, "web-4", after=5))["verdict"] == "allow"
    assert_replays(driver)


def test_a_source_behind_by_ten_minutes_is_judged_too() -> None:
    driver = Driver(judged(max_clock_skew="5m"))
    for index in range(1, 4):
        signal_from(
            driver, "am", f"api-{index % 2 + 1}", f"A{index}", after=10,
            starts_at=lambda now: now - timedelta(minutes=10),
        )  # fmt: skip
    (degraded,) = of(driver, "SourceDegraded")
    assert "10m behind onduty's" in degraded["detail"]


def drifting(driver: Driver, names: list[str], *, every: float) -> None:
    for index, name in enumerate(names):
        signal_from(
            driver,
            "am",
            f"web-{index % 3 + 1}",
            name,
            after=every,
            fingerprint=f"{name}:{index}:{driver.now.isoformat()}",
            status="firing",
        )


def test_a_drifting_mix_puts_the_scope_in_safe_mode_and_a_steady_one_lets_it_out() -> None:
    driver = Driver(
        judged(
            drift={"window": "10m", "baseline": 2, "threshold": 0.25, "min_signals": 20},
            safe_mode=["drift"],
        )
    )
    usual = ["DiskPressure", "HighLatency", "HighMemoryUsage", "CertExpiry"] * 10
    for _ in range(3):  # three windows of the usual mix: no drift
        drifting(driver, usual, every=14)
    assert not of(driver, "SourceDegraded")
    # The mix changes: one alert name dominates the next window.
    drifting(driver, ["QueueBacklog"] * 40, every=14)
    drifting(driver, usual[:1], every=14)  # the first signal of the next window closes it
    (degraded,) = of(driver, "SourceDegraded")
    assert degraded["check"] == "drift" and degraded["value"] > 0.25
    assert "PSI" in degraded["detail"] and "by alertname" in degraded["detail"]
    (entered,) = of(driver, "SafeModeEntered")
    assert entered["services"] == ["web"]
    assert len(pages(driver)) == 1
    # The usual mix again, window after window, until the baseline forgets the burst.
    for _ in range(4):
        drifting(driver, usual, every=14)
    assert [e["check"] for e in of(driver, "SourceRecovered")] == ["drift"]
    assert len(of(driver, "SafeModeExited")) == 1
    assert_replays(driver)


def test_rates_and_cardinality_are_recorded_without_safe_mode_by_default() -> None:
    driver = Driver(
        judged(
            window="5m",
            min_deliveries=10,
            max_rejected_fraction=0.2,
            max_duplicate_fraction=0.3,
            max_label_values=5,
        )
    )
    for index in range(10):
        driver.feed(SignalRejected(source="am", reason="not JSON", raw="{"), after=5)
        signal_from(driver, "am", "web-1", after=5, delivery_id="d-1")  # the same one again
        signal_from(
            driver, "am", "web-2", "Req", fingerprint=f"req-{index}", after=5,
            labels={"request_id": f"r-{index}"},
        )  # fmt: skip
    signal_from(driver, "am", "web-3", after=300)  # closes the window
    checks = sorted(e["check"] for e in of(driver, "SourceDegraded"))
    assert checks == ["cardinality", "duplicates", "rejected"]
    assert not of(driver, "SafeModeEntered")  # recorded only: not in `safe_mode`
    rejected = next(e for e in of(driver, "SourceDegraded") if e["check"] == "rejected")
    assert rejected["detail"].startswith("10 of 30 deliveries from source am within 5m")
    assert_replays(driver)


def test_onduty_steps_back_everywhere_while_its_own_log_is_failing() -> None:
    driver = Driver(judged())
    driver.feed(DependencyDegraded(component="log", reason="appends failing for 45s"))
    (entered,) = of(driver, "SafeModeEntered")
    assert entered["services"] == [] and entered["scope"] == "dependency:log"
    denied = verdict(alert(driver, "api-1", after=5))
    assert denied["reason"].startswith("safe-mode: api is in safe mode since")
    driver.feed(DependencyRecovered(component="log"), after=30)
    assert verdict(alert(driver, "api-2", after=5))["verdict"] == "allow"
    assert_replays(driver)


def test_without_a_quality_section_nothing_changes() -> None:
    plain = Driver(judged())
    assert plain.manager.config is not None
    assert plain.manager.config.version == judged().version
    alert(plain, "web-1")
    assert not plain.manager.state.sources
    assert b"sources" not in plain.manager.state.encode()
    assert b"safe_modes" not in plain.manager.state.encode()


def test_psi_is_zero_for_equal_mixes_and_grows_with_the_shift() -> None:
    same = {"a": 10, "b": 10}
    assert psi(same, same) == 0.0
    small = psi({"a": 12, "b": 8}, same)
    large = psi({"a": 19, "b": 1}, same)
    assert 0 < small < 0.1
    assert large > 0.25
