"""Safe mode through the simulated fleet and the real runtime (timers, clock, log): a sender's
clock falls ten minutes behind; onduty stops acting where that sender reports, pages once, and
acts again when the sender's times are right."""

from __future__ import annotations

from pathlib import Path

import yaml

from onduty.events import Event, Origin
from onduty.manager import Manager
from onduty.sim.driver import IN_MEMORY, run_scenario
from onduty.sim.lab import setup

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"

SCENARIO = """\
name: skewed-sender
config: onduty.yaml
seed: 1
duration: 3h
faults:
  - {at: 5m, kind: clock_skew, target: any, duration: 1h, skew: -10m}
  - {at: 10m, kind: instance_crash, target: api-1}
  - {at: 15m, kind: instance_crash, target: api-2}
  - {at: 20m, kind: instance_crash, target: web-3}
  - {at: 80m, kind: instance_crash, target: search-1}
  - {at: 90m, kind: instance_crash, target: search-2}
  - {at: 100m, kind: instance_crash, target: db-1}
  - {at: 150m, kind: instance_crash, target: web-2}
"""


def test_a_skewed_sender_puts_what_it_reports_in_safe_mode_until_its_clock_is_right(
    tmp_path: Path,
) -> None:
    policy = yaml.safe_load((EXAMPLES / "onduty.yaml").read_text(encoding="utf-8"))
    policy["quality"] = {"max_clock_skew": "5m"}
    (tmp_path / "onduty.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    (tmp_path / "skewed.yaml").write_text(SCENARIO, encoding="utf-8")
    scenario, config = setup(str(tmp_path / "skewed.yaml"), None)
    log: list[Event] = []
    run_scenario(scenario, config, IN_MEMORY, on_event=log.append)

    entered = [e for e in log if e.type == "SafeModeEntered"]
    assert entered and {e.data["scope"] for e in entered} == {"clock_skew:sim"}
    assert "10m behind onduty's" in entered[0].data["reason"]
    (exited,) = [e for e in log if e.type == "SafeModeExited"]
    incident = entered[0].data["incident_id"]
    pages = [e for e in log if e.type == "Escalated" and e.data["incident_id"] == incident]
    # One page with the reason (then the tiers as for any incident nobody acknowledged);
    # widening to more services pages nobody again.
    assert [e.data["reason"].startswith("safe mode: ") for e in pages] == [True] + [False] * (
        len(pages) - 1
    )
    assert any(e.type == "Acknowledged" and e.data["incident_id"] == incident for e in log)

    started = {e.data["target"]: e.ts for e in log if e.type == "ActionStarted"}
    denied = [
        e for e in log if e.type == "PolicyEvaluated" and e.data["reason"].startswith("safe-mode")
    ]
    # Before it was judged (three signals) it acted; while in safe mode it did not; after, it did.
    assert "api-1" in started
    assert denied and all(entered[0].ts <= e.ts < exited.ts for e in denied)
    assert not {"api-2", "web-3", "search-1"} & set(started)
    assert started["web-2"] > exited.ts and started["db-1"] > exited.ts

    # Replay: the inputs alone make the same decisions.
    fresh = Manager()
    replayed = [d for e in log if e.origin is Origin.INPUT for d in fresh.handle(e).events]
    decided = [e for e in log if e.origin is Origin.DECISION]
    assert [(e.type, e.data) for e in replayed] == [(e.type, e.data) for e in decided]
