"""Releases announced as a CD system does, routine releases, faults kept apart, and the lab's
learning figures: over a small Monte Carlo of the ambiguous-memory scenario, the learning agent
gets the fix right first more often than the runbook order once it has learned, and recovers
sooner; the report draws its learning curves."""

from __future__ import annotations

import io
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from onduty.config import Config, ConfigError
from onduty.sim import lab
from onduty.sim.driver import run_scenario
from onduty.sim.scenario import parse_scenario
from onduty.sim.world import DEPLOY_ALERT
from tests.sim.conftest import ScenarioFactory, WorldFactory

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
SCENARIO = str(EXAMPLES / "ambiguous_memory.yaml")
RUNBOOK_ORDER = EXAMPLES / "learning" / "runbook-order.yaml"
LEARNING = EXAMPLES / "learning" / "learning.yaml"
BASE: dict[str, Any] = {"name": "t", "seed": 1, "duration": "6h"}
FLEET = {"services": [{"name": "api", "instances": 3}]}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"announce_deploys": "sometimes"}, "announce_deploys:"),
        ({"routine_deploys": [{"service": "api", "rate": 0}]}, "routine_deploys[0].rate:"),
        ({"routine_deploys": [{"rate": "1/d"}]}, "routine_deploys[0].service: required"),
        (
            {"fleet": FLEET, "routine_deploys": [{"service": "web", "rate": "1/d"}]},
            "routine_deploys[0].service: no service 'web' in the fleet (services: api)",
        ),
        ({"fault_spacing": "0s"}, "fault_spacing: must be longer than zero"),
        ({"learning_period": "6h"}, "learning_period: must be longer than zero and shorter"),
    ],
)
def test_the_new_settings_are_checked_and_name_their_field(
    fields: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario({**BASE, **fields}, "s.yaml")
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_a_routine_deploy_of_a_service_the_config_lacks_is_refused(
    small_config: Config, make_scenario: ScenarioFactory
) -> None:
    from onduty.sim import World

    scenario = make_scenario(routine_deploys=[{"service": "search", "rate": "1/h"}])
    with pytest.raises(ConfigError, match=r"routine_deploys\[0\].service: no service 'search'"):
        World(small_config, scenario)


def test_drawn_faults_keep_their_spacing() -> None:
    spec = {"kind": "memory_leak", "target": {"service": "api"}, "count": 8}
    scenario = parse_scenario(
        {**BASE, "duration": "2d", "fleet": FLEET, "fault_spacing": "3h", "faults": [spec]}
    )
    times = sorted(f.at for f in scenario.planned_faults() if f.at is not None)
    assert len(times) == 8
    assert all(b - a >= timedelta(hours=3) for a, b in pairwise(times))


def _deploy_signals(signals: list[Any]) -> list[Any]:
    return [s for s in signals if s.labels.get("alertname") == DEPLOY_ALERT]


def test_a_release_is_announced_only_when_asked(make_world: WorldFactory) -> None:
    leak = [{"at": "10m", "kind": "deploy_leak", "target": "api"}]
    quiet = make_world(leak)
    assert _deploy_signals(quiet.advance(quiet.start + timedelta(minutes=20))) == []
    told = make_world(leak, announce_deploys=True)
    [signal] = _deploy_signals(told.advance(told.start + timedelta(minutes=20)))
    assert signal.status == "resolved"
    assert signal.labels == {
        "alertname": DEPLOY_ALERT,
        "service": "api",
        "version": told.fleet.services["api"].version,
        "severity": "info",
    }
    assert signal.starts_at == told.start + timedelta(minutes=10)


def test_routine_deploys_are_announced_and_wait_out_a_fault(make_world: WorldFactory) -> None:
    routine = [{"service": "api", "rate": "6/h"}]
    calm = make_world(announce_deploys=True, routine_deploys=routine)
    released = _deploy_signals(calm.advance(calm.end))
    assert len(released) >= 5  # about 12 in two hours
    assert len({s.labels["version"] for s in released}) == len(released)
    assert calm.faults == []  # harmless: nothing to recover from
    # an api instance leaking from the start until the end: no release while it lasts
    leaking = make_world(
        [{"at": "0s", "kind": "memory_leak", "target": "api-1"}],
        announce_deploys=True,
        routine_deploys=routine,
    )
    assert _deploy_signals(leaking.advance(leaking.end)) == []


def test_announced_releases_open_no_incident_and_page_nobody(
    small_config: Config, make_scenario: ScenarioFactory
) -> None:
    scenario = make_scenario(
        announce_deploys=True, routine_deploys=[{"service": "api", "rate": "4/h"}]
    )
    events: list[Any] = []
    result = run_scenario(scenario, small_config, lab.MEMORY, on_event=events.append)
    received = [
        e for e in events
        if e.type == "SignalReceived" and e.data["labels"]["alertname"] == DEPLOY_ALERT
    ]  # fmt: skip
    assert len(received) >= 3
    assert not [e for e in events if e.type in ("IncidentOpened", "Escalated", "ActionProposed")]
    assert result.scorecard.incidents == 0


@pytest.fixture(scope="module")
def comparison() -> lab.Comparison:
    """The ambiguous-memory scenario over six seeds: the runbook order (A), the learning
    agent (B) and people alone. Twelve runs of four simulated days, in two processes."""
    return lab.compare(
        SCENARIO, RUNBOOK_ORDER, LEARNING, range(1, 7), jobs=2, control=False, people=True
    )


def _figures(result: lab.Comparison) -> dict[tuple[str, str], lab.LearningFigures]:
    rows = lab.learning_rows(lab.learning_series(result), result.b.learning_period)
    return {(row.label.split(":")[0], row.phase): row for row in rows}


def test_after_its_learning_period_the_learning_agent_beats_the_runbook_order(
    comparison: lab.Comparison,
) -> None:
    figures = _figures(comparison)
    order, learner = figures[("A", "after it")], figures[("B", "after it")]
    people = figures[("people alone", "after it")]
    assert order.faults == learner.faults == people.faults > 20  # the same faults, same seeds
    assert learner.first_right is not None and order.first_right is not None
    assert learner.first_right > order.first_right + 0.2
    assert learner.wrong_per_run < order.wrong_per_run / 2
    assert learner.recover_p90 is not None and order.recover_p90 is not None
    assert learner.recover_p90 < order.recover_p90
    assert people.first_right is None and people.wrong_per_run == 0
    assert people.recover_p50 is not None and order.recover_p50 is not None
    assert people.recover_p50 > order.recover_p50  # people alone are slower than either
    # it learns: better after the learning period than during it
    assert learner.first_right > figures[("B", "learning period")].first_right  # type: ignore[operator]
    console = Console(file=io.StringIO(), width=200)
    lab.render_learning(lab.learning_series(comparison), comparison.b.learning_period, console)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "learning period (2d)" in shown and "A: runbook-order" in shown
    assert "B: learning" in shown and "people alone" in shown


def test_the_report_draws_the_learning_curves(comparison: lab.Comparison, tmp_path: Path) -> None:
    from onduty.report.html import write_html

    series = lab.learning_series(comparison)
    curve = lab.learning_curve(series, comparison.b.learning_period)
    page = write_html(tmp_path / "r.html", None, comparison.b, learning=curve)
    html = page.read_text(encoding="utf-8")
    assert 'data-section="learning"' in html and 'data-table="learning"' in html
    for chart in ("learning-right", "learning-recovery"):
        assert f'id="chart-{chart}"' in html
    assert "A: runbook-order: fault 1:" in html and "people alone: fault 1:" in html
    assert "end of the learning period" in html
    # a Monte Carlo run without the learning agent has no learning curve
    plain = lab.LabResult("s", "c", [1], {"policy": [lab.RunSummary(1, "policy", {})]}, 1)
    assert lab.learning_series(plain) == []
    assert 'data-section="learning"' not in write_html(tmp_path / "p.html", None, plain).read_text()


def test_a_single_run_with_the_learning_agent_reports_its_curve(tmp_path: Path) -> None:
    from onduty.sim.driver import IN_MEMORY, run_scenario_command

    page = tmp_path / "one.html"
    console = Console(file=io.StringIO(), width=200)
    code = run_scenario_command(
        SCENARIO, None, IN_MEMORY, seed=None, fresh=True, live=False, console=console,
        report=page,
    )  # fmt: skip
    assert code == 0, console.file.getvalue()  # type: ignore[attr-defined]
    html = page.read_text(encoding="utf-8")
    assert 'data-section="learning"' in html and "with the policy: fault 1:" in html
