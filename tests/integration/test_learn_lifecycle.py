"""The learning model of a running `onduty serve`, through the front door: a model trained with
`onduty learn train`, tried as shadow and promoted with the CLI; a corrupted file refused before
it leaves the machine; `learn train --schedule` handing its model to the server as a shadow
candidate, or activating it when the policy's `learning.auto_promote` says so."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import run_cli
from tests.integration.server import Server
from tests.waiting import wait_for

CONFIG = """
services:
  - {name: web, autonomy: act, instances: [web-1]}
runbooks:
  - name: restart
    when: signal.labels.alertname == "InstanceDown"
    do: [{action: process.restart, target: "{{ signal.labels.instance }}"}]
learning: {agent: shadow, auto_promote: AUTO}
"""


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log with action outcomes to learn from (the built-in demo, in virtual time)."""
    store = tmp_path_factory.mktemp("learn-demo") / "demo.db"
    assert run_cli.onduty("sim", "demo", "--store", str(store)).returncode == 0
    return store


def configured(path: Path, auto_promote: bool) -> Path:
    path.write_text(CONFIG.replace("AUTO", "true" if auto_promote else "false"))
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with Server(tmp_path / "serve.db", config=configured(tmp_path / "onduty.yaml", False)) as it:
        yield it


def learn(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return run_cli.onduty("learn", *args, "--url", url, timeout=60)


def status(server: Server) -> dict[str, Any]:
    with server.client() as client:
        return dict(client.get("/api/v1/learn").json())


def activations(server: Server) -> list[dict[str, Any]]:
    with server.client() as client:
        found = client.get("/api/v1/events", params={"type": "ModelActivated"}).json()
    return [event["data"] for event in found]


def test_a_trained_model_is_tried_as_shadow_then_promoted(
    server: Server, demo_store: Path, tmp_path: Path
) -> None:
    trained = run_cli.onduty(
        "learn", "train", "--store", str(demo_store), "--out", str(tmp_path / "models")
    )
    assert trained.returncode == 0, trained.stderr
    (artifact,) = (tmp_path / "models").glob("model-*.json")
    model_id = artifact.stem

    shadow = learn("shadow", str(artifact), url=server.url)
    assert shadow.returncode == 0, shadow.stderr
    assert f"shadow: {model_id} runs beside the active model" in shadow.stdout
    shown = learn("status", url=server.url)
    assert "active: untrained" in shown.stdout
    assert f"candidate: {model_id} as shadow" in shown.stdout
    brier = json.loads(artifact.read_text())["offline_evaluation"]["brier_score"]
    assert f"Brier score {brier:.3f}" in shown.stdout  # the candidate's offline evaluation

    # a changed copy is refused here, in one line naming the file, and nothing is sent
    tampered = tmp_path / "tampered.json"
    tampered.write_text(artifact.read_text().replace('"examples": 8', '"examples": 80'))
    refused = learn("activate", str(tampered), url=server.url)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert str(tampered) in refused.stderr and "hash mismatch" in refused.stderr

    promoted = learn("promote", url=server.url)
    assert promoted.returncode == 0, promoted.stderr
    now = status(server)
    assert now["active"]["model_id"] == model_id
    assert now["active"]["examples"] == 8
    assert now["active"]["training_window"]["events"] == 230
    assert now["candidate"] is None and now["previous"]["model_id"] == "untrained"
    assert [(found["role"], found["model_id"]) for found in activations(server)] == [
        ("shadow", model_id),
        ("active", model_id),
    ]

    rolled = learn("rollback", url=server.url)
    assert rolled.returncode == 0 and "rolled back: untrained active" in rolled.stdout
    assert status(server)["active"]["model_id"] == "untrained"


def test_scheduled_training_leaves_a_shadow_candidate_or_activates_it(
    server: Server, demo_store: Path, tmp_path: Path
) -> None:
    def once(*more: str) -> subprocess.CompletedProcess[str]:
        return run_cli.onduty(
            "learn", "train", "--once", "--schedule", "1h", "--store", str(demo_store),
            "--window", "30d", "--min-examples", "5", "--out", str(tmp_path / "models"),
            "--server", server.url, *more, timeout=120,
        )  # fmt: skip

    first = once("--validate-scenario", "demo", "--validate-runs", "2")
    assert first.returncode == 0, first.stderr
    assert "validated on demo over 2 seeds: not worse" in first.stdout
    assert "promotion is left to a person" in first.stdout
    candidate = status(server)["candidate"]
    assert candidate["mode"] == "shadow"
    assert str(candidate["source"]).startswith("onduty learn train --schedule")
    assert status(server)["active"]["model_id"] == "untrained"

    # the policy now lets the schedule promote what it validated
    configured(server.config or Path(), True)
    reloaded = run_cli.onduty("policy", "reload", "--url", server.url)
    assert reloaded.returncode == 0, reloaded.stderr
    second = once()
    assert second.returncode == 0, second.stderr
    assert "activated" in second.stdout and "auto_promote is on" in second.stdout
    now = status(server)
    assert now["active"]["model_id"] == candidate["model_id"] and now["candidate"] is None

    # too few outcomes (a shorter window): written, not handed over
    strict = run_cli.onduty(
        "learn", "train", "--once", "--store", str(demo_store), "--window", "2h",
        "--min-examples", "50", "--out", str(tmp_path / "models"), "--server", server.url,
    )  # fmt: skip
    assert strict.returncode == 0, strict.stderr
    assert "not submitted" in strict.stdout and "fewer than --min-examples 50" in strict.stdout
    assert len(activations(server)) == 2


def test_a_schedule_runs_until_sigterm(server: Server, demo_store: Path, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "onduty", "learn", "train", "--schedule", "1h", "--window", "30d",
        "--store", str(demo_store), "--out", str(tmp_path / "models"), "--server", server.url,
        "--min-examples", "5",
    ]  # fmt: skip
    output = tmp_path / "schedule.out"
    with output.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "next round in" in output.read_text(), 30)
        assert status(server)["candidate"] is not None
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert output.read_text().rstrip().endswith("stopped")


def test_the_configured_model_is_activated_at_start_and_on_reload_and_a_bad_one_refused(
    tmp_path: Path, demo_store: Path
) -> None:
    models = tmp_path / "models"
    run_cli.onduty("learn", "train", "--store", str(demo_store), "--out", str(models))
    run_cli.onduty("learn", "train", "--store", str(demo_store), "--out", str(models),
                   "--until", "2026-01-05T12:00:00")  # fmt: skip
    first, second = sorted(models.glob("model-*.json"))
    config = tmp_path / "onduty.yaml"

    def name(model: Path) -> None:
        text = CONFIG.replace("AUTO", "false").replace("agent: shadow", "agent: on")
        config.write_text(text.replace("{agent:", f"{{model: models/{model.name}, agent:"))

    name(first)
    with Server(tmp_path / "serve.db", config=config) as server:
        assert [a["model_id"] for a in activations(server)] == [first.stem]
        name(second)
        reloaded = run_cli.onduty("policy", "reload", "--url", server.url)
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        assert status(server)["active"]["model_id"] == second.stem
        broken = tmp_path / "models" / "broken.json"
        broken.write_text(second.read_text().replace('"min_evidence": 3', '"min_evidence": 1'))
        name(broken)
        refused = run_cli.onduty("policy", "reload", "--url", server.url)
        assert refused.returncode != 0
        assert "learning.model" in refused.stderr and "hash mismatch" in refused.stderr
        assert status(server)["active"]["model_id"] == second.stem  # the running model stays
        assert [a["model_id"] for a in activations(server)] == [first.stem, second.stem]
