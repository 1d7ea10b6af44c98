"""Validating a learning model before it goes live (`onduty learn validate`): the sim lab's
scenarios run over many seeds as configured, and again with the learning agent on and the model
active, paired by seed (`onduty sim --compare`). The model passes when no scenario gets
significantly worse on any metric and every expectation still holds."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from onduty.sim.lab import Comparison, compare, load_setup

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ScenarioVerdict:
    scenario: str
    comparison: Comparison

    @property
    def passed(self) -> bool:
        return self.comparison.b.passed and not self.comparison.worse


def configuration_file(
    scenario_ref: str, config_path: str | None, folder: Path, model: Path | None = None
) -> Path:
    """The configuration the scenario runs against (`config_path`, else its own) written to a
    file in `folder`: as it is, or with the learning agent on and `model` active."""
    _, config = load_setup(scenario_ref, config_path)
    document = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if model is not None:
        document["learning"] = {
            **(document.get("learning") or {}),
            "agent": "on",
            "model": str(model.resolve()),
        }
    side = "with-model" if model is not None else "as-configured"
    path = folder / f"{Path(scenario_ref).stem}-{side}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def validate(
    model: Path,
    scenarios: Sequence[str],
    config_path: str | None,
    seeds: Sequence[int],
    *,
    jobs: int | None = None,
    progress: Callable[[str], Progress] | None = None,
) -> list[ScenarioVerdict]:
    """Each scenario over `seeds`, as configured against with the model; paired by seed."""
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="onduty-validate-") as scratch:
        folder = Path(scratch)
        for scenario in scenarios:
            before = configuration_file(scenario, config_path, folder)
            after = configuration_file(scenario, config_path, folder, model)
            comparison = compare(
                scenario,
                before,
                after,
                seeds,
                jobs=jobs,
                progress=progress(scenario) if progress else None,
                control=True,
            )
            verdicts.append(ScenarioVerdict(scenario, comparison))
    return verdicts
