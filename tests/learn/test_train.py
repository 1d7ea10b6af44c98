"""Training the learner's model from a simulated run's log, the artifact and `onduty learn`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onduty.learn import ModelProblem, examples, load_model, save_model, train
from onduty.log import open_log
from onduty.think.learner import Mode, Outcome, Ranker
from tests.run_cli import onduty

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("learn") / "demo.db"
    assert onduty("sim", "demo", "--store", str(store)).returncode == 0
    return store


def test_every_started_action_of_the_demo_becomes_an_example(demo_store: Path) -> None:
    events = list(open_log(str(demo_store)).read())
    found = examples(events)
    started = [e.data["command_id"] for e in events if e.type == "ActionStarted"]
    assert sorted(e.command_id for e in found) == sorted(started)
    assert {example.outcome for example in found} == {Outcome.VERIFIED, Outcome.RECURRED}
    # the demo's crash-looping instance: each restart verified, and it crashed again within the
    # hour, so none of them fixed the cause
    recurred = [e for e in found if e.outcome is Outcome.RECURRED]
    assert {(e.action, e.target) for e in recurred} == {("process.restart", "search-2")}
    crashed = next(e for e in found if e.action == "process.restart")
    assert crashed.features.alertname == "InstanceDown"
    assert crashed.features.service


def test_a_failed_verification_is_a_failure(tmp_path: Path) -> None:
    store = tmp_path / "silent.db"
    onduty("sim", str(EXAMPLES / "actuator_silent_failure.yaml"), "--store", str(store))
    found = examples(open_log(str(store)).read())
    assert [e.outcome for e in found] == [Outcome.VERIFY_FAILED]
    model = train(open_log(str(store)).read())
    ranked = Ranker(model.posterior, Mode.UCB).rank(found[0].features, [found[0].action], 0)
    assert ranked[0].rationale.startswith(f"{found[0].action} verified 0 of 1 time for ")


def test_the_same_log_gives_the_same_artifact_and_it_round_trips(
    demo_store: Path, tmp_path: Path
) -> None:
    model = train(open_log(str(demo_store)).read())
    assert model.model_id == train(open_log(str(demo_store)).read()).model_id
    path = save_model(model, tmp_path)
    assert path.name == f"{model.model_id}.json"
    loaded = load_model(path)
    assert loaded.posterior.table == model.posterior.table
    body = json.loads(path.read_text())
    assert body["feature_schema"]["version"] == "incident-features/1"
    assert body["training_window"]["first_seq"] == 1
    assert body["examples"] == 8
    evaluation = body["offline_evaluation"]
    assert evaluation["held_out_examples"] == 2
    assert 0 <= evaluation["brier_score"] <= evaluation["prior_brier_score"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda text: text[:-5], "bad JSON"),
        (
            lambda text: text.replace('"schema_version": 1', '"schema_version": 9'),
            "schema_version 9",
        ),
        (lambda text: text.replace('"successes": 1', '"successes": 7', 1), "hash mismatch"),
        (lambda text: text.replace('"examples":', '"samples":'), "missing field examples"),
        (
            lambda text: text.replace('"incident-features/1"', '"incident-features/0"'),
            "feature_schema version",
        ),
    ],
)
def test_a_corrupted_or_incompatible_artifact_is_refused(
    demo_store: Path, tmp_path: Path, change: object, problem: str
) -> None:
    path = save_model(train(open_log(str(demo_store)).read()), tmp_path)
    path.write_text(change(path.read_text()))  # type: ignore[operator]
    with pytest.raises(ModelProblem, match=problem) as refused:
        load_model(path)
    assert str(path) in str(refused.value)


def test_learn_train_writes_the_artifact_and_leaves_the_store_alone(
    demo_store: Path, tmp_path: Path
) -> None:
    before = demo_store.read_bytes()
    result = onduty("learn", "train", "--store", str(demo_store), "--out", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert "learned from 8 action outcomes" in result.stdout
    assert "Brier score" in result.stdout
    written = list((tmp_path / "m").glob("model-*.json"))
    assert len(written) == 1 and written[0].name in result.stdout.replace("\n", "")
    assert load_model(written[0]).body["examples"] == 8
    assert demo_store.read_bytes() == before


def test_learn_train_with_a_window_learns_from_fewer_outcomes(
    demo_store: Path, tmp_path: Path
) -> None:
    result = onduty(
        "learn", "train", "--store", str(demo_store), "--out", str(tmp_path),
        "--since", "2026-01-05T09:30:00",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "learned from 7 action outcomes" in result.stdout


def test_learn_train_refuses_a_missing_store_in_one_line(tmp_path: Path) -> None:
    result = onduty("learn", "train", "--store", str(tmp_path / "nope.db"), "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no event log" in result.stderr
    assert not (tmp_path / "nope.db").exists()
