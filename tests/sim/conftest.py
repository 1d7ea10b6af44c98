"""Shared fixtures for the simulator tests: a small fleet and a scenario factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from onduty.config import Config, parse_config
from onduty.sim import Scenario, World, parse_scenario

SMALL_CONFIG: dict[str, Any] = {
    "services": [
        {
            "name": "web",
            "tier": "critical",
            "region": "eu-west",
            "autonomy": "act",
            "instances": ["web-1", "web-2", "web-3"],
        },
        {
            "name": "api",
            "tier": "high",
            "region": "us-east",
            "autonomy": "act",
            "instances": ["api-1", "api-2"],
        },
    ],
}

ScenarioFactory = Callable[..., Scenario]
WorldFactory = Callable[..., World]


@pytest.fixture
def small_config() -> Config:
    return parse_config(SMALL_CONFIG)


@pytest.fixture
def make_scenario() -> ScenarioFactory:
    def build(faults: list[dict[str, Any]] | None = None, **fields: Any) -> Scenario:
        document: dict[str, Any] = {"name": "test", "seed": 1, "duration": "2h"}
        document.update(fields)
        document["faults"] = faults or []
        return parse_scenario(document)

    return build


@pytest.fixture
def make_world(small_config: Config, make_scenario: ScenarioFactory) -> WorldFactory:
    def build(faults: list[dict[str, Any]] | None = None, **fields: Any) -> World:
        return World(small_config, make_scenario(faults, **fields))

    return build
