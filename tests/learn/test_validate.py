"""`onduty learn validate`: the sim lab's scenarios with and without a model, paired by seed."""

from __future__ import annotations

import json
from pathlib import Path

from onduty.learn import save_model, train
from tests.run_cli import onduty


def test_a_model_that_changes_nothing_for_the_worse_is_validated(tmp_path: Path) -> None:
    artifact = save_model(train([]), tmp_path)
    result = onduty("learn", "validate", str(artifact), "-s", "demo", "--runs", "2", "--jobs", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"validated: {artifact.stem}" in result.stdout
    assert "not worse over 2 seeds" in result.stdout


def test_a_corrupted_model_is_refused_before_anything_runs(tmp_path: Path) -> None:
    artifact = save_model(train([]), tmp_path)
    body = json.loads(artifact.read_text())
    artifact.write_text(json.dumps({**body, "min_evidence": 1}))
    result = onduty("learn", "validate", str(artifact), "--runs", "2")
    assert result.returncode == 2
    assert "hash mismatch" in result.stderr and artifact.name in result.stderr
