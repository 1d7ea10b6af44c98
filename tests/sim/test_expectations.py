"""Expectations: one line each, read with errors that say where and what, checked against a
scorecard's metrics (per group when they name one)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from onduty.config import ConfigError
from onduty.sim import load_scenario, parse_scenario
from onduty.sim.driver import IN_MEMORY, run_scenario
from onduty.sim.expectations import (
    DURING_METRICS,
    ExpectationError,
    Watch,
    check,
    from_mapping,
    parse_expectation,
)
from onduty.sim.lab import load_setup


@pytest.mark.parametrize(
    ("text", "metric", "op", "value", "group"),
    [
        ("mttr_p90 < 10m", "mttr_p90", "<", 600.0, None),
        ("wrong_actions == 0", "wrong_actions", "==", 0.0, None),
        ("escalated_within < 5m for tier critical", "escalated_within", "<", 300.0,
         ("tier", "critical")),
        ("slo_minutes_lost<=30", "slo_minutes_lost", "<=", 30.0, None),
        ("slo_minutes_lost < 1h", "slo_minutes_lost", "<", 60.0, None),  # minutes
        ("mttd_max >= 1h30m", "mttd_max", ">=", 5400.0, None),
        ("false_action_rate != 0.5 for kind disk_full", "false_action_rate", "!=", 0.5,
         ("kind", "disk_full")),
        ("guardrail_denials >= 1 for rule restart-budget", "guardrail_denials", ">=", 1.0,
         ("rule", "restart-budget")),
    ],
)  # fmt: skip
def test_parse(
    text: str, metric: str, op: str, value: float, group: tuple[str, str] | None
) -> None:
    parsed = parse_expectation(text)
    assert (parsed.metric, parsed.op, parsed.value, parsed.group) == (metric, op, value, group)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mttr_p90 < ", "cannot read 'mttr_p90 <'"),
        ("mttr < 10m", "unknown metric 'mttr'"),
        ("wrong_actoins == 0", "did you mean 'wrong_actions'?"),
        ("actions < 10m", "actions is a count, not a duration"),
        ("actions < lots", "'lots' is neither a number nor a duration"),
        ("actions < 1 for team sre", "a group is one of tier, service, kind, rule"),
        ("actions < 1 for rule r", "only guardrail_denials can be counted per rule"),
        ("", "an expectation is a line"),
    ],
)
def test_errors_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(ExpectationError) as caught:
        parse_expectation(text, "expect[3]")
    assert str(caught.value).startswith("expect[3]: ")
    assert message in str(caught.value)


def test_check_reads_the_metric_and_its_group() -> None:
    metrics = {"mttr_p90": 420.0, "wrong_actions": 1.0, "escalated_within": None}
    groups: dict[tuple[str, str], Mapping[str, float | None]] = {
        ("tier", "critical"): {"escalated_within": 200.0}
    }

    def by_group(group: tuple[str, str]) -> Mapping[str, float | None]:
        return groups.get(group, {})

    outcome = check(parse_expectation("mttr_p90 < 10m"), metrics, by_group)
    assert (outcome.name, outcome.bound, outcome.actual, outcome.ok) == (
        "mttr_p90",
        "< 10m",
        420.0,
        True,
    )
    assert not check(parse_expectation("wrong_actions == 0"), metrics).ok
    critical = check(
        parse_expectation("escalated_within < 3m for tier critical"), metrics, by_group
    )
    assert (critical.name, critical.actual, critical.ok) == (
        "escalated_within for tier critical",
        200.0,
        False,
    )
    # Nothing measured: an upper bound holds, a lower bound does not.
    assert check(parse_expectation("escalated_within < 5m"), metrics).ok
    assert not check(parse_expectation("escalated_within > 5m"), metrics).ok
    # A group with no way to read it fails rather than passing silently.
    assert not check(parse_expectation("mttr_p90 < 1h for tier low"), metrics).ok


def test_the_old_mapping_becomes_expressions() -> None:
    lines = from_mapping({"detected_min": 3, "wrong_actions_max": 0, "denied_by": ["freeze"]})
    assert lines == [
        "detected >= 3",
        "false_actions <= 0",
        "guardrail_denials >= 1 for rule freeze",
    ]
    scenario = parse_scenario({"name": "t", "seed": 1, "expect": {"detected_min": 3}})
    assert [e.text for e in scenario.expectations()] == ["detected >= 3"]
    listed = parse_scenario({"name": "t", "seed": 1, "expect": ["mttr_p90 < 10m"]})
    assert [e.name for e in listed.expectations()] == ["mttr_p90"]


def test_scenario_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\n"
        "seed: 1\n"
        "expect:\n"
        "  - mttr_p90 < 10m\n"
        "  - wrong_action == 0\n"
        "steady_state:\n"
        "  before: [mttr_p90 < 1m]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert caught.value.problems == [
        "steady_state.before[0]: unknown metric 'mttr_p90' (known: firing_alerts, "
        "instances_down, degraded_services, open_incidents) (line 7)",
        "expect[1]: unknown metric 'wrong_action' (did you mean 'wrong_actions'?) (line 5)",
    ]


def test_a_hypothesis_held_during_the_run_names_the_first_moment_that_broke_it() -> None:
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    watch = Watch(
        [
            parse_expectation("degraded_services <= 1", "during[0]", DURING_METRICS),
            parse_expectation("instances_down == 0", "during[1]", DURING_METRICS),
        ]
    )
    for minute, (degraded, down) in enumerate([(0, 0), (1, 0), (1, 2), (0, 3)]):
        state = {"degraded_services": float(degraded), "instances_down": float(down)}
        watch.observe(state, start + timedelta(minutes=minute))
    held, broken = watch.checks()
    assert (held.ok, held.actual) == (True, 1.0)  # the nearest it came to breaking
    assert (broken.ok, broken.actual) == (False, 2.0)
    assert broken.name == "instances_down (broken at 09:02:00)"


def test_a_run_fails_when_the_fleet_leaves_its_steady_state_during_it(tmp_path: Path) -> None:
    source = Path(__file__).parents[2] / "examples" / "scenarios" / "region_outage.yaml"
    strict = tmp_path / "region_outage.yaml"
    text = source.read_text().replace("degraded_services <= 1", "degraded_services == 0")
    strict.write_text(text.replace("config: onduty.yaml", f"config: {source.parent}/onduty.yaml"))
    for path, holds in ((source, True), (strict, False)):
        result = run_scenario(*load_setup(str(path), None), IN_MEMORY)
        during = [e for e in result.scorecard.expectations if "during" in e.name]
        assert [e.ok for e in during] == [holds]
        assert result.scorecard.passed is holds
