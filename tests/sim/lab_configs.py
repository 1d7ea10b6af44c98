"""Configs for the lab's tests: the demo's own, and a deliberately bad runbook (restart on
every alert) with the same services, guardrails and escalation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from onduty.sim import lab
from onduty.sim.scenario import read_builtin

RESTART_ON_EVERY_ALERT: dict[str, Any] = {
    "name": "restart-on-every-alert",
    "when": 'signal.labels.alertname != ""',
    "do": [
        {
            "action": "process.restart",
            # an instance alert restarts its instance; a service alert the service's first
            "target": "{{ signal.labels.get('instance') or (signal.labels.service ~ '-1') }}",
            "timeout": "60s",
        }
    ],
    "verify": {"signal_resolved_within": "3m"},
}


def demo_config(folder: Path) -> Path:
    path = folder / "demo-config.yaml"
    path.write_text(read_builtin("demo-config.yaml"), encoding="utf-8")
    return path


def bad_runbook_config(folder: Path, scenario: str = "demo") -> Path:
    """The config `scenario` runs against, with its runbooks replaced by one that restarts on
    every alert (the same services, guardrails and escalation)."""
    _, config = lab.load_setup(scenario, None)
    document = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    document["runbooks"] = [RESTART_ON_EVERY_ALERT]
    path = folder / f"{Path(scenario).stem}-restart-on-every-alert.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path
