"""A group is titled as a group: by what its signals share, retitled only when that changes,
and counted (never recorded per signal) by the read model."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onduty.commands import Notify
from onduty.correlate.titles import group_title
from onduty.events import Event, SignalReceived, Tick
from onduty.manager import Manager
from onduty.readmodel import IncidentProjection
from onduty.replay import replay
from tests.core.helpers import Driver, config


def oom(pod: str, service: str = "svc-0", **extra: str) -> SignalReceived:
    return SignalReceived(
        source="k8s",
        fingerprint=f"oom:{pod}",
        status="firing",
        labels={"alertname": "PodOOMKilled", "service": service, "pod": pod, **extra},
        annotations={"summary": f"{pod} OOM killed"},
    )


def by_service() -> Driver:
    return Driver(config(correlation={"group_by": ["service", "alertname"]}))


def retitles(log: list[Event]) -> list[str]:
    return [
        e.data["detail"]
        for e in log
        if e.type == "IncidentUpdated" and e.data["change"] == "retitled"
    ]


def test_sixty_oom_killed_pods_are_one_incident_titled_by_what_they_share() -> None:
    driver = by_service()
    for number in range(104, 164):
        driver.feed(oom(f"pod-{number}"), after=1)
    (incident,) = driver.manager.state.incidents.values()
    assert incident.title == "PodOOMKilled on svc-0"
    assert len(incident.fingerprints) == 60
    # The log holds the change once, not once per signal.
    assert retitles(driver.log) == ["PodOOMKilled on svc-0"]
    opened = next(e for e in driver.log if e.type == "IncidentOpened")
    assert opened.data["title"] == "pod-104 OOM killed"  # one signal: its own summary

    view = IncidentProjection().feed_all(driver.log).incidents[incident.incident_id]
    assert view.title == "PodOOMKilled on svc-0: 60 pods"


def test_pages_name_the_group_not_its_first_member() -> None:
    driver = Driver(config(correlation={"group_by": ["service", "alertname"], "group_wait": "30s"}))
    driver.feed(oom("pod-1"))
    driver.feed(oom("pod-2"), after=1)
    decision = driver.feed(Tick(), after=60)
    (page,) = [c for c in decision.commands if isinstance(c, Notify)]
    assert page.title == "PodOOMKilled on svc-0"
    assert page.message.startswith("PodOOMKilled on svc-0: no runbook matches")


def test_the_title_narrows_only_when_what_is_shared_changes() -> None:
    driver = Driver(config(correlation={"group_by": ["service"]}))
    driver.feed(oom("pod-1"))
    driver.feed(oom("pod-2"), after=1)
    driver.feed(oom("pod-3"), after=1)
    other = SignalReceived(
        source="k8s",
        fingerprint="lat:svc-0",
        status="firing",
        labels={"alertname": "HighLatency", "service": "svc-0"},
    )
    driver.feed(other, after=1)
    driver.feed(oom("pod-4"), after=1)
    assert retitles(driver.log) == ["PodOOMKilled on svc-0", "alerts on svc-0"]
    (view,) = IncidentProjection().feed_all(driver.log).incidents.values()
    assert view.title == "alerts on svc-0: 5 pods"


def test_signals_with_one_summary_keep_it() -> None:
    driver = by_service()
    for pod in ("pod-1", "pod-2"):
        signal = oom(pod)
        driver.feed(signal.model_copy(update={"annotations": {"summary": "OOM"}}), after=1)
    assert retitles(driver.log) == []
    (view,) = IncidentProjection().feed_all(driver.log).incidents.values()
    assert view.title == "OOM: 2 pods"


def test_a_single_signal_keeps_its_own_title() -> None:
    driver = by_service()
    driver.feed(oom("pod-1"))
    (view,) = IncidentProjection().feed_all(driver.log).incidents.values()
    assert view.title == "pod-1 OOM killed"


def test_a_state_from_an_older_snapshot_still_titles_its_group() -> None:
    driver = by_service()
    driver.feed(oom("pod-1"))
    driver.feed(oom("pod-2"), after=1)
    snapshot = driver.manager.state.to_snapshot()
    for incident in snapshot["incidents"].values():  # as written before group titles
        del incident["shared_labels"], incident["shared_summary"]
        incident["title"] = "pod-1 OOM killed"
    driver.manager = Manager.from_snapshot(snapshot)
    driver.feed(oom("pod-3"), after=1)
    (incident,) = driver.manager.state.incidents.values()
    assert incident.title == "PodOOMKilled on svc-0"


def test_replay_reproduces_the_retitles() -> None:
    driver = by_service()
    for number in range(5):
        driver.feed(oom(f"pod-{number}"), after=1)
    assert replay(driver.log).same


LABEL_VALUES = st.dictionaries(
    st.sampled_from(["pod", "instance", "job", "node", "alertname"]),
    st.sampled_from(["a", "b"]),
    max_size=4,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=st.lists(LABEL_VALUES, min_size=1, max_size=12))
def test_a_group_is_titled_by_what_all_its_signals_share_and_retitled_rarely(
    members: list[dict[str, str]],
) -> None:
    driver = Driver(config(correlation={"group_by": ["service"]}))
    for number, labels in enumerate(members):
        driver.feed(
            SignalReceived(
                source="k8s",
                fingerprint=f"s-{number}",
                status="firing",
                labels={"service": "svc-0", **labels},
            ),
            after=1,
        )
    (incident,) = driver.manager.state.incidents.values()
    common = {"service": "svc-0", **members[0]}
    for labels in members[1:]:
        common = {k: v for k, v in common.items() if {"service": "svc-0", **labels}.get(k) == v}
    if len(members) > 1:
        assert incident.title == group_title(common)
    # What members share only shrinks: at most one retitle per label it can lose, plus one.
    assert len(retitles(driver.log)) <= len(members[0]) + 2
    assert replay(driver.log).same
