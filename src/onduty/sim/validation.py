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


def with_model(scenario_ref: str, config_path: str | None, model: Path, folder: Path) -> Path:
    """The scenario's configuration (or `config_path`) with the learning agent on and `model`
    active, written to a file in `folder`."""
    _, config = load_setup(scenario_ref, config_path)
    document = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    learning = dict(document.get("learning") or {})
    learning.update({"agent": "on", "model": str(model.resolve())})
    document["learning"] = learning
    path = folder / f"{Path(scenario_ref).stem}-with-model.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def as_configured(scenario_ref: str, config_path: str | None, folder: Path) -> Path:
    """The configuration the scenario runs against now, as a file (the side A of the pairs)."""
    _, config = load_setup(scenario_ref, config_path)
    document = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    path = folder / f"{Path(scenario_ref).stem}-as-configured.yaml"
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
            before = as_configured(scenario, config_path, folder)
            after = with_model(scenario, config_path, model, folder)
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
