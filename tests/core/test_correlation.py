"""Correlation as a user of an Alertmanager-grade tool expects it: silences and maintenance
windows, inhibition, resolve_timeout, redelivered notifications, flapping, and the replay of
histories that use all of them. Plain event lists and a virtual clock."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from onduty.commands import Notify, ScheduleTimer, StartAction
from onduty.config import Config
from onduty.events import (
    ActionStarted,
    ActionSucceeded,
    Event,
    SignalReceived,
    SilenceCreated,
    SilenceExpired,
    Tick,
)
from onduty.manager import Decision, Manager
from onduty.replay import replay
from onduty.sense import alertmanager, cloudevents
from tests.core.helpers import T0, Driver, config

MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)
GROUP_BY = ["service", "alertname", "instance"]
REGION_DOWN = {
    "source_matchers": ['alertname="RegionDown"'],
    "target_matchers": ['severity=~"warning|critical"'],
    "equal": ["region"],
}
REGION_DOWN_TEXT = '{alertname="RegionDown"} inhibits {severity=~"warning|critical"} on (region)'


# --------------------------------------------------------------------------- helpers


def correlated(**correlation: Any) -> Config:
    """The test config with these correlation settings, and no guardrails (so that acting on
    one incident never stands in the way of acting on another)."""
    return config(correlation={"group_by": GROUP_BY, **correlation}, policy={"guardrails": []})


def silence(
    silence_id: str,
    *matchers: str,
    starts: datetime = T0,
    ends: datetime = T0 + timedelta(hours=1),
    comment: str = "deploy of 4.2",
    kind: str = "silence",
) -> SilenceCreated:
    return SilenceCreated(
        silence_id=silence_id,
        matchers=list(matchers),
        starts_at=starts,
        ends_at=ends,
        comment=comment,
        kind=kind,
    )


def until(driver: Driver, moment: datetime) -> float:
    """Seconds from the driver's clock to `moment` (for `after=`)."""
    seconds = (moment - driver.now).total_seconds()
    assert seconds >= 0, "the virtual clock only moves forward"
    return seconds


def alert(
    driver: Driver,
    alertname: str,
    *,
    region: str,
    instance: str | None = None,
    severity: str = "warning",
    status: str = "firing",
    after: float = 0.0,
) -> Decision:
    """An alert with region and severity labels; instance alerts also carry their service."""
    labels = {"alertname": alertname, "region": region, "severity": severity}
    if instance is not None:
        labels |= {"instance": instance, "service": instance.rsplit("-", 1)[0]}
    return driver.feed(
        SignalReceived(
            source="alertmanager",
            fingerprint=f"{alertname}:{instance or region}",
            status=status,
            labels=labels,
        ),
        after=after,
    )


def changes(decision: Decision) -> list[str]:
    """The timeline as a user reads it: event types, with the kind of each incident update."""
    return [
        f"{e.type}:{e.data['change']}" if e.type == "IncidentUpdated" else e.type
        for e in decision.events
    ]


def update(decision: Decision, change: str) -> dict[str, Any]:
    found = [e.data for e in decision.events if e.data.get("change") == change]
    assert len(found) == 1, changes(decision)
    return found[0]


def started(decision: Decision) -> list[tuple[str, str]]:
    return [(c.action, c.target) for c in decision.commands if isinstance(c, StartAction)]


def timers(decision: Decision) -> list[ScheduleTimer]:
    return [c for c in decision.commands if isinstance(c, ScheduleTimer)]


def pages(decision: Decision) -> list[Notify]:
    return [c for c in decision.commands if isinstance(c, Notify)]


def incident_of(decision: Decision) -> str:
    opened = [e for e in decision.events if e.type == "IncidentOpened"]
    assert len(opened) == 1, changes(decision)
    return str(opened[0].data["incident_id"])


def acted_on_normally(decision: Decision) -> bool:
    return changes(decision) == [
        "IncidentOpened",
        "IncidentUpdated:planned",
        "ActionProposed",
        "PolicyEvaluated",
    ] and started(decision) == [("process.restart", "web-1")]


def never_acted_on_or_escalated(log: list[Event]) -> bool:
    return not any(e.type in ("ActionProposed", "Escalated") for e in log)


# --------------------------------------------------------------------------- silences


def test_a_silenced_alert_is_recorded_but_never_acted_on_or_escalated() -> None:
    driver = Driver()
    created = driver.feed(silence("sil-1", 'service="web"'), actor="alice")
    assert created.events == ()
    muted = driver.signal("web-1", after=60)
    assert changes(muted) == ["IncidentOpened", "IncidentUpdated:muted"]
    assert update(muted, "muted")["detail"] == "silence sil-1 by alice: deploy of 4.2"
    assert started(muted) == [] and pages(muted) == []
    assert timers(muted) == [ScheduleTimer("silences", T0 + timedelta(hours=1))]
    # an alert no runbook handles would be escalated; silenced, nobody is paged either
    quiet = driver.signal("web-2", alertname="HighLatency", after=60)
    assert changes(quiet) == ["IncidentOpened", "IncidentUpdated:muted"]
    assert pages(quiet) == []
    # nor does anything happen while the silence lasts
    assert driver.feed(Tick(), after=600).events == ()
    assert never_acted_on_or_escalated(driver.log)


@pytest.mark.parametrize(
    ("offset", "muted"),
    [
        (10 * MINUTE - SECOND, False),
        (10 * MINUTE, True),  # starts_at is inclusive
        (20 * MINUTE - SECOND, True),
        (20 * MINUTE, False),  # ends_at is exclusive
    ],
    ids=["before-start", "at-start", "before-end", "at-end"],
)
def test_a_silence_mutes_from_its_start_inclusive_to_its_end_exclusive(
    offset: timedelta, muted: bool
) -> None:
    driver = Driver()
    window = silence("sil-1", 'instance="web-1"', starts=T0 + 10 * MINUTE, ends=T0 + 20 * MINUTE)
    created = driver.feed(window, actor="alice")
    assert timers(created) == [ScheduleTimer("silences", T0 + 10 * MINUTE)]  # its next change
    decision = driver.signal("web-1", after=offset.total_seconds())
    if muted:
        assert changes(decision) == ["IncidentOpened", "IncidentUpdated:muted"]
        assert started(decision) == []
    else:
        assert acted_on_normally(decision)


def test_every_matcher_of_a_silence_must_match() -> None:
    driver = Driver()
    driver.feed(silence("sil-1", 'service="web"', 'alertname="HighLatency"'), actor="alice")
    assert acted_on_normally(driver.signal("web-1"))
    latency = driver.signal("web-2", alertname="HighLatency")
    assert changes(latency) == ["IncidentOpened", "IncidentUpdated:muted"]


def test_when_the_silence_ends_the_still_firing_incident_is_acted_on() -> None:
    driver = Driver()
    driver.feed(silence("sil-1", 'service="web"'), actor="alice")
    muted = driver.signal("web-1", after=60)
    incident_id = incident_of(muted)
    end = T0 + timedelta(hours=1)
    # the core asks to be woken when the silence ends, and says so again after a restart
    assert ScheduleTimer("silences", end) in timers(muted)
    assert ScheduleTimer("silences", end) in driver.manager.pending_timers()
    early = driver.feed(Tick(timer_id="silences"), after=until(driver, end - SECOND))
    assert early.events == () and started(early) == []
    ended = driver.feed(Tick(timer_id="silences"), after=1)
    assert changes(ended) == [
        "IncidentUpdated:unmuted",
        "IncidentUpdated:planned",
        "ActionProposed",
        "PolicyEvaluated",
    ]
    assert {e.data["incident_id"] for e in ended.events} == {incident_id}
    assert started(ended) == [("process.restart", "web-1")]
    assert not any(t.timer_id == "silences" for t in driver.manager.pending_timers())


def test_a_silence_expired_early_unmutes_at_once() -> None:
    driver = Driver()
    driver.feed(silence("sil-1", 'service="web"'), actor="alice")
    driver.signal("web-1", after=60)
    expired = driver.feed(SilenceExpired(silence_id="sil-1"), after=300, actor="bob")
    assert changes(expired) == [
        "IncidentUpdated:unmuted",
        "IncidentUpdated:planned",
        "ActionProposed",
        "PolicyEvaluated",
    ]
    assert started(expired) == [("process.restart", "web-1")]
    # and it mutes nothing any more
    latency = driver.signal("web-2", alertname="HighLatency", after=1)
    assert "IncidentUpdated:muted" not in changes(latency)
    assert changes(latency)[-1] == "Escalated"


def test_an_alert_that_resolves_while_silenced_just_resolves() -> None:
    driver = Driver()
    driver.feed(silence("sil-1", 'service="web"'), actor="alice")
    driver.signal("web-1", after=60)
    resolved = driver.signal("web-1", "resolved", after=120)
    assert changes(resolved) == ["IncidentUpdated:signal_resolved", "IncidentResolved"]
    assert resolved.events[-1].data["reason"] == "all signals resolved"
    # nothing is left to act on when the silence ends
    after_end = driver.feed(Tick(timer_id="silences"), after=until(driver, T0 + timedelta(hours=1)))
    assert after_end.events == () and started(after_end) == []
    assert never_acted_on_or_escalated(driver.log)


@pytest.mark.parametrize(
    "matchers",
    [
        ['service="db"'],
        ['service="web"', 'instance!~"web-1|web-2"'],
        ['instance=~"web"'],  # regular expressions are anchored: "web" is not "web-1"
        ['instance=~"web-1"', 'alertname!="InstanceDown"'],
    ],
    ids=["other-service", "negative-regex", "anchored-regex", "not-equal"],
)
def test_a_silence_that_does_not_match_changes_nothing(matchers: list[str]) -> None:
    silenced = Driver()
    silenced.feed(silence("sil-1", *matchers), actor="alice")
    baseline = Driver()
    baseline.feed(Tick())  # the same number of inputs, so that derived ids line up
    decision = silenced.signal("web-1", after=60)
    expected = baseline.signal("web-1", after=60)
    assert [(e.type, e.data) for e in decision.events] == [
        (e.type, e.data) for e in expected.events
    ]
    assert decision.commands == expected.commands
    assert acted_on_normally(decision)


def test_a_negative_regex_silence_still_mutes_what_it_does_not_exclude() -> None:
    driver = Driver()
    driver.feed(silence("sil-1", 'service="web"', 'instance!~"web-1|web-2"'), actor="alice")
    assert acted_on_normally(driver.signal("web-1"))
    third = driver.signal("web-3", after=1)
    assert changes(third) == ["IncidentOpened", "IncidentUpdated:muted"]


def test_a_maintenance_window_says_so_and_names_who_opened_it() -> None:
    driver = Driver()
    window = silence("mw-7", 'instance="db-1"', comment="kernel upgrade", kind="maintenance")
    driver.feed(window, actor="bob")
    muted = driver.signal("db-1", after=60)
    assert changes(muted) == ["IncidentOpened", "IncidentUpdated:muted"]
    assert update(muted, "muted")["detail"] == "maintenance window mw-7 by bob: kernel upgrade"
    # no approval is asked for either (db needs approval to act)
    assert never_acted_on_or_escalated(driver.log)
    assert not any(e.type == "ApprovalRequested" for e in driver.log)


def test_a_silence_created_during_group_wait_mutes_the_incident_when_it_is_planned() -> None:
    driver = Driver(config(correlation={"group_by": GROUP_BY, "group_wait": "30s"}))
    opened = driver.signal("web-1")
    assert changes(opened) == ["IncidentOpened"]
    driver.feed(silence("sil-1", 'instance="web-1"', starts=T0 + 10 * SECOND), after=10)
    ready = driver.feed(Tick(), after=20)
    assert changes(ready) == ["IncidentUpdated:muted"]
    assert started(ready) == []


def test_a_silence_created_after_an_incident_was_acted_on_changes_nothing() -> None:
    driver = Driver()
    assert acted_on_normally(driver.signal("web-1"))
    created = driver.feed(silence("sil-1", 'service="web"', starts=T0 + SECOND), after=1)
    assert created.events == ()
    assert driver.feed(Tick(), after=60).events == ()


# --------------------------------------------------------------------------- inhibition


def test_an_alert_in_a_region_that_is_down_is_inhibited_until_the_region_recovers() -> None:
    driver = Driver(correlated(inhibit_rules=[REGION_DOWN]))
    source = alert(driver, "RegionDown", region="eu", severity="critical")
    # the source itself is never inhibited by itself (it matches both sides of the rule)
    assert "IncidentUpdated:muted" not in changes(source)
    assert changes(source)[-1] == "Escalated"  # no runbook for it: a human is paged
    same_region = alert(driver, "InstanceDown", region="eu", instance="web-1", after=10)
    assert changes(same_region) == ["IncidentOpened", "IncidentUpdated:muted"]
    assert update(same_region, "muted")["detail"] == (
        f"inhibited by rule {REGION_DOWN_TEXT} while RegionDown fires"
    )
    assert started(same_region) == [] and pages(same_region) == []
    other_region = alert(driver, "InstanceDown", region="us", instance="web-2", after=10)
    assert "IncidentUpdated:muted" not in changes(other_region)
    assert started(other_region) == [("process.restart", "web-2")]
    recovered = alert(
        driver, "RegionDown", region="eu", severity="critical", status="resolved", after=60
    )
    assert changes(recovered) == [
        "IncidentUpdated:signal_resolved",
        "IncidentResolved",
        "IncidentUpdated:unmuted",
        "IncidentUpdated:planned",
        "ActionProposed",
        "PolicyEvaluated",
    ]
    assert recovered.events[2].data["incident_id"] == incident_of(same_region)
    assert started(recovered) == [("process.restart", "web-1")]


def test_a_named_inhibition_rule_is_named_in_the_timeline() -> None:
    driver = Driver(correlated(inhibit_rules=[{"name": "region-down", **REGION_DOWN}]))
    alert(driver, "RegionDown", region="eu", severity="critical")
    muted = alert(driver, "InstanceDown", region="eu", instance="web-1", after=10)
    assert (
        update(muted, "muted")["detail"] == "inhibited by rule region-down while RegionDown fires"
    )


def test_alerts_matching_both_sides_of_a_rule_do_not_inhibit_each_other() -> None:
    driver = Driver(correlated(inhibit_rules=[REGION_DOWN]))
    first = alert(driver, "RegionDown", region="eu", severity="critical")
    second = driver.feed(
        SignalReceived(
            source="blackbox",
            fingerprint="RegionDown:eu:blackbox",
            status="firing",
            labels={
                "alertname": "RegionDown",
                "region": "eu",
                "severity": "critical",
                "instance": "probe-b",
            },
        ),
        after=5,
    )
    for decision in (first, second):
        assert changes(decision)[0] == "IncidentOpened"
        assert "IncidentUpdated:muted" not in changes(decision)
        assert changes(decision)[-1] == "Escalated"


def test_an_alert_that_is_not_a_target_of_the_rule_is_acted_on() -> None:
    driver = Driver(correlated(inhibit_rules=[REGION_DOWN]))
    alert(driver, "RegionDown", region="eu", severity="critical")
    info = alert(driver, "InstanceDown", region="eu", instance="web-1", severity="info", after=10)
    assert "IncidentUpdated:muted" not in changes(info)
    assert started(info) == [("process.restart", "web-1")]


def test_an_inhibited_alert_that_resolves_just_resolves() -> None:
    driver = Driver(correlated(inhibit_rules=[REGION_DOWN]))
    alert(driver, "RegionDown", region="eu", severity="critical")
    alert(driver, "InstanceDown", region="eu", instance="web-1", after=10)
    resolved = alert(
        driver, "InstanceDown", region="eu", instance="web-1", status="resolved", after=10
    )
    assert changes(resolved) == ["IncidentUpdated:signal_resolved", "IncidentResolved"]
    # when the region recovers later, there is nothing left to act on
    later = alert(
        driver, "RegionDown", region="eu", severity="critical", status="resolved", after=60
    )
    assert changes(later) == ["IncidentUpdated:signal_resolved", "IncidentResolved"]
    assert not any(e.type == "ActionProposed" for e in driver.log)


# --------------------------------------------------------------------------- resolve_timeout


def test_a_firing_signal_not_heard_of_for_resolve_timeout_counts_as_resolved() -> None:
    driver = Driver(correlated(resolve_timeout="5m"))
    fired = driver.signal("web-1", alertname="HighLatency")
    stale = ScheduleTimer("stale:HighLatency:web-1", T0 + 5 * MINUTE)
    assert stale in timers(fired)
    assert stale in driver.manager.pending_timers()
    early = driver.feed(Tick(timer_id=stale.timer_id), after=until(driver, stale.due - SECOND))
    assert early.events == ()
    timed_out = driver.feed(Tick(timer_id=stale.timer_id), after=1)
    assert changes(timed_out) == ["IncidentUpdated:signal_timed_out", "IncidentResolved"]
    detail = update(timed_out, "signal_timed_out")
    assert detail["fingerprint"] == "HighLatency:web-1"
    assert detail["detail"] == "not heard of for 5m"
    assert driver.manager.pending_timers() == []


def test_a_resend_before_the_deadline_keeps_the_signal_alive() -> None:
    driver = Driver(correlated(resolve_timeout="5m"))
    driver.signal("web-1", alertname="HighLatency")
    resent = driver.signal("web-1", alertname="HighLatency", after=240)
    assert resent.events == ()
    assert resent.commands == (ScheduleTimer("stale:HighLatency:web-1", T0 + 9 * MINUTE),)
    assert driver.feed(Tick(), after=until(driver, T0 + 5 * MINUTE)).events == ()
    assert driver.feed(Tick(), after=until(driver, T0 + 9 * MINUTE - SECOND)).events == ()
    timed_out = driver.feed(Tick(), after=1)
    assert changes(timed_out) == ["IncidentUpdated:signal_timed_out", "IncidentResolved"]


def test_without_resolve_timeout_a_firing_signal_never_times_out() -> None:
    driver = Driver()
    fired = driver.signal("web-1", alertname="HighLatency")
    assert not any(t.timer_id.startswith("stale:") for t in timers(fired))
    assert driver.feed(Tick(), after=7 * 86400).events == ()
    assert driver.manager.state.incidents  # still open
    resent = driver.signal("web-1", alertname="HighLatency", after=60)
    assert resent.events == () and resent.commands == ()


def test_a_timed_out_signal_waits_for_the_action_in_flight_then_verifies() -> None:
    driver = Driver(correlated(resolve_timeout="5m", group_wait="0s"))
    fired = driver.signal("web-1")
    command = next(c for c in fired.commands if isinstance(c, StartAction))
    timed_out = driver.feed(Tick(), after=300)
    assert changes(timed_out) == ["IncidentUpdated:signal_timed_out"]  # the action is in flight
    driver.feed(
        ActionStarted(
            command_id=command.command_id,
            incident_id=command.incident_id,
            action=command.action,
            target=command.target,
        )
    )
    succeeded = driver.feed(ActionSucceeded(command_id=command.command_id), after=5)
    assert changes(succeeded) == ["VerificationPassed", "IncidentResolved"]
    assert (
        succeeded.events[-1].data["reason"] == "resolved after process.restart on web-1, verified"
    )


def test_an_inhibiting_alert_that_times_out_releases_what_it_inhibited() -> None:
    driver = Driver(correlated(resolve_timeout="5m", inhibit_rules=[REGION_DOWN]))
    alert(driver, "RegionDown", region="eu", severity="critical")
    muted = alert(driver, "InstanceDown", region="eu", instance="web-1", after=120)
    assert changes(muted) == ["IncidentOpened", "IncidentUpdated:muted"]
    released = driver.feed(Tick(), after=180)
    assert changes(released) == [
        "IncidentUpdated:signal_timed_out",
        "IncidentResolved",
        "IncidentUpdated:unmuted",
        "IncidentUpdated:planned",
        "ActionProposed",
        "PolicyEvaluated",
    ]
    assert started(released) == [("process.restart", "web-1")]


def test_a_silenced_signal_that_times_out_resolves_without_action() -> None:
    driver = Driver(correlated(resolve_timeout="5m"))
    driver.feed(silence("sil-1", 'service="web"'), actor="alice")
    driver.signal("web-1", after=60)
    timed_out = driver.feed(Tick(), after=300)
    assert changes(timed_out) == ["IncidentUpdated:signal_timed_out", "IncidentResolved"]
    assert never_acted_on_or_escalated(driver.log)


# --------------------------------------------------------------------------- redelivery


def _alertmanager_notification(status: str) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="InstanceDown"}',
            "status": status,
            "receiver": "onduty",
            "groupLabels": {"alertname": "InstanceDown"},
            "commonLabels": {"alertname": "InstanceDown", "service": "web"},
            "externalURL": "http://alertmanager:9093",
            "alerts": [
                {
                    "status": status,
                    "labels": {"alertname": "InstanceDown", "instance": "web-1", "service": "web"},
                    "annotations": {},
                    "startsAt": "2026-01-05T08:59:00Z",
                    "endsAt": "2026-01-05T09:10:00Z" if status == "resolved" else None,
                    "fingerprint": "6f1c3e2a9b7d4c10",
                }
            ],
        }
    ).encode()


def _deliver(driver: Driver, body: bytes, parse: Any, *, after: float = 0.0) -> Decision:
    signals = parse(body, received_at=driver.now + timedelta(seconds=after))
    assert len(signals) == 1
    return driver.feed(SignalReceived.model_validate(dict(signals[0])), after=after)


def test_the_same_alertmanager_notification_from_two_replicas_counts_once() -> None:
    driver = Driver()
    firing = _alertmanager_notification("firing")
    first = _deliver(driver, firing, alertmanager.parse)
    assert acted_on_normally(first)
    replica = _deliver(driver, firing, alertmanager.parse, after=0.2)
    assert replica.events == () and replica.commands == ()
    resolved = _alertmanager_notification("resolved")
    closed = _deliver(driver, resolved, alertmanager.parse, after=60)
    assert changes(closed) == ["IncidentUpdated:signal_resolved"]  # the restart is in flight
    replica = _deliver(driver, resolved, alertmanager.parse, after=0.2)
    assert replica.events == () and replica.commands == ()
    assert sum(e.type == "IncidentOpened" for e in driver.log) == 1


def _cloudevent(event_id: str, status: str) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "//monitoring/eu",
            "type": f"com.example.alert.{status}",
            "data": {
                "alertname": "InstanceDown",
                "fingerprint": "web-1-down",
                "status": status,
                "labels": {"instance": "web-1", "service": "web"},
            },
        }
    ).encode()


def test_a_redelivered_cloudevent_counts_once_even_after_the_state_changed() -> None:
    driver = Driver(correlated())
    first = _deliver(driver, _cloudevent("1", "firing"), cloudevents.parse)
    assert started(first) == [("process.restart", "web-1")]
    resolved = _deliver(driver, _cloudevent("2", "resolved"), cloudevents.parse, after=30)
    assert changes(resolved)[0] == "IncidentUpdated:signal_resolved"
    refired = _deliver(driver, _cloudevent("3", "firing"), cloudevents.parse, after=30)
    assert changes(refired)[0] == "IncidentUpdated:signal_refired"
    # the old resolution again: recognised by its id, it does not resolve the new firing
    again = _deliver(driver, _cloudevent("2", "resolved"), cloudevents.parse, after=30)
    assert again.events == () and again.commands == ()
    again = _deliver(driver, _cloudevent("1", "firing"), cloudevents.parse, after=30)
    assert again.events == () and again.commands == ()
    assert driver.manager.state.signals["web-1-down"].status == "firing"
    # a genuinely new notification is still heard
    fresh = _deliver(driver, _cloudevent("4", "resolved"), cloudevents.parse, after=30)
    assert changes(fresh)[0] == "IncidentUpdated:signal_resolved"


def test_a_redelivery_does_not_keep_a_signal_alive() -> None:
    driver = Driver(correlated(resolve_timeout="5m"))
    _deliver(driver, _cloudevent("1", "firing"), cloudevents.parse)
    again = _deliver(driver, _cloudevent("1", "firing"), cloudevents.parse, after=240)
    assert again.commands == ()  # no later deadline: it is the same old notification
    timed_out = driver.feed(Tick(), after=60)
    assert changes(timed_out)[0] == "IncidentUpdated:signal_timed_out"


# --------------------------------------------------------------------------- flapping


def _flap(driver: Driver, times: int, every: float = 30) -> list[Decision]:
    """HighLatency on web-1 (no runbook: escalated, never acted on) changing state `times`
    times, `every` seconds apart, starting with a firing."""
    return [
        driver.signal(
            "web-1", "firing" if i % 2 == 0 else "resolved", alertname="HighLatency", after=every
        )
        for i in range(times)
    ]


def test_a_flapping_incident_stays_open_until_a_full_calm_window() -> None:
    driver = Driver(correlated(flap_threshold=4, flap_window="15m"))
    decisions = _flap(driver, 6)
    flapped = decisions[4]
    assert "IncidentUpdated:flapping" in changes(flapped)
    assert update(flapped, "flapping")["detail"] == "5 state changes within 15m"
    incident_id = incident_of(flapped)
    assert changes(decisions[5]) == ["IncidentUpdated:signal_resolved"]  # stays open
    last = driver.now
    calm = ScheduleTimer(f"calm:{incident_id}", last + 15 * MINUTE)
    assert calm in driver.manager.pending_timers()
    # it fires again and resolves again within the window: the calm window starts over
    assert changes(driver.signal("web-1", alertname="HighLatency", after=300)) == [
        "IncidentUpdated:signal_refired"
    ]
    driver.signal("web-1", "resolved", alertname="HighLatency", after=60)
    last = driver.now
    assert ScheduleTimer(f"calm:{incident_id}", last + 15 * MINUTE) in (
        driver.manager.pending_timers()
    )
    assert driver.feed(Tick(), after=until(driver, calm.due)).events == ()
    early = driver.feed(Tick(), after=until(driver, last + 15 * MINUTE - SECOND))
    assert early.events == ()
    assert incident_id in driver.manager.state.incidents
    calm_now = driver.feed(Tick(), after=1)
    assert changes(calm_now) == ["IncidentResolved"]
    assert calm_now.events[0].data["incident_id"] == incident_id
    assert driver.manager.pending_timers() == []


def test_the_resolution_of_a_flapping_incident_asks_to_be_woken_when_calm() -> None:
    driver = Driver(correlated(flap_threshold=4, flap_window="15m"))
    decisions = _flap(driver, 6)
    incident_id = incident_of(decisions[4])
    calm = ScheduleTimer(f"calm:{incident_id}", driver.now + 15 * MINUTE)
    assert calm in driver.manager.pending_timers()
    # the running system arms only the timers decisions ask for: without this one, nothing
    # wakes the core to close the incident once it has been calm for a window
    assert calm in timers(decisions[5])


@pytest.mark.parametrize(
    ("third_change", "flapping"),
    [(15 * MINUTE - SECOND, True), (15 * MINUTE, False)],
    ids=["inside-the-window", "one-window-later"],
)
def test_a_change_exactly_one_window_old_no_longer_counts(
    third_change: timedelta, flapping: bool
) -> None:
    driver = Driver(correlated(flap_threshold=3, flap_window="15m"))
    driver.signal("web-1", alertname="HighLatency")
    driver.signal("web-1", "resolved", alertname="HighLatency", after=300)
    third = driver.signal("web-1", alertname="HighLatency", after=until(driver, T0 + third_change))
    assert ("IncidentUpdated:flapping" in changes(third)) is flapping


def test_the_flap_history_is_pruned_on_ticks() -> None:
    driver = Driver(correlated(flap_window="15m"))
    driver.signal("web-1", alertname="HighLatency")
    driver.signal("web-1", "resolved", alertname="HighLatency", after=30)
    driver.signal("web-2", alertname="HighLatency", after=until(driver, T0 + 5 * MINUTE))
    driver.signal("web-2", "resolved", alertname="HighLatency", after=30)
    transitions = driver.manager.state.transitions
    assert set(transitions) == {"HighLatency:web-1", "HighLatency:web-2"}
    driver.feed(Tick(), after=until(driver, T0 + 30 * SECOND + 15 * MINUTE - SECOND))
    assert set(driver.manager.state.transitions) == {"HighLatency:web-1", "HighLatency:web-2"}
    driver.feed(Tick(), after=1)  # web-1 has been calm for a whole window
    assert set(driver.manager.state.transitions) == {"HighLatency:web-2"}
    driver.feed(Tick(), after=until(driver, T0 + 5 * MINUTE + 30 * SECOND + 15 * MINUTE))
    assert driver.manager.state.transitions == {}


def test_silences_are_forgotten_a_day_after_they_ended() -> None:
    driver = Driver()
    driver.feed(silence("sil-1", 'service="web"', ends=T0 + timedelta(hours=1)), actor="alice")
    driver.feed(Tick(), after=until(driver, T0 + timedelta(hours=25)))
    assert set(driver.manager.state.silences) == {"sil-1"}  # ended exactly a day ago: kept
    driver.feed(Tick(), after=1)
    assert driver.manager.state.silences == {}


# --------------------------------------------------------------------------- known gaps


def test_a_flapping_alert_in_a_maintenance_window_pages_nobody() -> None:
    driver = Driver(correlated(flap_threshold=4, flap_window="15m"))
    window = silence("mw-1", 'instance="web-1"', comment="kernel upgrade", kind="maintenance")
    driver.feed(window, actor="bob")
    decisions = _flap(driver, 5)
    assert all("IncidentUpdated:muted" in changes(d) for d in decisions[::2])
    assert not any(pages(d) for d in decisions)
    assert never_acted_on_or_escalated(driver.log)


def test_an_incident_unmuted_by_a_new_alert_acts_on_that_alert_not_the_silenced_one() -> None:
    driver = Driver(config(correlation={"group_by": ["service", "alertname"]}))
    window = silence("mw-1", 'instance="web-1"', comment="kernel upgrade", kind="maintenance")
    driver.feed(window, actor="bob")
    muted = driver.signal("web-1", after=1)
    assert changes(muted) == ["IncidentOpened", "IncidentUpdated:muted"]
    joined = driver.signal("web-2", after=1)
    assert "IncidentUpdated:unmuted" in changes(joined)
    # web-1 is under maintenance: restarting it is exactly what the window was meant to stop
    assert ("process.restart", "web-1") not in started(joined)
    assert started(joined) == [("process.restart", "web-2")]


# --------------------------------------------------------------------------- replay


def _history() -> Driver:
    """A history touching every correlation feature: silences (ended by time and expired
    early), a maintenance window, inhibition and its release, resolve_timeout, flapping and
    redelivered notifications."""
    driver = Driver(
        correlated(
            inhibit_rules=[REGION_DOWN], resolve_timeout="5m", flap_threshold=4, group_wait="10s"
        )
    )
    driver.feed(silence("sil-1", 'instance="web-1"', ends=T0 + 10 * MINUTE), actor="alice")
    window = silence("mw-1", 'service="db"', comment="failover test", kind="maintenance")
    driver.feed(window, actor="bob")
    driver.signal("web-1", after=5)
    driver.signal("db-1", after=5)
    alert(driver, "RegionDown", region="eu", severity="critical", after=5)
    alert(driver, "InstanceDown", region="eu", instance="web-3", after=5)
    alert(driver, "InstanceDown", region="us", instance="web-2", after=5)
    driver.feed(Tick(), after=10)
    driver.feed(SilenceExpired(silence_id="mw-1"), after=60, actor="bob")
    _deliver(driver, _cloudevent("1", "firing"), cloudevents.parse, after=5)
    _deliver(driver, _cloudevent("1", "firing"), cloudevents.parse, after=5)
    _flap(driver, 6, every=20)
    alert(driver, "RegionDown", region="eu", severity="critical", status="resolved", after=30)
    for timer in driver.manager.pending_timers()[:3]:
        driver.feed(Tick(timer_id=timer.timer_id), after=until(driver, max(timer.due, driver.now)))
    driver.feed(Tick(), after=until(driver, T0 + 40 * MINUTE))
    driver.feed(Tick(), after=until(driver, T0 + 30 * timedelta(hours=1)))
    return driver


def test_the_history_uses_every_feature() -> None:
    log = _history().log
    updates = {e.data["change"] for e in log if e.type == "IncidentUpdated"}
    assert {"muted", "unmuted", "signal_timed_out", "flapping"} <= updates
    details = [e.data["detail"] for e in log if e.data.get("change") == "muted"]
    assert any(d.startswith("silence sil-1") for d in details)
    assert any(d.startswith("maintenance window mw-1") for d in details)
    assert any(d.startswith("inhibited by rule") for d in details)


def test_a_correlated_history_replays_without_differences() -> None:
    driver = _history()
    report = replay(driver.log)
    assert report.differences == []
    assert report.manager is not None
    assert report.manager.snapshot() == driver.manager.snapshot()
    assert report.manager.pending_timers() == driver.manager.pending_timers()


def test_a_manager_resumed_from_any_snapshot_equals_the_live_one() -> None:
    driver = _history()
    live = driver.manager
    for cut in range(len(driver.log) + 1):
        folded = Manager()
        for event in driver.log[:cut]:
            folded.apply(event)
        resumed = Manager.from_snapshot(folded.snapshot())
        assert resumed.pending_timers() == folded.pending_timers(), cut
        for event in driver.log[cut:]:
            resumed.apply(event)
        assert resumed.snapshot() == live.snapshot(), cut
        assert resumed.pending_timers() == live.pending_timers(), cut


def test_a_manager_resumed_mid_silence_decides_like_the_live_one() -> None:
    """Not only the same state: the same decisions for what comes next."""

    def muted_under_silence_and_inhibition() -> Driver:
        driver = Driver(correlated(inhibit_rules=[REGION_DOWN], resolve_timeout="5m"))
        driver.feed(silence("sil-1", 'instance="web-1"'), actor="alice")
        alert(driver, "RegionDown", region="eu", severity="critical", after=5)
        alert(driver, "InstanceDown", region="eu", instance="web-3", after=5)
        driver.signal("web-1", after=5)
        return driver

    def rest(driver: Driver) -> list[Decision]:
        return [
            driver.feed(SilenceExpired(silence_id="sil-1"), after=60, actor="bob"),
            alert(driver, "RegionDown", region="eu", severity="critical", status="resolved"),
            driver.feed(Tick(), after=600),
        ]

    live = muted_under_silence_and_inhibition()
    resumed = muted_under_silence_and_inhibition()
    resumed.manager = Manager.from_snapshot(resumed.manager.snapshot())
    expected, actual = rest(live), rest(resumed)
    assert actual == expected
    assert started(expected[0]) == [("process.restart", "web-1")]
    assert started(expected[1]) == [("process.restart", "web-3")]
