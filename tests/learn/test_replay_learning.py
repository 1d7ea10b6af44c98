"""A log the learning agent decided in replays exactly (`onduty replay`), and backtesting it
without the agent shows where the runbook order would have chosen otherwise."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from onduty.log import open_log
from onduty.obs import Metrics
from tests.run_cli import onduty

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
LEAKS = """\
name: leaks-and-releases
config: learning.yaml
seed: 3
duration: 1d
faults:
  - {kind: memory_leak, count: 3, between: [10m, 10h], target: {service: api}}
  - {kind: deploy_leak, at: 14h, target: api}
"""


def with_rollback_runbook(learning: dict[str, object] | None) -> dict[str, object]:
    config = yaml.safe_load((EXAMPLES / "onduty.yaml").read_text())
    config["runbooks"].append(
        {
            "name": "rollback-leaking-release",
            "when": 'signal.labels.alertname == "HighMemoryUsage"',
            "do": [{"action": "deploy.rollback", "target": "{{ signal.labels.service }}"}],
            "verify": {"signal_resolved_within": "4m"},
        }
    )
    if learning is not None:
        config["learning"] = learning
    return config


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("replay-learning")
    (folder / "learning.yaml").write_text(yaml.safe_dump(with_rollback_runbook({"agent": "on"})))
    (folder / "runbooks.yaml").write_text(yaml.safe_dump(with_rollback_runbook(None)))
    (folder / "scenario.yaml").write_text(LEAKS)
    store = folder / "run.db"
    onduty("sim", str(folder / "scenario.yaml"), "--store", str(store))
    return store


def test_a_log_the_learning_agent_decided_in_replays_exactly(learned_run: Path) -> None:
    proposed = [e.data for e in open_log(str(learned_run)).read() if e.type == "ActionProposed"]
    assert any(p["agent"] == "learner" for p in proposed)
    assert all(p["model"] == "untrained" for p in proposed)
    result = onduty("replay", "--store", str(learned_run))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reproduced exactly" in result.stdout


def test_backtesting_without_the_agent_shows_the_runbook_order_choosing(
    learned_run: Path,
) -> None:
    result = onduty(
        "replay", "--store", str(learned_run), "-c", str(learned_run.parent / "runbooks.yaml")
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "(by the learner agent)" in result.stdout


def test_metrics_count_the_learning_agents_proposals(learned_run: Path) -> None:
    events = list(open_log(str(learned_run)).read())
    metrics = Metrics()
    for event in events:
        metrics.observe(event)
    text = generate_latest(metrics.registry).decode()
    found = {
        (sample.name, sample.labels.get("agent")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "onduty_proposals_total"
    }
    by_agent = Counter(e.data["agent"] for e in events if e.type == "ActionProposed")
    assert by_agent["learner"] > 0
    for agent, count in by_agent.items():
        assert found[("onduty_proposals_total", agent)] == count
