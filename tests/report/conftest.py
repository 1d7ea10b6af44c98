"""The demo scenario run once, in-process, into a SQLite store: its result, its events, and the
incidents that tell its story."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from onduty.events import Event
from onduty.log import open_log
from onduty.sim import load_builtin_config, load_scenario
from onduty.sim.driver import RunResult, run_scenario


@dataclass
class DemoRun:
    result: RunResult
    store: str
    events: list[Event]


def read_all(store: str) -> list[Event]:
    log = open_log(store)
    try:
        return list(log.read())
    finally:
        log.close()


@pytest.fixture(scope="package")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    store = f"sqlite:///{Path(tmp_path_factory.mktemp('report-demo')) / 'demo.db'}"
    result = run_scenario(load_scenario("demo"), load_builtin_config("demo"), store)
    return DemoRun(result, store, read_all(store))
