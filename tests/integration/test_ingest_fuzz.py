"""Random and truncated bodies at every ingest route: never a 500, never a crash."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.server import Server
from tests.integration.test_serve import alertmanager, native

ROUTES = {
    "/api/v1/signals": "application/json",
    "/api/v1/signals/alertmanager": "application/json",
    "/api/v1/signals/pagerduty": "application/json",
    "/api/v1/signals/cloudevents": "application/cloudevents+json",
}
VALID = [
    json.dumps(native("fuzz-1")).encode(),
    json.dumps(alertmanager([("fuzz-2", "firing"), ("fuzz-3", "resolved")])).encode(),
    json.dumps(
        {
            "routing_key": "k",
            "event_action": "trigger",
            "payload": {"summary": "s", "source": "fuzz-4", "severity": "error"},
        }
    ).encode(),
    json.dumps(
        {"specversion": "1.0", "id": "1", "source": "/f", "type": "t", "data": {"status": "firing"}}
    ).encode(),
]
ALLOWED = {202, 400, 413, 415, 422, 429, 503}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.tuples(st.sampled_from(VALID), st.integers(0, 2000)).map(lambda pair: pair[0][: pair[1]]),
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    store: Path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    with Server(store) as server, server.client() as http:
        yield http
        assert server.process is not None and server.process.poll() is None, "the server crashed"


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from(sorted(ROUTES)), body=bodies)
def test_random_bodies_never_cause_a_500(client: httpx.Client, route: str, body: bytes) -> None:
    response = client.post(route, content=body, headers={"Content-Type": ROUTES[route]})
    assert response.status_code in ALLOWED, (response.status_code, response.text)
    if response.status_code != 202:
        assert "error" in response.json()
