"""The ready scenarios in examples/scenarios: one per fault kind and a no-fault control, each
of whose expectations hold with the example policy (examples/scenarios/onduty.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from onduty.cli import app
from onduty.sim import lab
from onduty.sim.driver import run_scenario
from onduty.sim.expectations import check
from onduty.sim.faults import FAULT_KINDS
from onduty.sim.scenario import load_scenario

FOLDER = Path(__file__).resolve().parents[1] / "examples" / "scenarios"
SCENARIOS = sorted(p for p in FOLDER.glob("*.yaml") if p.name != "onduty.yaml")


# Scenarios beyond one per fault kind, each with the config it runs against.
MIXES = {"ambiguous_memory": "learning/learning.yaml", "mixed_faults": "onduty.yaml"}


def test_there_is_one_scenario_per_fault_kind_and_a_control() -> None:
    names = {path.stem for path in SCENARIOS}
    assert names == {*FAULT_KINDS, "control", *MIXES}
    for path in SCENARIOS:
        scenario = load_scenario(path)
        assert scenario.config == MIXES.get(path.stem, "onduty.yaml")
        kinds = {fault.kind for fault in scenario.faults}
        assert path.stem in kinds or (path.stem == "control" and not kinds) or path.stem in MIXES
        assert scenario.expectations(), path.name


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda path: path.stem)
def test_its_expectations_hold_with_the_example_policy(path: Path) -> None:
    scenario, config = lab.load_setup(str(path), None)
    result = run_scenario(scenario, config, lab.MEMORY)
    card = result.scorecard

    def by_group(group: tuple[str, str]) -> dict[str, float | None]:
        if group[0] == "rule":
            return {"guardrail_denials": float(card.denied_by.get(group[1], 0))}
        return dict(card.metrics(group))

    failed = [
        outcome
        for outcome in (check(e, card.metrics(), by_group) for e in scenario.expectations())
        if not outcome.ok
    ]
    assert failed == []
    assert card.passed, [e for e in card.expectations if not e.ok]
    if path.stem == "control":
        assert card.metrics()["actions"] == 0
        assert result.world.actions == []


def test_onduty_sim_exits_zero_for_the_control(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(
        app, ["sim", str(FOLDER / "control.yaml"), "--store", f"sqlite:///{tmp_path / 's.db'}"]
    )
    assert outcome.exit_code == 0, outcome.output
    assert "expect actions == 0: 0" in outcome.output
