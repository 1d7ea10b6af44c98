"""Fixtures shared across the test folders."""

from __future__ import annotations

import pytest

from tests.postgres import require_server


@pytest.fixture(scope="session")
def postgres_server() -> None:
    """The real PostgreSQL answers (else the test fails): `pytestmark = pytest.mark.usefixtures
    ("postgres_server")` in a module that needs it."""
    require_server()
