"""A short drill for the tests: a two-service fleet, a crash on `checkout` (which runs at
`approve`: its restart waits for two approvers, the person and the simulated colleague) and a
bad deploy of `payments` that no runbook fixes (escalated: a person acknowledges it and rolls it
back), with people's tokens."""

from __future__ import annotations

from pathlib import Path

from onduty.api.auth import hash_token

PERSON = "dana"
PERSON_TOKEN = "dana-drill-token-5c2e9a1b7d34"
VIEWER_TOKEN = "vera-drill-token-0b8e4c6a2f19"
COLLEAGUE = "sam"

CONFIG = """
store: sqlite:///drill.db
bus: memory
services:
  - {{name: checkout, tier: critical, region: eu-west, autonomy: approve,
      instances: [checkout-1, checkout-2, checkout-3]}}
  - {{name: payments, tier: high, region: eu-west, autonomy: act,
      instances: [payments-1, payments-2, payments-3]}}
correlation:
  group_by: [service, alertname, instance]
  group_wait: 30s
runbooks:
  - name: restart-crashed-instance
    when: signal.labels.alertname == "InstanceDown"
    do:
      - action: process.restart
        target: "{{{{ signal.labels.instance }}}}"
        timeout: 60s
    verify:
      signal_resolved_within: 3m
policy:
  approvals: {{timeout: 10m, notify: [sre-primary], required: 2, roles: [approver]}}
escalation:
  default:
    - {{notify: [sre-primary], wait: 5m}}
access:
  tokens:
    - {{name: {person}, roles: [approver, operator], hash: "{person_hash}"}}
    - {{name: vera, roles: [viewer], hash: "{viewer_hash}"}}
"""

SCENARIO = """
name: short-drill
seed: 3
start: 2026-01-05T09:00:00Z
duration: {duration}
eval_interval: 15s
on_call:
  approve_after: 4m
  acknowledge_after: 6m
  fix_after: 10m
  approvers: [{person}, {colleague}]
faults:
  - {{at: 1m, kind: instance_crash, target: checkout-2}}
  - {{at: 2m, kind: bad_deploy, target: payments}}
"""


def write_drill(folder: Path, duration: str = "1h") -> tuple[Path, Path]:
    """The drill's scenario and config files in `folder`."""
    config = folder / "drill-config.yaml"
    config.write_text(
        CONFIG.format(
            person=PERSON,
            person_hash=hash_token(PERSON_TOKEN),
            viewer_hash=hash_token(VIEWER_TOKEN),
        )
    )
    scenario = folder / "drill.yaml"
    scenario.write_text(SCENARIO.format(duration=duration, person=PERSON, colleague=COLLEAGUE))
    return scenario, config
