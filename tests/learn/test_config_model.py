"""A configuration names the model the learning agent starts from (`learning.model`): a usable
artifact is made active once, as the log records (`ModelActivated`); a corrupted or incompatible
one refuses the configuration, naming the field and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from onduty.config import ConfigError
from onduty.configfile import load_config
from onduty.learn import save_model, train
from onduty.log import open_log
from tests.learn.test_replay_learning import with_rollback_runbook
from tests.run_cli import onduty

SCENARIO = """\
name: one-leak
config: learning.yaml
seed: 2
duration: 90m
faults:
  - {kind: memory_leak, at: 5m, target: api-2}
"""


def write_config(folder: Path, model: str) -> Path:
    path = folder / "learning.yaml"
    config = with_rollback_runbook({"agent": "on", "model": model})
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    return save_model(train([]), models)


def test_the_named_model_is_resolved_against_the_file_and_kept_out_of_the_version(
    tmp_path: Path, artifact: Path
) -> None:
    path = write_config(tmp_path, f"models/{artifact.name}")
    config = load_config(path)
    assert config.learning.model == str(artifact.resolve())
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "models").mkdir()
    (other / "models" / artifact.name).write_bytes(artifact.read_bytes())
    moved = load_config(write_config(other, f"models/{artifact.name}"))
    assert moved.version == config.version  # the model is versioned by its own hash
    assert "model" not in config.policy_document()["learning"]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda body: {**body, "examples": 99}, "hash mismatch"),
        (
            lambda body: {**body, "feature_schema": {"version": "incident-features/0"}},
            "feature_schema version 'incident-features/0'",
        ),
        (lambda body: {k: v for k, v in body.items() if k != "posterior"}, "missing field"),
    ],
)
def test_a_corrupted_or_incompatible_model_refuses_the_configuration(
    tmp_path: Path, artifact: Path, damage: object, problem: str
) -> None:
    body = json.loads(artifact.read_text())
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(damage(body)))  # type: ignore[operator]
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, "broken.json"))
    (line,) = refused.value.problems
    assert line.startswith("learning.model: ") and problem in line


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, "nowhere.json"))
    assert "learning.model" in refused.value.problems[0]
    assert "nowhere.json: cannot read" in refused.value.problems[0]


def test_a_run_starts_from_the_named_model_once(tmp_path: Path, artifact: Path) -> None:
    write_config(tmp_path, f"models/{artifact.name}")
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    store = tmp_path / "run.db"
    onduty("sim", str(tmp_path / "scenario.yaml"), "--store", str(store))
    events = list(open_log(str(store)).read())
    activated = [e.data for e in events if e.type == "ModelActivated"]
    assert [a["model_id"] for a in activated] == [artifact.stem]
    assert activated[0]["role"] == "active" and activated[0]["model"]["posterior"] == []
    proposed = [e.data for e in events if e.type == "ActionProposed"]
    assert proposed and all(p["model"] == artifact.stem for p in proposed)
