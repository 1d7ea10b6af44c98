"""A deliberately bad runbook (restart on every alert) is judged worse than the example
policy on the same scenarios and seeds: more wrong actions, and no better recovery."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from onduty.sim.lab import compare, setup
from tests.sim.lab_configs import bad_runbook_config

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
SCENARIOS = [
    "demo",
    *sorted(
        str(path)
        for path in EXAMPLES.glob("*.yaml")
        if "seed" in (yaml.safe_load(path.read_text(encoding="utf-8")) or {})  # not a config
    ),
]
SEEDS = [1, 2]


def _own_config(folder: Path, scenario: str) -> Path:
    """The config the scenario runs against, as a file (the example policy)."""
    _, config = setup(scenario, None)
    path = folder / f"{Path(scenario).stem}-own.yaml"
    path.write_text(config.model_dump_json(by_alias=True, exclude_unset=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda ref: Path(ref).stem)
def test_restarting_on_every_alert_is_judged_worse(scenario: str, tmp_path: Path) -> None:
    result = compare(
        scenario, _own_config(tmp_path, scenario), bad_runbook_config(tmp_path, scenario), SEEDS
    )
    means = {d.metric: (d.mean_a, d.mean_b) for d in result.differences}
    good_wrong, bad_wrong = means["wrong_actions"]
    assert good_wrong is not None and bad_wrong is not None
    assert bad_wrong >= good_wrong
    good_recovery, bad_recovery = means["mttr_median"]
    if good_recovery is not None and bad_recovery is not None:
        assert bad_recovery >= good_recovery  # no better recovery


def test_on_the_demo_it_acts_wrongly_more_often_and_recovers_slower(tmp_path: Path) -> None:
    result = compare("demo", _own_config(tmp_path, "demo"), bad_runbook_config(tmp_path), SEEDS)
    for good, bad in zip(result.a.runs["policy"], result.b.runs["policy"], strict=True):
        assert bad.metrics["wrong_actions"] > good.metrics["wrong_actions"]  # type: ignore[operator]
        assert bad.metrics["mttr_median"] > good.metrics["mttr_median"]  # type: ignore[operator]
        assert bad.metrics["slo_minutes_lost"] > good.metrics["slo_minutes_lost"]  # type: ignore[operator]
    assert {"wrong_actions", "mttr_median", "slo_minutes_lost"} <= {d.metric for d in result.worse}
