"""Fixtures shared across the test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
