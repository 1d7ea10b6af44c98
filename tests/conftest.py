"""Fixtures shared across the test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.llm_server import LlmServer, serve
from tests.postgres import Schemas, require_server


@pytest.fixture(scope="session")
def postgres_server() -> None:
    """The real PostgreSQL answers (else the test fails): `pytestmark = pytest.mark.usefixtures
    ("postgres_server")` in a module that needs it."""
    require_server()


@pytest.fixture
def schemas() -> Iterator[Schemas]:
    """Schemas of the real PostgreSQL named after the test's folders, dropped afterwards."""
    made = Schemas()
    yield made
    made.drop()


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmServer]:
    """A real small language model (SmolLM2-135M-Instruct) behind llama-cpp-python's
    OpenAI-compatible server on a free port, one per test process, started on first use and
    stopped at the end of the session. `llm_server.base_url` ends in /v1; `llm_server.model`
    is the model id to send. See tests/integration/llm_server.py for the response_format shape
    it accepts. Fails (never skips) when the model or server is not installed."""
    with serve(tmp_path_factory.mktemp("llm-server") / "server.log") as server:
        yield server
