"""`/api/v1/learn`: a model tried beside the active one (shadow, canary), promoted, rolled back,
activated directly; a corrupted or incompatible artifact is refused naming what is wrong, and
the running model stays."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient

from onduty.api import build_app
from onduty.api.auth import LOCAL
from onduty.config import parse_config
from onduty.events import ModelDriftDetected, ModelShadowDiverged, make_event
from onduty.learn import train
from onduty.readmodel.learning import LearningView
from onduty.readmodel.models import ReadModels, from_state, state_of
from onduty.service import Service
from onduty.think.learner import Prior

POST = {"Content-Type": "application/json"}


def artifact(alpha: float = 1.0) -> dict[str, Any]:
    """A valid model artifact (from an empty log: the prior alone, named by its hash)."""
    return train([], prior=Prior(alpha, 1.0)).body


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[TestClient, Service]]:
    config = parse_config(
        {"services": [{"name": "web", "instances": ["web-1"]}], "learning": {"agent": "shadow"}},
        "test",
    )
    service = Service(config, str(tmp_path / "learn.db"))
    with TestClient(build_app(service), base_url="http://127.0.0.1") as client:
        yield client, service


def status(client: TestClient) -> dict[str, Any]:
    answer = client.get("/api/v1/learn")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def activations(client: TestClient) -> list[dict[str, Any]]:
    events = client.get("/api/v1/events", params={"type": "ModelActivated"}).json()
    return [event["data"] | {"actor": event["actor"]} for event in events]


def core_model(service: Service) -> str | None:
    """The active model's id as the core holds it (None: the prior alone)."""
    assert service.runtime is not None
    memory = service.runtime.manager.state.learning
    return None if memory is None or memory.model is None else str(memory.model["model_id"])


def test_shadow_promote_and_roll_back_through_the_api(
    running: tuple[TestClient, Service],
) -> None:
    client, service = running
    first = status(client)
    assert first["agent"] == "shadow" and first["auto_promote"] is False
    assert first["active"]["model_id"] == "untrained" and first["candidate"] is None
    assert first["can_roll_back"] is False
    model = artifact()

    tried = client.post(
        "/api/v1/learn/candidate", json={"model": model, "mode": "shadow", "source": "m.json"}
    )
    assert tried.status_code == 202, tried.text
    now = status(client)
    assert now["active"]["model_id"] == "untrained"
    candidate = now["candidate"]
    assert candidate["model_id"] == model["model_id"] and candidate["mode"] == "shadow"
    assert candidate["source"] == "m.json"
    assert candidate["training_window"] == model["training_window"]
    assert candidate["offline_evaluation"] == model["offline_evaluation"]
    assert core_model(service) is None  # a shadow ranks beside, never decides

    assert client.post("/api/v1/learn/promote", headers=POST).status_code == 202
    now = status(client)
    assert now["active"]["model_id"] == model["model_id"] and now["candidate"] is None
    assert now["previous"]["model_id"] == "untrained"
    assert now["active"]["source"].startswith("promoted")
    assert core_model(service) == model["model_id"]

    # without a candidate, a rollback goes back to the model before: the prior alone
    assert client.post("/api/v1/learn/rollback", headers=POST).json()["model_id"] == "untrained"
    assert status(client)["active"]["model_id"] == "untrained"
    assert core_model(service) is None
    # and once more, back to the model rolled back from
    assert client.post("/api/v1/learn/rollback", headers=POST).status_code == 202
    assert status(client)["active"]["model_id"] == model["model_id"]

    roles = [(found["role"], found["model_id"]) for found in activations(client)]
    assert roles == [
        ("shadow", model["model_id"]),
        ("active", model["model_id"]),
        ("active", "untrained"),
        ("active", model["model_id"]),
    ]
    assert {found["actor"] for found in activations(client)} == {LOCAL.name}  # who asked


def test_a_canary_a_direct_activation_and_what_is_refused_as_a_conflict(
    running: tuple[TestClient, Service],
) -> None:
    client, service = running
    assert client.post("/api/v1/learn/promote", headers=POST).status_code == 409
    refused = client.post("/api/v1/learn/rollback", headers=POST)
    assert refused.status_code == 409 and "no candidate" in refused.json()["error"]

    canary = {"model": artifact(2.0), "mode": "canary", "selector": 'service.name == "web"'}
    assert client.post("/api/v1/learn/candidate", json=canary).status_code == 202
    candidate = status(client)["candidate"]
    assert candidate["mode"] == "canary" and candidate["selector"] == 'service.name == "web"'
    again = client.post("/api/v1/learn/candidate", json=canary)
    assert again.status_code == 200 and again.json()["changed"] is False
    bad = client.post("/api/v1/learn/candidate", json={**canary, "selector": "service.name =="})
    assert bad.status_code == 422 and bad.json()["field"] == "selector"
    # a rollback with a candidate drops it, and only it
    assert client.post("/api/v1/learn/rollback", headers=POST).json()["role"] == "withdrawn"
    assert status(client)["candidate"] is None

    model = artifact(3.0)
    activated = client.post("/api/v1/learn/activate", json={"model": model, "source": "cron"})
    assert activated.status_code == 202 and activated.json()["role"] == "active"
    assert (
        status(client)["active"] | {"model_id": model["model_id"], "source": "cron"}
        == (status(client)["active"])
    )
    assert core_model(service) == model["model_id"]
    same = client.post("/api/v1/learn/activate", json={"model": model})
    assert same.status_code == 200 and same.json()["changed"] is False
    as_candidate = client.post("/api/v1/learn/candidate", json={"model": model})
    assert as_candidate.status_code == 409 and "active model already" in as_candidate.text


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], Any]:
    def change(body: dict[str, Any]) -> Any:
        place = body
        for key in path[:-1]:
            place = place[key]
        place[path[-1]] = value
        return body

    return change


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_set(("examples",), 99), "hash mismatch"),
        (_set(("offline_evaluation", "brier_score"), 0.0), "hash mismatch"),
        (
            lambda body: {k: v for k, v in body.items() if k != "posterior"},
            "missing field posterior",
        ),
        (_set(("feature_schema", "version"), "incident-features/0"), "feature_schema version"),
        (_set(("schema_version",), 9), "schema_version 9 is not supported"),
        (lambda body: "model-0123.json", "a JSON object is expected"),
    ],
    ids=["tampered", "tampered-evaluation", "missing", "feature-schema", "schema", "not-object"],
)
@pytest.mark.parametrize("route", ["candidate", "activate"])
def test_a_corrupted_or_incompatible_model_is_refused_and_the_running_one_stays(
    running: tuple[TestClient, Service],
    change: Callable[[dict[str, Any]], Any],
    problem: str,
    route: str,
) -> None:
    client, service = running
    model = artifact()
    assert client.post("/api/v1/learn/activate", json={"model": model}).status_code == 202
    before, recorded = status(client), activations(client)

    refused = client.post(f"/api/v1/learn/{route}", json={"model": change(copy.deepcopy(model))})
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "model"
    assert refused.json()["error"].startswith("model: ") and problem in refused.json()["error"]
    assert status(client) == before and activations(client) == recorded
    assert core_model(service) == model["model_id"]


def test_a_body_that_is_not_json_is_refused(running: tuple[TestClient, Service]) -> None:
    client, _ = running
    refused = client.post("/api/v1/learn/candidate", content=b'{"model": {', headers=POST)
    assert refused.status_code == 422 and "JSON" in refused.text
    unknown = client.post("/api/v1/learn/activate", json={"model": artifact(), "role": "x"})
    assert unknown.status_code == 422 and "role" in unknown.text
    assert status(client)["active"]["model_id"] == "untrained" and activations(client) == []


def test_the_status_lists_drift_since_the_last_activation_and_divergences() -> None:
    view = LearningView()
    at = datetime(2026, 1, 5, 9, tzinfo=UTC)
    seq = iter(range(1, 100))

    def feed(body: Any, actor: str = "onduty") -> None:
        event = make_event(body, id=f"e{next(seq)}", ts=at, stream="learning", actor=actor)
        view.feed(event.model_copy(update={"seq": 1}))

    from onduty.events import ModelActivated

    model = artifact()
    feed(ModelActivated(model_id=model["model_id"], model=model, source="f"), actor="ann")
    feed(ModelActivated(model_id="model-c", model={"model_id": "model-c"}, role="shadow"))
    for _ in range(3):
        feed(_diverged("model-c", "shadow"))
    feed(_diverged(model["model_id"], "canary"))
    feed(
        ModelDriftDetected(
            model_id=model["model_id"], service="web", check="features",
            detail="the mix drifted; retrain the model", value=0.4, limit=0.25,
        )
    )  # fmt: skip
    found = view.status()
    assert found["active"]["activated_by"] == "ann"
    assert found["candidate"]["divergences"] == {"shadow": 3, "canary": 0}
    assert found["active"]["divergences"] == {"shadow": 0, "canary": 1}
    assert [(d["service"], d["check"], d["detail"]) for d in found["drift"]] == [
        ("web", "features", "the mix drifted; retrain the model")
    ]
    # what a snapshot of the read models holds comes back the same
    models = ReadModels()
    models.learning = view
    assert from_state(state_of(models))[-1] == view
    # a newly activated model is judged afresh: no drift listed
    other = artifact(2.0)
    feed(ModelActivated(model_id=other["model_id"], model=other))
    assert view.status()["drift"] == []
    assert view.status()["previous"]["model_id"] == model["model_id"]


def _diverged(model_id: str, mode: Literal["shadow", "canary"]) -> ModelShadowDiverged:
    return ModelShadowDiverged(
        incident_id="inc-1", mode=mode, model_id=model_id, enforced_action="a",
        enforced_target="t", model_action="b", model_target="t", rationale="r",
    )  # fmt: skip
