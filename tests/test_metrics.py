"""`/metrics` counts exactly what the log holds: a simulated run's events, fed to the metrics the
server builds, give counters equal to the log's own counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from onduty.log.base import open_log
from onduty.obs import Metrics, family
from tests.run_cli import onduty

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "scenarios"


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition text, by name and labels."""
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family_ in text_string_to_metric_families(text)
        for sample in family_.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.parametrize("scenario", ["demo", str(EXAMPLES / "actuator_silent_failure.yaml")])
def test_counters_match_the_log(tmp_path: Path, scenario: str) -> None:
    store = tmp_path / "sim.db"
    result = onduty("sim", scenario, "--store", str(store))
    assert result.returncode in (0, 1), result.stderr
    events = list(open_log(str(store)).read())
    metrics = Metrics()
    for event in events:
        metrics.observe(event)
    found = samples(metrics)

    by_type = Counter(event.type for event in events)
    for kind, count in by_type.items():
        assert value(found, "onduty_events_total", type=kind) == count
    assert value(found, "onduty_log_head_seq") == events[-1].seq

    started = Counter(e.data["action"] for e in events if e.type == "ActionStarted")
    assert started, "the scenario starts actions"
    for action, count in started.items():
        labels = {"actuator": family(action), "action": action}
        assert value(found, "onduty_actions_started_total", **labels) == count
    assert sum(
        v for (name, _), v in found.items() if name == "onduty_actions_started_total"
    ) == sum(started.values())
    outcomes = sum(v for (name, _), v in found.items() if name == "onduty_action_outcomes_total")
    finished = ("ActionSucceeded", "ActionFailed", "ActionOutcomeUnknown")
    assert outcomes == sum(by_type[kind] for kind in finished)

    verdicts = [e for e in events if e.type == "PolicyEvaluated"]
    assert verdicts
    for effect, count in Counter(e.data["verdict"] for e in verdicts).items():
        assert value(found, "onduty_verdicts_total", effect=effect) == count
    rules = Counter((r["rule"], r["effect"]) for e in verdicts for r in e.data["rules"])
    for (rule, effect), count in rules.items():
        assert value(found, "onduty_rule_outcomes_total", rule=rule, effect=effect) == count
    assert sum(v for (name, _), v in found.items() if name == "onduty_rule_outcomes_total") == sum(
        rules.values()
    )

    tiers = Counter(str(e.data.get("tier", 0)) for e in events if e.type == "Escalated")
    for tier, count in tiers.items():
        assert value(found, "onduty_escalations_total", tier=tier) == count
    assert sum(v for (name, _), v in found.items() if name == "onduty_escalations_total") == sum(
        tiers.values()
    )

    for outcome, kind in (("passed", "VerificationPassed"), ("failed", "VerificationFailed")):
        assert value(found, "onduty_verifications_total", outcome=outcome) == by_type[kind]
    received = Counter(e.data["source"] for e in events if e.type == "SignalReceived")
    for source, count in received.items():
        assert (
            value(found, "onduty_signal_events_total", source=source, outcome="received") == count
        )

    # A first verdict per proposed action whose incident opened in this log.
    first = {e.data["command_id"] for e in verdicts}
    assert value(found, "onduty_signal_to_verdict_seconds_count") == len(first)
    assert value(found, "onduty_signal_to_verdict_seconds_sum") > 0


def test_latency_is_event_time_from_the_opening_signal(tmp_path: Path) -> None:
    """The demo's first incident: its signal at 09:11:00, its verdict after the 30 s grouping
    window; the latency is read from the events' times, not from a clock."""
    store = tmp_path / "sim.db"
    assert onduty("sim", "demo", "--store", str(store)).returncode == 0
    events = list(open_log(str(store)).read())
    metrics = Metrics()
    first_verdict = next(i for i, e in enumerate(events) if e.type == "PolicyEvaluated")
    for event in events[: first_verdict + 1]:
        metrics.observe(event)
    found = samples(metrics)
    assert value(found, "onduty_signal_to_verdict_seconds_count") == 1
    assert value(found, "onduty_signal_to_verdict_seconds_sum") == 30.0


def test_approval_wait_is_event_time_from_request_to_answer() -> None:
    from datetime import UTC, datetime, timedelta

    from onduty.events import (
        ApprovalDenied,
        ApprovalExpired,
        ApprovalRequested,
        PolicyEvaluated,
        make_event,
    )

    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    metrics = Metrics()

    def feed(body: object, after: float) -> None:
        event = make_event(body, id=f"e{after}", ts=t0 + timedelta(seconds=after), stream="i")  # type: ignore[arg-type]
        metrics.observe(event)

    for number in (1, 2, 3):
        feed(
            ApprovalRequested(
                approval_id=f"apr-{number}", command_id=f"cmd-{number}", incident_id="i",
                expires_at=t0 + timedelta(minutes=10),
            ),
            0,
        )  # fmt: skip
    feed(
        PolicyEvaluated(
            command_id="cmd-1", incident_id="i", verdict="allow", policy_version="v",
            rules=[], reason="approved by alice",
        ),
        90,
    )  # fmt: skip
    feed(ApprovalDenied(approval_id="apr-2", command_id="cmd-2"), 30)
    feed(ApprovalExpired(approval_id="apr-3", command_id="cmd-3"), 600)
    found = samples(metrics)
    for outcome, waited in (("granted", 90.0), ("denied", 30.0), ("expired", 600.0)):
        assert value(found, "onduty_approval_wait_seconds_count", outcome=outcome) == 1
        assert value(found, "onduty_approval_wait_seconds_sum", outcome=outcome) == waited
    assert value(found, "onduty_approvals_pending") == 0
