"""Similar incidents by sentence embeddings (`similar.method: embeddings`), with the real model
the optional extra ships, loaded offline. Not part of `make test` (it needs PyTorch): run with
`make test-embeddings`, which builds `.venv-embeddings` with the extra."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onduty.readmodel.embeddings import MiniLM
from onduty.readmodel.similar import SimilarIncidents, summarize
from tests.test_similar import client, payments_history, served

pytestmark = pytest.mark.embeddings


@pytest.fixture(scope="module")
def model() -> Iterator[MiniLM]:
    yield MiniLM.load()


def test_a_memory_incident_is_closest_in_meaning_to_the_past_memory_ones(model: MiniLM) -> None:
    history, kinds = payments_history()
    similar = SimilarIncidents(embedder=model, min_score=0.0).feed_all(history.events)
    (query,) = kinds["open"]
    matches = similar.similar_to(query, limit=10)
    found = [match.incident_id for match in matches]
    assert set(found[:3]) == set(kinds["memory"]), [(m.incident_id, m.score) for m in matches]
    assert all(found.index(disk) > 2 for disk in kinds["disk"])
    assert all(-1 <= match.score <= 1.0001 for match in matches)
    assert summarize(matches[:3]) == (
        "3 similar incidents; a deploy.rollback of payments-api fixed 2 of them"
    )
    # the vectors of closed incidents are kept: the same answer again
    assert similar.similar_to(query, limit=10) == matches


def test_the_service_ranks_by_embeddings_when_configured(tmp_path: Path) -> None:
    history, kinds = payments_history()
    running = served(tmp_path / "log.db", history.events, method="embeddings")
    try:
        (query,) = kinds["open"]
        body = client(running).get(f"/api/v1/incidents/{query}/similar").json()
        assert body["method"] == "embeddings"
        assert {item["incident_id"] for item in body["similar"]} == set(kinds["memory"])
        assert body["summary"] == (
            "3 similar incidents; a deploy.rollback of payments-api fixed 2 of them"
        )
    finally:
        assert running.log is not None
        running.log.close()
