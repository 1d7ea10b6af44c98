"""The demo's world on its own: quiet when nothing is injected. (The demo's whole story, with the
real manager, is checked in test_demo_end_to_end.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest

from onduty.sim import World, load_builtin_config, parse_scenario

RUNBOOKS = {
    "InstanceDown": ("process.restart", "instance"),
    "HighErrorRate": ("deploy.rollback", "service"),
    "HighMemoryUsage": ("process.restart", "instance"),
}
GROUP_WAIT = timedelta(seconds=30)
APPROVAL = timedelta(minutes=2)
BUDGET, BUDGET_WINDOW = 3, timedelta(hours=1)


@pytest.mark.parametrize("seed", range(4))
def test_a_control_period_without_faults_emits_no_alerts(seed: int) -> None:
    scenario = parse_scenario(
        {"name": "quiet", "seed": seed, "duration": "6h", "control": [{"from": "0s", "to": "6h"}]}
    )
    world = World(load_builtin_config("demo"), scenario)
    assert world.advance(world.end) == []
    assert world.faults == []
