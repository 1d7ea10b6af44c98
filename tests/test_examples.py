"""The examples folder holds runnable copies of the built-in demo; they must not drift."""

from __future__ import annotations

from pathlib import Path

from onduty.configfile import load_config
from onduty.sim.scenario import load_scenario, read_builtin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_demo_example_matches_the_built_in_demo() -> None:
    assert (EXAMPLES / "demo" / "onduty.yaml").read_text() == read_builtin("demo-config.yaml")
    assert (EXAMPLES / "demo" / "scenario.yaml").read_text() == read_builtin("demo.yaml")


def test_every_example_config_is_valid() -> None:
    configs = sorted(EXAMPLES.rglob("onduty*.yaml"))
    assert configs
    for path in configs:
        load_config(path)
    for path in sorted(EXAMPLES.rglob("scenario*.yaml")):
        load_scenario(path)
